"""Training: a churn model per month, logged to MLflow and registered as a new version."""

import contextlib
import io
import tempfile
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MetadataValue,
    ResourceParam,
    asset,
    asset_check,
)

from streamflow.adapters.onnx_model import ONNX_FILE, CompiledModel
from streamflow.adapters.registry import MODEL_NAME
from streamflow.domain import months
from streamflow.domain.features import (
    FEATURE_SERVICE,
    FEATURES,
    JOIN_KEY,
    LABEL,
    to_model_frame,
)
from streamflow.domain.training import (
    ModelParams,
    confusion_counts,
    confusion_matrix_png,
    labels_and_hash,
    one_thread,
    roc_curve_png,
    roc_curve_svg,
    take,
    train,
)
from streamflow_assets.features.assets import LABELS_TABLE, TRAINING_TABLE, training_dataset
from streamflow_assets.partitions import monthly_partitions
from streamflow_assets.resources import (
    FeatureStoreResource,
    LimitsResource,
    ModelRegistryResource,
    PolicyResource,
    SnapshotsResource,
)
from streamflow_assets.resources.mlflow import end_mlflow_run_on_failure

# What loading the logged Pipeline needs, pinned to the versions that trained it.
MODEL_REQUIREMENTS = [
    f"{package}=={version(package)}"
    for package in ("mlflow", "scikit-learn", "skops", "numpy", "pandas", "scipy")
]

# Users scored by the pre-promotion check: enough for a stable AUC, quick to read online.
CHECK_SAMPLE = 1000


class ChurnModelConfig(Config):
    """Hyperparameters of the model; override them at launch in the Dagster UI."""

    learning_rate: float = ModelParams.learning_rate
    max_iter: int = ModelParams.max_iter
    max_leaf_nodes: int = ModelParams.max_leaf_nodes
    min_samples_leaf: int = ModelParams.min_samples_leaf
    l2_regularization: float = ModelParams.l2_regularization
    class_weight: str | None = ModelParams.class_weight
    random_state: int = ModelParams.random_state
    validation_size: float = ModelParams.validation_size


# Left as they are in an SVG data URL; the rest (<, >, #, spaces) percent-encoded.
SVG_URL_SAFE = "/:=',.-"


def _inline_svg(svg: str, title: str) -> str:
    """Markdown showing `svg` as an image; characters a data URL cannot hold are escaped."""
    return f"![{title}](data:image/svg+xml,{quote(svg, safe=SVG_URL_SAFE)})"


def _confusion_table(counts: np.ndarray) -> str:
    """The confusion matrix as a markdown table, which the Dagster UI shows inline."""
    (kept, flagged), (missed, caught) = counts
    return (
        "| actual / predicted | stays | churns |\n|---|---:|---:|\n"
        f"| stays | {kept} | {flagged} |\n| churns | {missed} | {caught} |"
    )


def _feature_schema() -> dict:
    return {
        "feature_service": FEATURE_SERVICE,
        "features": [
            {"name": f.name, "view": f.view, "dtype": f.dtype, "categorical": f.categorical}
            for f in FEATURES
        ],
    }


@asset(
    group_name="training",
    kinds={"mlflow", "scikitlearn"},
    partitions_def=monthly_partitions,
    deps=[training_dataset],
    hooks={end_mlflow_run_on_failure},
)
def churn_model(
    context: AssetExecutionContext,
    config: ChurnModelConfig,
    snapshots: SnapshotsResource,
    limits: LimitsResource,
    # dagster-mlflow's MlFlow, the mlflow API inside the run it opened for us: not named, as
    # naming it imports MLflow wherever the definitions load.
    mlflow: ResourceParam[Any],
) -> MaterializeResult:
    """A churn classifier trained on the month, registered as a new `streamflow_churn` version."""
    key = context.partition_key
    as_of = months.as_of(key)
    store = snapshots.store()

    def chunks() -> Iterator[pd.DataFrame]:
        return store.read_batches(TRAINING_TABLE, as_of, limits.chunk_rows)

    labels, dataset_hash = labels_and_hash(chunks())
    params = ModelParams(**config.model_dump())
    trained = train(chunks, labels, params, limits.train_max_rows, load_compiled=CompiledModel)
    sample = trained.split
    if sample.capped:
        context.log.info(
            f"fit on a stratified sample of {len(sample.train):,} of {sample.train_rows:,} "
            f"training rows (STREAMFLOW_TRAIN_MAX_ROWS={limits.train_max_rows:,})"
        )
    # Imported here: skops takes seconds to load, and only this step needs it (MLflow too,
    # which the code location's processes would otherwise hold idle).
    import skops.io
    from mlflow.models import infer_signature

    run_id = mlflow.active_run().info.run_id
    sample_facts = {
        "rows": len(labels),
        "train_rows": sample.train_rows,
        "train_sample_rows": len(sample.train),
        "train_max_rows": limits.train_max_rows,
        "val_rows": len(sample.val),
    }
    mlflow.log_params(params.as_dict() | {"partition": key} | sample_facts)
    mlflow.log_metrics(trained.metrics)
    mlflow.log_dict(_feature_schema(), "feature_schema.json")
    y_val, probability = trained.y_val, trained.val_probability
    roc = roc_curve_png(y_val, probability, f"ROC {key}")
    confusion = confusion_matrix_png(y_val, probability, f"Confusion {key}")
    example = trained.example
    with tempfile.TemporaryDirectory() as scratch:
        plots = Path(scratch)
        (plots / "roc_curve.png").write_bytes(roc)
        (plots / "confusion_matrix.png").write_bytes(confusion)
        mlflow.log_artifacts(scratch, "plots")
        onnx_path = plots / ONNX_FILE
        onnx_path.write_bytes(trained.onnx)
        model_info = mlflow.sklearn.log_model(
            trained.pipeline,
            name="model",
            signature=infer_signature(example, trained.pipeline.predict_proba(example)),
            input_example=example,
            # Probabilities are what consumers rank churners by, and what AUC is computed on.
            pyfunc_predict_fn="predict_proba",
            # skops refuses unknown types on load; these are the ones this very Pipeline holds.
            skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(trained.pipeline)),
            extra_files=[str(onnx_path)],
            # Stated, not inferred: inference re-imports the model in a subprocess (a minute).
            pip_requirements=MODEL_REQUIREMENTS,
        )
    lineage = {
        "partition": key,
        "as_of": as_of.date().isoformat(),
        "dataset_hash": dataset_hash,
        "feature_service": FEATURE_SERVICE,
        "dagster_run_id": context.run.run_id,
        "mlflow_run_id": run_id,
        "val_auc": round(trained.metrics["val_auc"], 6),
    }
    # register_model prints its progress to stderr, between the console's progress lines: kept
    # in the run's log instead.
    with contextlib.redirect_stderr(io.StringIO()) as printed:
        version = mlflow.register_model(model_info.model_uri, MODEL_NAME, tags=lineage)
    context.log.info(printed.getvalue().strip())
    context.log.info(f"registered {MODEL_NAME} v{version.version} (val_auc {lineage['val_auc']})")
    return MaterializeResult(
        metadata={
            **{name: round(value, 4) for name, value in trained.metrics.items()},
            "model_version": version.version,
            "model_uri": f"models:/{MODEL_NAME}/{version.version}",
            "mlflow_run_uri": f"runs:/{run_id}/model",
            "dataset_hash": dataset_hash,
            **sample_facts,
            "roc_curve": MetadataValue.md(_inline_svg(roc_curve_svg(y_val, probability), "ROC")),
            "confusion_matrix": MetadataValue.md(
                _confusion_table(confusion_counts(y_val, probability))
            ),
            "params": MetadataValue.json(params.as_dict()),
        }
    )


@asset_check(
    asset=churn_model,
    blocking=True,
    partitions_def=monthly_partitions,
    description="The registered candidate loads through pyfunc and ranks the month's users, "
    "read from the online store, above the AUC floor.",
)
def candidate_scores_online_features(
    context: AssetCheckExecutionContext,
    snapshots: SnapshotsResource,
    feature_store: FeatureStoreResource,
    model_registry: ModelRegistryResource,
    limits: LimitsResource,
    policy: PolicyResource,
) -> AssetCheckResult:
    # Feast, MLflow and scikit-learn are imported by the check: the code location loads without.
    from mlflow import pyfunc
    from sklearn.metrics import roc_auc_score

    from streamflow.adapters.feature_store import read_online

    key = context.partition_key
    floor = policy.promotion_auc_floor
    candidate = model_registry.registry().latest_for_partition(key)
    if candidate is None:
        return AssetCheckResult(passed=False, metadata={"reason": f"no version for {key}"})
    store, as_of = snapshots.store(), months.as_of(key)
    users = store.row_count(LABELS_TABLE, as_of)
    if not users:
        return AssetCheckResult(passed=False, metadata={"reason": f"no labels for {key}"})
    # The rows `DataFrame.sample(n, random_state=0)` draws, taken while the month streams by.
    drawn = np.random.RandomState(0).choice(users, size=min(CHECK_SAMPLE, users), replace=False)
    sample = take(store.read_batches(LABELS_TABLE, as_of, limits.chunk_rows), drawn)
    online = read_online(feature_store.open(), sample[JOIN_KEY].tolist())
    known = online[[f.name for f in FEATURES]].notna().any(axis=1).to_numpy()
    model = pyfunc.load_model(f"models:/{MODEL_NAME}/{candidate.version}")
    with one_thread():
        probability = np.asarray(model.predict(to_model_frame(online[known])))[:, 1]
    y = sample[LABEL].astype(int).to_numpy()[known]
    auc = float(roc_auc_score(y, probability)) if len(set(y)) == 2 else float("nan")
    return AssetCheckResult(
        passed=bool(auc >= floor),
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "model_version": candidate.version,
            "auc_online_sample": round(auc, 4),
            "auc_floor": floor,
            "sampled_users": len(sample),
            "users_missing_online": int((~known).sum()),
        },
    )
