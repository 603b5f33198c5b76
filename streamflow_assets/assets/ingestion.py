"""Ingestion: a month of seed CSVs becomes six validated snapshot tables, keyed (user_id, as_of)."""

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset_check,
    multi_asset,
    sensor,
)

from streamflow_assets.core import months
from streamflow_assets.core.seeds import (
    TABLES,
    USERS,
    SeedTable,
    stored_problems,
    unknown_user_problems,
)
from streamflow_assets.jobs import MONTHLY_PIPELINE
from streamflow_assets.partitions import monthly_partitions
from streamflow_assets.resources import SeedsResource, SnapshotsResource, run_config_for

# Warn when a table's row count moves more than this fraction against the previous month.
ROW_COUNT_CHANGE_WARNING = 0.2

_DESCRIPTIONS = {
    "users_snapshots": "Who each subscriber is (signup, gender, household) as of month end.",
    "subscriptions_profile_snapshots": "Each subscriber's plan, contract, fee and tenure.",
    "usage_agg_30d_snapshots": "Each subscriber's viewing and streaming quality, last 30/7 days.",
    "payments_agg_90d_snapshots": "Failed payments per subscriber over the last 90 days.",
    "support_agg_90d_snapshots": "Support tickets and resolution time per subscriber, 90 days.",
    "labels_snapshots": "Whether each subscriber churned, dated by the month it describes.",
}


def _preview(df: pd.DataFrame) -> MetadataValue:
    return MetadataValue.md(df.head(5).to_markdown(index=False))


@multi_asset(
    specs=[
        AssetSpec(
            table.snapshot,
            description=_DESCRIPTIONS[table.snapshot],
            group_name="ingestion",
            kinds={"pandas"},
            metadata={"source_file": table.file},
        )
        for table in TABLES
    ],
    partitions_def=monthly_partitions,
)
def monthly_snapshots(
    context: AssetExecutionContext, seeds: SeedsResource, snapshots: SnapshotsResource
):
    """Parse, validate and store one month of seeds; a bad file fails the month, writing nothing."""
    key = context.partition_key
    as_of = months.as_of(key)
    facts: dict[str, dict] = {}

    def validated_tables():
        # Each table is staged by the store as it comes and let go: one in memory at a time.
        for table, df in seeds.iter_month(key):
            facts[table] = {
                "dagster/row_count": len(df),
                "null_counts": {c: int(n) for c, n in df.isna().sum().items() if n},
                "preview": _preview(df),
            }
            yield table, df

    snapshots.store().write_month(as_of, validated_tables())
    for table in TABLES:
        yield MaterializeResult(
            asset_key=table.snapshot,
            metadata={
                **facts[table.snapshot],
                "as_of": as_of.date().isoformat(),
                "seeds_folder": str(seeds.folder(key)),
            },
        )


def _contract_check(table: SeedTable):
    @asset_check(
        asset=table.snapshot,
        name="contract",
        blocking=True,
        partitions_def=monthly_partitions,
        description="Stored columns, types, keys, ranges and categories; users known to users.",
    )
    def _check(context: AssetCheckExecutionContext, snapshots: SnapshotsResource):
        store = snapshots.store()
        as_of = months.as_of(context.partition_key)
        df = store.read(table.snapshot, as_of)
        problems = stored_problems(table, df)
        if not problems and table is not USERS:
            users = store.read(USERS.snapshot, as_of)
            problems = unknown_user_problems(table, df, users["user_id"])
        return AssetCheckResult(
            passed=not problems,
            metadata={"rows": len(df), "problems": MetadataValue.md(_bullets(problems))},
        )

    _check.__name__ = f"{table.snapshot}_contract"
    return _check


def _row_count_check(table: SeedTable):
    @asset_check(
        asset=table.snapshot,
        name="row_count_change",
        partitions_def=monthly_partitions,
        description=f"Warns when rows move over {ROW_COUNT_CHANGE_WARNING:.0%} month on month.",
    )
    def _check(context: AssetCheckExecutionContext, snapshots: SnapshotsResource):
        store = snapshots.store()
        index = months.month_index(context.partition_key)
        rows = store.row_count(table.snapshot, months.as_of(context.partition_key))
        previous = (
            store.row_count(table.snapshot, months.as_of(months.partition_key(index - 1)))
            if index
            else None
        )
        change = (rows - previous) / previous if previous else 0.0
        return AssetCheckResult(
            passed=abs(change) <= ROW_COUNT_CHANGE_WARNING,
            severity=AssetCheckSeverity.WARN,
            metadata={"rows": rows, "previous_rows": previous or 0, "change": round(change, 4)},
        )

    _check.__name__ = f"{table.snapshot}_row_count_change"
    return _check


def _bullets(problems) -> str:
    return "\n".join(f"- {p}" for p in problems) or "none"


snapshot_checks = [make(table) for table in TABLES for make in (_contract_check, _row_count_check)]


@sensor(job_name=MONTHLY_PIPELINE, minimum_interval_seconds=60)
def new_seed_month_sensor(context: SensorEvaluationContext, seeds: SeedsResource):
    """Requests a month's partition as soon as its `month_NNN/` seeds folder appears."""
    ingested = context.instance.get_materialized_partitions(AssetKey(USERS.snapshot))
    valid = set(monthly_partitions.get_partition_keys())
    new = [key for key in seeds.months() if key not in ingested and key in valid]
    if not new:
        return SkipReason(f"no new month folder in {seeds.seeds_dir}")
    # Keyed by the folder's content version: a month still being ingested is not requested
    # twice, while a folder fixed after a failed run is requested again. The run reads the
    # folder this sensor saw, on every worker.
    return SensorResult(
        run_requests=[
            RunRequest(
                partition_key=key,
                run_key=f"{key}@{seeds.version(key)}",
                run_config=run_config_for({"seeds": seeds}),
            )
            for key in new
        ]
    )
