"""Online features of users, read from Feast's online store as Feast's SDK returns them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import numpy as np
from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.sqlite import (
    SqliteOnlineStore,
    _quote_id,
    _table_id,
    convert_timestamp,
)
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type

from streamflow_assets.core.features import FEATURE_NAMES, FEATURE_SERVICE, FEATURES, JOIN_KEY

FeatureValue = int | float | bool | str | None


@dataclass(frozen=True)
class OnlineFeatures:
    """The raw feature values of some users, in request order, with each view's event time.

    `values[feature][i]` is what Feast's SDK returns for user i (None when empty or not held);
    `event_times[view][i]` is None when the view holds no row for user i.
    """

    user_ids: Sequence[str]
    values: dict[str, list[FeatureValue]]
    event_times: dict[str, list[datetime | None]]
    view_features: dict[str, tuple[str, ...]]

    def missing_features(self, i: int) -> list[str]:
        """Features of the views that hold no row for user i; all of them for an unknown user."""
        return [
            name
            for view, names in self.view_features.items()
            if self.event_times[view][i] is None
            for name in names
        ]

    def row(self, i: int) -> dict[str, FeatureValue]:
        """User i's features for a response: Float32 values as their shortest decimal."""
        row = {name: self.values[name][i] for name in FEATURE_NAMES}
        for name in _FLOAT32:
            if row[name] is not None:
                row[name] = _shortest(row[name])
        return row

    def view_times(self, i: int) -> dict[str, datetime | None]:
        return {view: times[i] for view, times in self.event_times.items()}

    def as_of(self, i: int) -> datetime | None:
        """The oldest event time of user i's views: how old the features as a whole are."""
        times = [times[i] for times in self.event_times.values()]
        return None if None in times else min(times)

    def columns(self, rows: Sequence[int]) -> dict[str, list[FeatureValue]]:
        """Raw values of some rows, feature by feature: the input of `features.model_inputs`."""
        return {name: [self.values[name][i] for i in rows] for name in FEATURE_NAMES}


def is_stale(as_of: datetime, now: datetime, max_age: timedelta | None) -> bool:
    return max_age is not None and now - as_of > max_age


# Feature values repeat a lot (flags, counts, categories, fees): decoding each distinct
# serialized ValueProto once makes a read mostly dictionary lookups. Bounded, as values of
# continuous features are many.
@lru_cache(maxsize=1 << 16)
def _decode(value: bytes) -> FeatureValue:
    return feast_value_type_to_python_type(ValueProto.FromString(value))


_FLOAT32 = frozenset(f.name for f in FEATURES if f.dtype == "Float32")


# Feast returns a Float32 value widened to a Python float (68.4 comes back as 68.4000015258789);
# responses show the shortest decimal with the same float32, which is the source value. The model
# reads the widened value (`columns`), as in training: both are the same float32.
@lru_cache(maxsize=1 << 16)
def _shortest(value: float) -> float:
    return float(str(np.float32(value)))


@lru_cache(maxsize=1 << 10)
def _event_time(epoch: int) -> datetime:
    # As Feast's SQLite read path turns the stored epoch into a datetime: its converter, then UTC.
    return convert_timestamp(str(epoch).encode()).replace(tzinfo=UTC)


class OnlineFeatureReader:
    """Reads `churn_model_v1`'s features of users from the store's online store.

    Feast's `get_online_features` spends milliseconds per call resolving the feature service in
    the registry and building protos, dicts and a response; the data is a few rows per view.
    This resolves the views once, and reads the rows in one query over the SQLite online store's
    tables (any other online store: its own `online_read`, per view). Values are decoded with
    Feast's converter, so the reader returns what the SDK returns (tested user by user).
    """

    def __init__(self, store: FeatureStore, use_sql: bool | None = None):
        service = store.get_feature_service(FEATURE_SERVICE)
        self._config = store.config
        self._online = store.provider.online_store
        self._views = [
            (store.get_feature_view(projection.name), tuple(f.name for f in projection.features))
            for projection in service.feature_view_projections
        ]
        served = sorted(name for _, names in self._views for name in names)
        if served != sorted(FEATURE_NAMES):
            raise ValueError(
                f"feature service {FEATURE_SERVICE} serves {served}, the model expects "
                f"{sorted(FEATURE_NAMES)}: re-apply the Feast repo"
            )
        self.view_features = {view.name: names for view, names in self._views}
        self.uses_sql = isinstance(self._online, SqliteOnlineStore) if use_sql is None else use_sql
        versioning = self._config.registry.enable_online_feature_view_versioning
        self._tables = [
            _quote_id(_table_id(self._config.project, view, versioning)) for view, _ in self._views
        ]
        self._key_version = self._config.entity_key_serialization_version
        self._single_query = ""
        self._single_query = self._query(1)

    def read(self, user_ids: Sequence[str]) -> OnlineFeatures:
        if self.uses_sql:
            return self._read_sql(user_ids)
        return self._read_views(user_ids)

    def _entity_key(self, user_id: str) -> EntityKeyProto:
        return EntityKeyProto(join_keys=[JOIN_KEY], entity_values=[ValueProto(string_val=user_id)])

    def _query(self, count: int) -> str:
        if count == 1 and self._single_query:
            return self._single_query
        # Numbered parameters: every view's part reuses the same keys, passed once.
        keys = ",".join(f"?{n}" for n in range(1, count + 1))
        return " UNION ALL ".join(
            f"SELECT {index}, entity_key, feature_name, value, CAST(event_ts AS INTEGER) "
            f"FROM {table} WHERE entity_key IN ({keys})"
            for index, table in enumerate(self._tables)
        )

    def _read_sql(self, user_ids: Sequence[str]) -> OnlineFeatures:
        keys = [
            serialize_entity_key(self._entity_key(user_id), self._key_version)
            for user_id in user_ids
        ]
        positions: dict[bytes, list[int]] = {}
        for i, key in enumerate(keys):
            positions.setdefault(key, []).append(i)
        count = len(user_ids)
        values: dict[str, list[FeatureValue]] = {name: [None] * count for name in FEATURE_NAMES}
        times = [[None] * count for _ in self._views]
        wanted = [set(names) for _, names in self._views]
        rows = self._online._get_conn(self._config).execute(self._query(len(keys)), keys)
        for view, key, name, value, epoch in rows:
            if name not in wanted[view]:
                continue
            decoded, event_time = _decode(value), _event_time(epoch)
            for i in positions[key]:
                values[name][i] = decoded
                times[view][i] = event_time
        event_times = {view.name: times[n] for n, (view, _) in enumerate(self._views)}
        return OnlineFeatures(user_ids, values, event_times, self.view_features)

    def _read_views(self, user_ids: Sequence[str]) -> OnlineFeatures:
        keys = [self._entity_key(user_id) for user_id in user_ids]
        values: dict[str, list[FeatureValue]] = {}
        event_times: dict[str, list[datetime | None]] = {}
        for view, names in self._views:
            rows = self._online.online_read(self._config, view, keys, list(names))
            event_times[view.name] = [event_time for event_time, _ in rows]
            for name in names:
                values[name] = [
                    feast_value_type_to_python_type(data[name])
                    if data is not None and name in data
                    else None
                    for _, data in rows
                ]
        return OnlineFeatures(user_ids, values, event_times, self.view_features)
