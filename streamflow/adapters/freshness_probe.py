"""Read what the online store and the Feast registry hold, and judge it with the freshness rule."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import psycopg
from feast import FeatureStore
from feast.errors import FeatureViewNotFoundException

from streamflow.adapters.snapshots import SnapshotStore
from streamflow.domain.features import FEATURE_VIEWS, JOIN_KEY
from streamflow.domain.freshness import (
    FreshnessResult,
    Interval,
    Thresholds,
    UserEventTimes,
    evaluate_freshness,
    sample_users,
)

# Every feature of a view carries its view's event time: one feature per view is enough to read.
_PROBE_REFS = {view.name: f"{view.name}:{view.features[0].name}" for view in FEATURE_VIEWS}


def newest_snapshot_as_of(snapshots: SnapshotStore) -> datetime | None:
    """The newest as_of that every feature view's snapshot table holds."""
    stored = [set(snapshots.as_ofs(view.source_table)) for view in FEATURE_VIEWS]
    common = set.intersection(*stored)
    return max(common) if common else None


def registry_intervals(store: FeatureStore) -> dict[str, list[Interval]] | None:
    """Each feature view's materialized intervals in the registry; None when one is missing."""
    try:
        views = [
            store.get_feature_view(view.name, allow_registry_cache=False) for view in FEATURE_VIEWS
        ]
    except FeatureViewNotFoundException:
        return None
    return {view.name: list(view.materialization_intervals) for view in views}


def online_event_times(store: FeatureStore, user_ids: list[str]) -> UserEventTimes | None:
    """The event time each user's row carries in each view online; None when there are no tables.

    Read through Feast's own online read, which does not apply TTLs: what a server would serve.
    """
    if not user_ids:
        return {}
    try:
        rows = store.get_online_features(
            features=list(_PROBE_REFS.values()),
            entity_rows=[{JOIN_KEY: user} for user in user_ids],
        ).to_dict(include_event_timestamps=True)
    except sqlite3.OperationalError as error:
        # The online stores create their tables on `feast apply`; without them the store was
        # wiped (or never set up). Anything else (a locked database) is an error, not an answer.
        if "no such table" not in str(error):
            raise
        return None
    except psycopg.errors.UndefinedTable:
        return None
    # Feast returns epoch seconds, and 0 for a user it holds no row for.
    stamps = {view: rows[f"{ref.split(':')[1]}__ts"] for view, ref in _PROBE_REFS.items()}
    return {
        user: {
            view: datetime.fromtimestamp(stamps[view][i], UTC) if stamps[view][i] else None
            for view in _PROBE_REFS
        }
        for i, user in enumerate(rows[JOIN_KEY])
    }


def check_online_store(
    store: FeatureStore,
    snapshots: SnapshotStore,
    thresholds: Thresholds,
    sample_size: int,
    now: datetime | None = None,
) -> FreshnessResult:
    """Compare a sample of the newest snapshot month's users online with that month."""
    expected = newest_snapshot_as_of(snapshots)
    intervals = registry_intervals(store) if expected is not None else None
    event_times: UserEventTimes | None = {}
    if expected is not None and intervals is not None:
        # The users of the month: every feature table holds the same ones (a contract check).
        users = snapshots.read(FEATURE_VIEWS[0].source_table, expected)[JOIN_KEY]
        event_times = online_event_times(store, sample_users(users.tolist(), sample_size))
    return evaluate_freshness(
        expected, event_times, intervals, now or datetime.now(UTC), thresholds
    )
