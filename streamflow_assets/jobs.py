"""Jobs: the monthly pipeline runs every partitioned asset of a month, in dependency order."""

from dagster import AssetSelection, define_asset_job

from streamflow_assets.partitions import monthly_partitions

monthly_pipeline = define_asset_job(
    "monthly_pipeline",
    selection=AssetSelection.all(),
    partitions_def=monthly_partitions,
    description="Everything StreamFlow builds for one month, from seeds to the served model.",
)
