"""Ingestion: a month of seed CSVs becomes six validated snapshot tables, keyed (user_id, as_of)."""

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    DefaultSensorStatus,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    multi_asset,
    sensor,
)

from streamflow.adapters.snapshots import SnapshotStore
from streamflow.domain import months
from streamflow.domain.features import user_id_hashes
from streamflow.domain.seeds import (
    TABLES,
    TABLES_BY_SNAPSHOT,
    USERS,
    Findings,
    KnownUsers,
    SeedTable,
    stored_problems,
    unknown_user_problems,
)
from streamflow_assets.jobs import MONTHLY_PIPELINE
from streamflow_assets.partitions import monthly_partitions, seeded_months_request
from streamflow_assets.resources import (
    LimitsResource,
    SeedsResource,
    SnapshotsResource,
    run_config_for,
)

# Warn when a table's row count moves more than this fraction against the previous month.
ROW_COUNT_CHANGE_WARNING = 0.2
CONTRACT = "contract"
ROW_COUNT_CHANGE = "row_count_change"

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


def _check_specs(table: SeedTable) -> list[AssetCheckSpec]:
    return [
        AssetCheckSpec(
            CONTRACT,
            asset=table.snapshot,
            blocking=True,
            partitions_def=monthly_partitions,
            description="Stored columns, types, keys, ranges and categories; users known to users.",
        ),
        AssetCheckSpec(
            ROW_COUNT_CHANGE,
            asset=table.snapshot,
            partitions_def=monthly_partitions,
            description=f"Warns when rows move over {ROW_COUNT_CHANGE_WARNING:.0%} month on month.",
        ),
    ]


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
    check_specs=[spec for table in TABLES for spec in _check_specs(table)],
    partitions_def=monthly_partitions,
)
def monthly_snapshots(
    context: AssetExecutionContext,
    seeds: SeedsResource,
    snapshots: SnapshotsResource,
    limits: LimitsResource,
):
    """Parse, validate and store one month of seeds; a bad file fails the month, writing nothing.

    Each table reaches the store a chunk (`STREAMFLOW_CHUNK_ROWS`) at a time, and the checks
    are evaluated here, on the chunks as they are handed to the store (which stores them
    exactly, dtypes included), instead of reading every table back: the contract blocks what is
    downstream when it fails, the row-count change warns.
    """
    key = context.partition_key
    as_of = months.as_of(key)
    store = snapshots.store()
    stored: dict[str, _StoredTable] = {}

    def validated_tables():
        users = None
        for name, chunks in seeds.iter_month(key, limits.chunk_rows):
            table = TABLES_BY_SNAPSHOT[name]
            stored[name] = _StoredTable(table, users)
            yield name, stored[name].watch(chunks)
            if table is USERS:  # the first table of every month
                users = stored[name].known_users()

    store.write_month(as_of, validated_tables())
    for table in TABLES:
        facts = stored[table.snapshot]
        yield MaterializeResult(
            asset_key=table.snapshot,
            metadata={
                "dagster/row_count": facts.rows,
                "null_counts": {c: int(n) for c, n in facts.nulls.items() if n},
                "preview": facts.preview,
                "as_of": as_of.date().isoformat(),
                "seeds_folder": str(seeds.folder(key)),
            },
            check_results=[facts.contract(), _row_count_change(store, table, key, facts.rows)],
        )


class _StoredTable:
    """What the checks and the metadata need of a table, gathered from its chunks as they pass
    to the store: counts, a preview, the contract's problems (and the users' ids)."""

    def __init__(self, table: SeedTable, users: KnownUsers | None):
        self.table, self.users = table, users
        self.rows = 0
        self.nulls = pd.Series(0, index=table.column_names)
        self.preview: MetadataValue | None = None
        self.problems = Findings()
        self._hashes: list = []

    def watch(self, chunks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for df in chunks:
            self.rows += len(df)
            self.nulls = self.nulls.add(df.isna().sum(), fill_value=0)
            self.preview = self.preview or _preview(df)
            # The stored form's columns, dtypes and rules, and its users known to the month's.
            self.problems.add(stored_problems(self.table, df, whole=False))
            if self.table is USERS:
                self._hashes.append(user_id_hashes(df["user_id"]))
            elif self.users is not None:
                self.problems.add(unknown_user_problems(self.table, df, self.users))
            yield df

    def known_users(self) -> KnownUsers:
        return KnownUsers(self._hashes)

    def contract(self) -> AssetCheckResult:
        problems = self.problems.list()
        return AssetCheckResult(
            asset_key=self.table.snapshot,
            check_name=CONTRACT,
            passed=not problems,
            metadata={"rows": self.rows, "problems": MetadataValue.md(_bullets(problems))},
        )


def _row_count_change(
    store: SnapshotStore, table: SeedTable, key: str, rows: int
) -> AssetCheckResult:
    index = months.month_index(key)
    previous = None
    if index:
        previous = store.row_count(table.snapshot, months.as_of(months.partition_key(index - 1)))
    change = (rows - previous) / previous if previous else 0.0
    return AssetCheckResult(
        asset_key=table.snapshot,
        check_name=ROW_COUNT_CHANGE,
        passed=abs(change) <= ROW_COUNT_CHANGE_WARNING,
        severity=AssetCheckSeverity.WARN,
        metadata={"rows": rows, "previous_rows": previous or 0, "change": round(change, 4)},
    )


def _bullets(problems) -> str:
    return "\n".join(f"- {p}" for p in problems) or "none"


# Running from the start: the UI offers a month as soon as its seeds land, whether or not
# `new_seed_month_sensor` (off by default) also runs it.
@sensor(
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Adds a month's partition as soon as its `month_NNN/` seeds folder appears; "
    "runs nothing.",
)
def seed_months_sensor(context: SensorEvaluationContext, seeds: SeedsResource):
    requests = seeded_months_request(context.instance, Path(seeds.seeds_dir))
    if not requests:
        return SkipReason(f"every month folder in {seeds.seeds_dir} is a partition")
    return SensorResult(dynamic_partitions_requests=requests)


@sensor(
    job_name=MONTHLY_PIPELINE,
    minimum_interval_seconds=60,
    description="Requests a month's partition as soon as its `month_NNN/` seeds folder appears.",
)
def new_seed_month_sensor(context: SensorEvaluationContext, seeds: SeedsResource):
    ingested = context.instance.get_materialized_partitions(AssetKey(USERS.snapshot))
    new = [key for key in seeds.months() if key not in ingested]
    if not new:
        return SkipReason(f"no new month folder in {seeds.seeds_dir}")
    # Keyed by the folder's content version: a month still being ingested is not requested
    # twice, while a folder fixed after a failed run is requested again. The run reads the
    # folder this sensor saw, on every worker. The daemon adds the months as partitions before
    # it creates their runs.
    return SensorResult(
        run_requests=[
            RunRequest(
                partition_key=key,
                run_key=f"{key}@{seeds.version(key)}",
                run_config=run_config_for({"seeds": seeds}),
            )
            for key in new
        ],
        dynamic_partitions_requests=seeded_months_request(context.instance, Path(seeds.seeds_dir)),
    )
