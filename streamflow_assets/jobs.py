"""Jobs: the monthly pipeline runs every asset of a month, in dependency order."""

from dagster import AssetSelection, define_asset_job

# Partitioned by month: Dagster infers it from the selected assets (feature_registry, the one
# unpartitioned asset, is re-applied in every month's run; applying is idempotent).
monthly_pipeline = define_asset_job(
    "monthly_pipeline",
    selection=AssetSelection.all(),
    description="Everything StreamFlow builds for one month, from seeds to the served model.",
)
