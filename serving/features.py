"""Online features of users, read from Feast's online store as Feast's SDK returns them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from feast import FeatureStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type

from streamflow_assets.core.features import FEATURE_NAMES, FEATURE_SERVICE, JOIN_KEY

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
        return {name: self.values[name][i] for name in FEATURE_NAMES}

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


class OnlineFeatureReader:
    """Reads `churn_model_v1`'s features through the provider's online store, view by view.

    Feast's `get_online_features` spends milliseconds per call resolving the feature service in
    the registry and building response protos and dicts; the read itself is one query per view.
    This does only the read, with the view definitions resolved once, and converts values with
    Feast's own converter, so it returns what the SDK returns (a test compares them user by user).
    """

    def __init__(self, store: FeatureStore):
        service = store.get_feature_service(FEATURE_SERVICE)
        self._config = store.config
        self._online = store._get_provider().online_store
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

    def read(self, user_ids: Sequence[str]) -> OnlineFeatures:
        keys = [
            EntityKeyProto(join_keys=[JOIN_KEY], entity_values=[ValueProto(string_val=user_id)])
            for user_id in user_ids
        ]
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
