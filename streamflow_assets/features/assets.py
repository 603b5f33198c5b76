"""Features: the Feast registry, the online store a month at a time, point-in-time training sets."""

from collections.abc import Iterator
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

from streamflow.adapters.snapshots import SnapshotStore
from streamflow.domain import months
from streamflow.domain.features import (
    FEATURE_COLUMNS,
    FEATURE_NAMES,
    FEATURE_SERVICE,
    FEATURE_VIEWS,
    JOIN_KEY,
    LABEL,
    ContentHash,
    UsersFingerprint,
    with_stored_dtypes,
)
from streamflow_assets.partitions import monthly_partitions
from streamflow_assets.resources import FeatureStoreResource, LimitsResource, SnapshotsResource

TRAINING_TABLE = "training_dataset"
LABELS_TABLE = "labels_snapshots"
_FEATURE_TABLES = [view.source_table for view in FEATURE_VIEWS]


@asset(group_name="features", kinds={"feast"})
def feature_registry(feature_store: FeatureStoreResource) -> MaterializeResult:
    """Feast definitions applied: entity `user`, a source per snapshot, 4 views, churn_model_v1."""
    # Feast is imported by the steps that use it: the code location loads without it.
    from streamflow.adapters.feature_store import apply_definitions

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
)
def online_features(
    context: AssetExecutionContext,
    feature_store: FeatureStoreResource,
    snapshots: SnapshotsResource,
    limits: LimitsResource,
) -> MaterializeResult:
    """The month's features in Feast's online store; an older month never overwrites a newer one."""
    from streamflow.adapters.feature_store import materialize_month

    as_of = months.as_of(context.partition_key)
    tables = snapshots.store()
    store = feature_store.open()

    def read_batches(table: str) -> Iterator[pd.DataFrame]:
        # In user_id order (the store sorts, spilling if it must): the online tables' B-trees
        # then fill in sequence, several times faster than in the seeds' order at 10M users.
        return tables.join_batches({table: FEATURE_COLUMNS[table]}, as_of, limits.chunk_rows)

    stats = materialize_month(store, read_batches, as_of)
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
    limits: LimitsResource,
) -> MaterializeResult:
    """The month's labelled users with their features joined point-in-time at as_of by Feast.

    The join's rows reach the store a chunk at a time, and its checks are evaluated on them as
    they pass (the point-in-time comparison counted by the store's engine), not on a read of
    what was written.
    """
    from streamflow.adapters.feature_store import historical_batches

    as_of = months.as_of(context.partition_key)
    tables = snapshots.store()
    labels = tables.read(LABELS_TABLE, as_of)
    entities = pd.DataFrame(
        {JOIN_KEY: labels[JOIN_KEY], "event_timestamp": labels["as_of"], LABEL: labels[LABEL]}
    )
    labelled = UsersFingerprint().add(labels[JOIN_KEY])
    del labels
    store = feature_store.open()
    joined, churners = UsersFingerprint(), 0
    nulls = pd.Series(0, index=FEATURE_NAMES)
    digest = ContentHash()

    def chunks() -> Iterator[pd.DataFrame]:
        nonlocal nulls, churners
        for batch in historical_batches(store, entities, limits.chunk_rows):
            chunk = with_stored_dtypes(batch[[JOIN_KEY, *FEATURE_NAMES, LABEL]])
            joined.add(chunk[JOIN_KEY])
            nulls += chunk[FEATURE_NAMES].isna().sum()
            churners += int(chunk[LABEL].sum())
            digest.update(chunk)
            yield chunk

    tables.write_month(as_of, {TRAINING_TABLE: chunks()})
    return MaterializeResult(
        metadata={
            "dagster/row_count": joined.rows,
            "as_of": as_of.date().isoformat(),
            "churn_rate": round(churners / joined.rows, 4) if joined.rows else float("nan"),
            "feature_service": FEATURE_SERVICE,
            "features": ", ".join(FEATURE_NAMES),
            "null_counts": {name: int(n) for name, n in nulls.items()},
            "content_hash": digest.hexdigest(),
        },
        check_results=[
            _rows_match_labels(joined, labelled),
            _point_in_time(tables, as_of),
            _not_all_null(nulls, joined.rows),
        ],
    )


def _rows_match_labels(joined: UsersFingerprint, labelled: UsersFingerprint) -> AssetCheckResult:
    return AssetCheckResult(
        check_name=ROWS_MATCH_LABELS,
        passed=joined == labelled,
        metadata={
            "rows": joined.rows,
            "labels": labelled.rows,
            "same_users": joined.digest == labelled.digest,
        },
    )


def _point_in_time(store: SnapshotStore, as_of: datetime) -> AssetCheckResult:
    # Feast's offline retrieval returns values, not the event time of the row that supplied them,
    # so the check compares with the month's snapshots: a user present at as_of must carry
    # exactly those values; a later snapshot's values (leakage) or an earlier one's would differ.
    mismatched = store.mismatches(TRAINING_TABLE, FEATURE_COLUMNS, as_of)
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
