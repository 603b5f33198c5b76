"""Features: the Feast registry, the online store a month at a time, point-in-time training sets."""

import hashlib
from collections.abc import Iterator, Mapping
from datetime import datetime

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
)

from streamflow_assets.core import months
from streamflow_assets.core.feature_store import apply_definitions, materialize_month
from streamflow_assets.core.features import (
    FEATURE_NAMES,
    FEATURE_SERVICE,
    FEATURE_VIEWS,
    JOIN_KEY,
    LABEL,
    snapshot_mismatches,
    with_stored_dtypes,
)
from streamflow_assets.core.snapshots import SnapshotStore
from streamflow_assets.freshness import monthly_freshness_policy
from streamflow_assets.partitions import monthly_partitions
from streamflow_assets.resources import FeatureStoreResource, LimitsResource, SnapshotsResource

TRAINING_TABLE = "training_dataset"
LABELS_TABLE = "labels_snapshots"
_FEATURE_TABLES = [view.source_table for view in FEATURE_VIEWS]


@asset(group_name="features", kinds={"feast"})
def feature_registry(feature_store: FeatureStoreResource) -> MaterializeResult:
    """Feast definitions applied: entity `user`, a source per snapshot, 4 views, churn_model_v1."""
    store = feature_store.open()
    summary = apply_definitions(store, store.config.repo_path)
    views = "\n".join(
        f"| {view} | {', '.join(features)} |" for view, features in sorted(summary.views.items())
    )
    return MaterializeResult(
        metadata={
            "objects_applied": summary.applied,
            "objects_deleted": summary.deleted,
            "feature_services": ", ".join(summary.services),
            "views": MetadataValue.md(f"| view | features |\n|---|---|\n{views}"),
            "feature_count": sum(len(f) for f in summary.views.values()),
        }
    )


@asset(
    group_name="features",
    kinds={"feast"},
    partitions_def=monthly_partitions,
    deps=[feature_registry, *_FEATURE_TABLES],
    freshness_policy=monthly_freshness_policy(),
)
def online_features(
    context: AssetExecutionContext,
    feature_store: FeatureStoreResource,
    snapshots: SnapshotsResource,
    limits: LimitsResource,
) -> MaterializeResult:
    """The month's features in Feast's online store; an older month never overwrites a newer one."""
    as_of = months.as_of(context.partition_key)
    tables = snapshots.store()
    store = feature_store.open()
    stats = materialize_month(
        store, lambda table: tables.read_batches(table, as_of, limits.chunk_rows), as_of
    )
    online = store.provider.online_store
    newest = {
        view: online.newest_event_time(store.config, store.get_feature_view(view)) for view in stats
    }
    written = min(s.written for s in stats.values())
    skipped = max(s.skipped_as_older for s in stats.values())
    if skipped:
        context.log.warning(
            f"{skipped} users kept newer online values than {as_of:%Y-%m-%d} (a backfill)"
        )
    rows = "\n".join(
        f"| {view} | {s.offered} | {s.written} | {s.skipped_as_older} | {newest[view]:%Y-%m-%d} |"
        for view, s in stats.items()
    )
    return MaterializeResult(
        metadata={
            "as_of": as_of.date().isoformat(),
            "rows_written": written,
            "rows_skipped_as_older": skipped,
            "newest_event_time": max(newest.values()).isoformat(),
            "views": MetadataValue.md(
                "| view | offered | written | skipped as older | newest in store |\n"
                f"|---|---|---|---|---|\n{rows}"
            ),
        }
    )


def content_hash(df: pd.DataFrame) -> str:
    """A stable fingerprint of a dataset's rows and columns, recorded with the model it trains."""
    digest = hashlib.sha256(",".join(df.columns).encode())
    digest.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


ROWS_MATCH_LABELS = "training_rows_match_labels"
POINT_IN_TIME = "training_features_point_in_time"
NOT_ALL_NULL = "training_features_not_all_null"
_TRAINING_CHECKS = {
    ROWS_MATCH_LABELS: "One training row per labelled user of the month.",
    POINT_IN_TIME: "No leakage: features are the month's own snapshot, never a later month's.",
    NOT_ALL_NULL: "Every feature has values: an entirely empty column means a broken join.",
}


@asset(
    group_name="features",
    kinds={"feast", "pandas"},
    partitions_def=monthly_partitions,
    deps=[feature_registry, LABELS_TABLE, *_FEATURE_TABLES],
    check_specs=[
        AssetCheckSpec(
            name,
            asset=TRAINING_TABLE,
            blocking=True,
            partitions_def=monthly_partitions,
            description=description,
        )
        for name, description in _TRAINING_CHECKS.items()
    ],
)
def training_dataset(
    context: AssetExecutionContext,
    feature_store: FeatureStoreResource,
    snapshots: SnapshotsResource,
) -> MaterializeResult:
    """The month's labelled users with their features joined point-in-time at as_of by Feast.

    Its checks are evaluated here on the rows just built, not on a read of what was written.
    """
    as_of = months.as_of(context.partition_key)
    tables = snapshots.store()
    labels = tables.read(LABELS_TABLE, as_of)
    entities = pd.DataFrame(
        {JOIN_KEY: labels[JOIN_KEY], "event_timestamp": labels["as_of"], LABEL: labels[LABEL]}
    )
    labelled = labels[JOIN_KEY]
    del labels
    store = feature_store.open()
    joined = store.get_historical_features(
        entity_df=entities, features=store.get_feature_service(FEATURE_SERVICE)
    ).to_df()
    del entities
    dataset = with_stored_dtypes(
        joined[[JOIN_KEY, *FEATURE_NAMES, LABEL]].sort_values(JOIN_KEY, ignore_index=True)
    )
    del joined
    tables.write_month(as_of, {TRAINING_TABLE: dataset})
    nulls = dataset[FEATURE_NAMES].isna().sum()
    return MaterializeResult(
        metadata={
            "dagster/row_count": len(dataset),
            "as_of": as_of.date().isoformat(),
            "churn_rate": round(float(dataset[LABEL].mean()), 4),
            "feature_service": FEATURE_SERVICE,
            "features": ", ".join(FEATURE_NAMES),
            "null_counts": {name: int(n) for name, n in nulls.items()},
            "content_hash": content_hash(dataset),
        },
        check_results=[
            _rows_match_labels(dataset, labelled),
            _point_in_time(dataset, tables, as_of),
            _not_all_null(nulls, len(dataset)),
        ],
    )


def _rows_match_labels(dataset: pd.DataFrame, labelled: pd.Series) -> AssetCheckResult:
    same_users = set(dataset[JOIN_KEY]) == set(labelled)
    return AssetCheckResult(
        check_name=ROWS_MATCH_LABELS,
        passed=len(dataset) == len(labelled) and same_users,
        metadata={"rows": len(dataset), "labels": len(labelled), "same_users": same_users},
    )


class _MonthSnapshots(Mapping[str, pd.DataFrame]):
    """The month's feature snapshot tables, each read when asked for and let go after."""

    def __init__(self, store: SnapshotStore, as_of: datetime):
        self.store, self.as_of = store, as_of

    def __getitem__(self, table: str) -> pd.DataFrame:
        return self.store.read(table, self.as_of)

    def __iter__(self) -> Iterator[str]:
        return iter(_FEATURE_TABLES)

    def __len__(self) -> int:
        return len(_FEATURE_TABLES)


def _point_in_time(dataset: pd.DataFrame, store: SnapshotStore, as_of: datetime):
    # Feast's offline retrieval returns values, not the event time of the row that supplied them,
    # so the check compares with the month's snapshots: a user present at as_of must carry
    # exactly those values; a later snapshot's values (leakage) or an earlier one's would differ.
    mismatched = snapshot_mismatches(dataset, _MonthSnapshots(store, as_of))
    return AssetCheckResult(
        check_name=POINT_IN_TIME,
        passed=not mismatched,
        metadata={"as_of": as_of.date().isoformat(), "mismatched_values": mismatched},
    )


def _not_all_null(nulls: pd.Series, rows: int) -> AssetCheckResult:
    empty = [name for name, n in nulls.items() if n == rows]
    return AssetCheckResult(
        check_name=NOT_ALL_NULL,
        passed=not empty,
        metadata={"entirely_null": ", ".join(empty) or "none"},
    )
