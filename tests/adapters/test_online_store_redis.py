"""The Redis online store's guard on the real Redis server: older never wins, equal rewrites."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from feast import Entity, FeatureView, Field, FileSource
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig
from feast.types import Int64
from feast.value_type import ValueType

from streamflow.adapters.feature_store import _entity_keys
from streamflow.adapters.online_store import EncodedView, MonotonicRedisOnlineStore
from tests.cluster import REDIS, require_servers

pytestmark = pytest.mark.cluster

JANUARY = datetime(2024, 1, 31, tzinfo=UTC)
FEBRUARY = datetime(2024, 2, 29, tzinfo=UTC)
VIEW = FeatureView(
    name="usage",
    entities=[Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)],
    ttl=timedelta(days=90),
    schema=[Field(name="skips_7d", dtype=Int64)],
    source=FileSource(name="usage_source", path="unused.parquet", timestamp_field="as_of"),
)


@pytest.fixture
def config() -> Iterator[RepoConfig]:
    """A Feast config over the shared Redis (db 0) under a project name of this test's own:
    Feast's keys end with the project, so this test writes and deletes only its own."""
    require_servers()
    project = f"streamflow_test_{uuid.uuid4().hex[:10]}"
    host, port = REDIS
    yield RepoConfig(
        project=project,
        provider="local",
        registry={"registry_type": "sql", "path": "sqlite://"},
        online_store={
            "type": "streamflow.adapters.online_store.MonotonicRedisOnlineStore",
            "connection_string": f"{host}:{port},db=0,socket_timeout=2",
        },
        entity_key_serialization_version=3,
    )
    client = redis.Redis(host, port, db=0)
    for key in client.scan_iter(match=f"*{project}*", count=1000):
        client.delete(key)


def write(config: RepoConfig, users: list[str], value: int, at: datetime):
    keys = _entity_keys(users, config.entity_key_serialization_version)
    encoded = ValueProto(int64_val=value).SerializeToString()
    views = [EncodedView(VIEW, keys, {"skips_7d": [encoded] * len(users)})]
    (stats,) = MonotonicRedisOnlineStore().write_encoded(config, views, at).values()
    return stats


def entity_key(user: str) -> EntityKeyProto:
    return EntityKeyProto(join_keys=["user_id"], entity_values=[ValueProto(string_val=user)])


def read(config: RepoConfig, users: list[str]) -> list[tuple[datetime | None, int | None]]:
    """Through Feast's own Redis read path."""
    keys = [
        EntityKeyProto(join_keys=["user_id"], entity_values=[ValueProto(string_val=u)])
        for u in users
    ]
    rows = RedisOnlineStore().online_read(config, VIEW, keys, ["skips_7d"])
    return [(ts, data["skips_7d"].int64_val if data else None) for ts, data in rows]


def test_an_older_month_is_skipped_and_counted_and_an_equal_one_rewrites(config) -> None:
    users = [f"user-{n}" for n in range(1200)]  # more than one script call's chunk
    assert (s := write(config, users, 2, FEBRUARY)).written == 1200 and s.skipped_as_older == 0
    older = write(config, users[:700], 1, JANUARY)
    assert (older.offered, older.written, older.skipped_as_older) == (700, 0, 700)
    assert set(read(config, users)) == {(FEBRUARY, 2)}
    # The same month again replaces the values (a corrected re-run); Feast's write would skip it.
    assert write(config, users[:10], 5, FEBRUARY).written == 10
    assert read(config, users[:11]) == [(FEBRUARY, 5)] * 10 + [(FEBRUARY, 2)]
    # New users of an older month are written: only what is newer online is kept.
    assert write(config, ["late-user"], 1, JANUARY).written == 1
    store = MonotonicRedisOnlineStore()
    assert store.newest_event_time(config, VIEW) == FEBRUARY


def test_feasts_own_write_path_is_guarded_alike(config) -> None:
    write(config, ["a", "b"], 2, FEBRUARY)
    rows = [
        (entity_key("a"), {"skips_7d": ValueProto(int64_val=1)}, JANUARY, None),
        (entity_key("c"), {"skips_7d": ValueProto(int64_val=7)}, JANUARY, None),
    ]
    MonotonicRedisOnlineStore().online_write_batch(config, VIEW, rows, None)
    assert read(config, ["a", "c"]) == [(FEBRUARY, 2), (JANUARY, 7)]


def test_counts_and_guard_hold_across_script_calls_and_pipelines(config, monkeypatch) -> None:
    """Two users a script call and three calls a pipeline: 11 users take four pipelines, the
    last one partly filled, and every call's count is summed."""
    monkeypatch.setattr("streamflow.adapters.online_store._REDIS_CHUNK", 2)
    monkeypatch.setattr("streamflow.adapters.online_store._REDIS_PIPELINE", 3)
    users = [f"user-{n}" for n in range(11)]
    write(config, users[::2], 2, FEBRUARY)  # every other user is newer online
    stats = write(config, users, 1, JANUARY)
    assert (stats.offered, stats.written, stats.skipped_as_older) == (11, 5, 6)
    assert read(config, users) == [(FEBRUARY, 2), (JANUARY, 1)] * 5 + [(FEBRUARY, 2)]
