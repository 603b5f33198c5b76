"""Registry: the promotion decision that makes a month's candidate the champion, or keeps it out."""

import math

import mlflow
import numpy as np
from dagster import AssetExecutionContext, Config, MaterializeResult, asset
from mlflow.entities.model_registry import ModelVersion
from sklearn.metrics import roc_auc_score

from streamflow_assets.assets.features import TRAINING_TABLE
from streamflow_assets.assets.training import churn_model
from streamflow_assets.core import months
from streamflow_assets.core.promotion import Contender, decide
from streamflow_assets.core.registry import CHAMPION_ALIAS, Registry, as_of_of
from streamflow_assets.core.settings import get_settings
from streamflow_assets.core.training import ModelParams, one_thread, split
from streamflow_assets.freshness import monthly_freshness_policy
from streamflow_assets.partitions import monthly_partitions
from streamflow_assets.resources import ModelRegistryResource, SnapshotsResource

# One slot (the instance's pool default_limit): two runs of a backfill never decide at once, so
# an older month cannot move the champion back after a newer month's promotion it did not see.
PROMOTION_POOL = "mlflow_promotion"


class PromotionConfig(Config):
    """How much AUC a candidate must gain over the champion; defaults to the setting."""

    margin: float | None = None


def _auc_on(registry: Registry, version: ModelVersion, x_val, y_val) -> float:
    model = mlflow.pyfunc.load_model(f"models:/{registry.name}/{version.version}")
    with one_thread():
        probability = np.asarray(model.predict(x_val))[:, 1]
    return float(roc_auc_score(y_val, probability)) if len(set(y_val)) == 2 else math.nan


@asset(
    group_name="registry",
    kinds={"mlflow"},
    partitions_def=monthly_partitions,
    deps=[churn_model],
    freshness_policy=monthly_freshness_policy(),
    pool=PROMOTION_POOL,
)
def production_model(
    context: AssetExecutionContext,
    config: PromotionConfig,
    snapshots: SnapshotsResource,
    model_registry: ModelRegistryResource,
) -> MaterializeResult:
    """Which `streamflow_churn` version serves: the month's candidate if it beats the champion."""
    key = context.partition_key
    margin = config.margin if config.margin is not None else get_settings().promotion_margin
    registry = model_registry.registry()
    candidate = registry.latest_for_partition(key)
    if candidate is None:
        raise ValueError(f"no {registry.name} version is tagged partition={key}: run churn_model")
    champion = registry.champion()

    # Both are judged on the candidate month's held-out rows, re-drawn exactly as in training.
    dataset = snapshots.store().read(TRAINING_TABLE, months.as_of(key)).drop(columns=["as_of"])
    trained_with = registry.client.get_run(candidate.run_id).data.params
    params = ModelParams(
        validation_size=float(trained_with["validation_size"]),
        random_state=int(trained_with["random_state"]),
    )
    held_out = split(dataset, params)
    contender = Contender(
        candidate.version,
        as_of_of(candidate),
        _auc_on(registry, candidate, held_out.x_val, held_out.y_val),
    )
    incumbent = None
    if champion is not None:
        incumbent = Contender(
            champion.version,
            as_of_of(champion),
            _auc_on(registry, champion, held_out.x_val, held_out.y_val),
        )
    decision = decide(contender, incumbent, margin)
    if decision.promote:
        registry.promote(candidate.version)
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
        }
    )
