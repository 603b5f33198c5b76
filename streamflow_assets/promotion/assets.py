"""Registry: the promotion decision that makes a month's candidate the champion, or keeps it out
(the latest rival kept out becomes the `challenger`, which the API can score in shadow)."""

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, Config, MaterializeResult, asset

from streamflow.adapters.registry import CHALLENGER_ALIAS, CHAMPION_ALIAS, Registry, as_of_of
from streamflow.domain import months
from streamflow.domain.features import LABEL
from streamflow.domain.promotion import Challenger, Contender, challenger_after, decide
from streamflow.domain.training import (
    ModelParams,
    month_labels,
    one_thread,
    score_rows,
    split,
)
from streamflow_assets.features.assets import TRAINING_TABLE
from streamflow_assets.partitions import monthly_partitions
from streamflow_assets.resources import (
    LimitsResource,
    ModelRegistryResource,
    PolicyResource,
    SnapshotsResource,
)
from streamflow_assets.training.assets import churn_model

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

# One slot (the instance's pool default_limit): two runs of a backfill never decide at once, so
# an older month cannot move the champion back after a newer month's promotion it did not see.
PROMOTION_POOL = "mlflow_promotion"


class PromotionConfig(Config):
    """How much AUC a candidate must gain over the champion; defaults to the setting."""

    margin: float | None = None


def _scorer(registry: Registry, version: "ModelVersion") -> Callable[[pd.DataFrame], np.ndarray]:
    """The version's logged Pipeline (pyfunc), as the churn probability of model-frame rows."""
    # MLflow and scikit-learn are imported by the step: the code location loads without them.
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(f"models:/{registry.name}/{version.version}")

    def probability(x: pd.DataFrame) -> np.ndarray:
        with one_thread():
            return np.asarray(model.predict(x))[:, 1]

    return probability


def _auc(y: np.ndarray, probability: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, probability)) if len(set(y)) == 2 else math.nan


@asset(
    group_name="registry",
    kinds={"mlflow"},
    partitions_def=monthly_partitions,
    deps=[churn_model],
    pool=PROMOTION_POOL,
)
def production_model(
    context: AssetExecutionContext,
    config: PromotionConfig,
    snapshots: SnapshotsResource,
    model_registry: ModelRegistryResource,
    limits: LimitsResource,
    policy: PolicyResource,
) -> MaterializeResult:
    """Which `streamflow_churn` version serves: the month's candidate if it beats the champion."""
    key = context.partition_key
    margin = config.margin if config.margin is not None else policy.promotion_margin
    registry = model_registry.registry()
    candidate = registry.latest_for_partition(key)
    if candidate is None:
        raise ValueError(f"no {registry.name} version is tagged partition={key}: run churn_model")
    champion = registry.champion()

    # Both are judged on the candidate month's held-out rows, re-drawn exactly as in training
    # (the fit's sample cap leaves them whole) and scored as the month streams by.
    store, as_of = snapshots.store(), months.as_of(key)
    trained_with = registry.client.get_run(candidate.run_id).data.params
    params = ModelParams(
        validation_size=float(trained_with["validation_size"]),
        random_state=int(trained_with["random_state"]),
    )
    labels = month_labels(store.read_batches(TRAINING_TABLE, as_of, limits.chunk_rows, [LABEL]))
    held_out = split(labels, params).val
    judged = [candidate] if champion is None else [candidate, champion]
    y_val, scores = score_rows(
        store.read_batches(TRAINING_TABLE, as_of, limits.chunk_rows),
        held_out,
        [_scorer(registry, version) for version in judged],
    )
    contender = Contender(candidate.version, as_of_of(candidate), _auc(y_val, scores[0]))
    incumbent = None
    if champion is not None:
        incumbent = Contender(champion.version, as_of_of(champion), _auc(y_val, scores[1]))
    decision = decide(contender, incumbent, margin)
    if decision.promote:
        registry.promote(candidate.version)
    rival = registry.challenger()
    challenger = challenger_after(
        decision,
        contender,
        incumbent,
        Challenger(rival.version, as_of_of(rival)) if rival is not None else None,
    )
    registry.set_challenger(challenger.version if challenger is not None else None)
    registry.tag(
        candidate.version,
        {
            "promotion_decision": "promoted" if decision.promote else "kept_out",
            "promotion_reason": decision.reason,
            "promotion_margin": margin,
            "candidate_auc_on_split": round(contender.auc, 6),
            "champion_version": incumbent.version if incumbent else "none",
            "champion_auc_on_split": round(incumbent.auc, 6) if incumbent else "none",
        },
    )
    serving = registry.champion()
    context.log.info(f"v{candidate.version}: {decision.reason}")
    return MaterializeResult(
        metadata={
            "decision": "promoted" if decision.promote else "kept out",
            "reason": decision.reason,
            "candidate_version": candidate.version,
            "candidate_auc": round(contender.auc, 4),
            "champion_version": incumbent.version if incumbent else "none",
            "champion_auc": round(incumbent.auc, 4) if incumbent else float("nan"),
            "margin": margin,
            "champion_after": serving.version if serving else "none",
            "champion_uri": f"models:/{registry.name}@{CHAMPION_ALIAS}",
            "challenger_after": challenger.version if challenger is not None else "none",
            "challenger_uri": f"models:/{registry.name}@{CHALLENGER_ALIAS}",
        }
    )
