"""Jobs: the monthly pipeline (every asset of a month, or all but training under `on_trigger`)
and the retraining job the retraining sensor launches."""

from dagster import AssetSelection, define_asset_job

from streamflow.settings import RetrainPolicy

MONTHLY_PIPELINE = "monthly_pipeline"
RETRAINING_JOB = "retraining"
RETRAIN_REASON_TAG = "streamflow/retrain_reason"
# What a retraining produces for a month: a candidate, its promotion decision, and the scores of
# whichever version serves afterwards.
RETRAINED_ASSETS = AssetSelection.assets("churn_model", "production_model", "batch_scores")


def build_monthly_pipeline(policy: RetrainPolicy = "monthly"):
    """`monthly`: everything. `on_trigger`: ingestion, features and monitoring only; drift and
    decay need only the incumbent, and the retraining sensor asks for training on evidence."""
    # Partitioned by month: Dagster infers it from the selected assets (feature_registry, the one
    # unpartitioned asset, is re-applied in every month's run; applying is idempotent).
    selection = AssetSelection.all()
    if policy == "on_trigger":
        selection = selection - RETRAINED_ASSETS
    return define_asset_job(
        MONTHLY_PIPELINE,
        selection=selection,
        description="Everything StreamFlow builds for one month, from seeds to the served model"
        + (
            " (training only on evidence: STREAMFLOW_RETRAIN=on_trigger)."
            if policy == "on_trigger"
            else "."
        ),
    )


retraining = define_asset_job(
    RETRAINING_JOB,
    selection=RETRAINED_ASSETS,
    description="A month's candidate, its promotion decision and the batch scores after it.",
)
