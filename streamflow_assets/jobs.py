"""Jobs: the monthly pipeline runs every partitioned asset of a month, in dependency order."""

from dagster import AssetSelection, define_asset_job
from dagster_mlflow import end_mlflow_on_run_finished

from streamflow_assets.partitions import monthly_partitions

monthly_pipeline = define_asset_job(
    "monthly_pipeline",
    selection=AssetSelection.all(),
    partitions_def=monthly_partitions,
    description="Everything StreamFlow builds for one month, from seeds to the served model.",
    # dagster-mlflow's hook closes the MLflow run that churn_model logs to, after the last step.
    hooks={end_mlflow_on_run_finished},
)
