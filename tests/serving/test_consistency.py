"""Served features and predictions cannot disagree with Feast's SDK, training, or scikit-learn."""

from __future__ import annotations

import asyncio
import contextlib
import math
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import mlflow
import numpy as np
import pytest
from fastapi.testclient import TestClient
from feast import FeatureStore

from serving.app import create_app
from serving.online_features import OnlineFeatureReader, OnlineFeatures
from streamflow.adapters.feature_store import open_store, read_online
from streamflow.adapters.registry import MODEL_NAME
from streamflow.adapters.snapshots import ParquetSnapshotStore
from streamflow.domain import months
from streamflow.domain.features import (
    FEATURE_NAMES,
    FEATURE_SERVICE,
    FEATURES,
    JOIN_KEY,
    model_inputs,
    to_model_frame,
)
from streamflow.domain.seeds import TABLES
from tests.profiles import PROFILES, built_pipeline
from tests.serving.conftest import serving_settings

pytestmark = pytest.mark.slow

UNKNOWN = ["0000-NOBODY", "9999-ZZZZZ"]


@pytest.fixture(scope="module")
def store(pipeline_data_dir: Path):
    return open_store(serving_settings(pipeline_data_dir))


@pytest.fixture(scope="module")
def postgres_store(real_seeds: Path, tmp_path_factory: pytest.TempPathFactory):
    """The postgres profile's store with both real months online (a throwaway database, the
    feature assets only)."""
    data_dir = tmp_path_factory.mktemp("consistency-postgres")
    online = [*(table.snapshot for table in TABLES), "feature_registry", "online_features"]
    with built_pipeline("postgres", data_dir, real_seeds, online) as (settings, _):
        yield open_store(settings)


@pytest.fixture(scope="module", params=PROFILES)
def profile_store(request: pytest.FixtureRequest):
    """The store of each profile with a SQL online store: the local pipeline's, the postgres
    profile's."""
    if request.param == "local":
        return open_store(serving_settings(request.getfixturevalue("pipeline_data_dir")))
    return request.getfixturevalue("postgres_store")


def same(served: object, sdk: object) -> bool:
    """Equal values of equal types; pandas turns a missing value into None or NaN."""
    if served is None:
        return sdk is None or (isinstance(sdk, float) and math.isnan(sdk))
    return served == sdk


def read_on_the_event_loop(reader: OnlineFeatureReader, ids: list[str]) -> OnlineFeatures:
    """Every user as its own concurrent request (as /predict reads), gathered in order."""

    async def each() -> list[OnlineFeatures]:
        return await asyncio.gather(*(reader.read_async([user_id]) for user_id in ids))

    reads = asyncio.run(each())
    assert all(list(read.user_ids) == [user_id] for read, user_id in zip(reads, ids, strict=True))
    return OnlineFeatures(
        ids,
        {name: [read.values[name][0] for read in reads] for name in FEATURE_NAMES},
        {view: [read.event_times[view][0] for read in reads] for view in reader.view_features},
        reader.view_features,
    )


# Per mode: the reader's `use_sql`, and how it reads (the one query in line, or one request per
# user on the event loop); Feast's per-view `online_read` is the reference.
READS = {
    "one-query": (None, OnlineFeatureReader.read),
    "event-loop": (None, read_on_the_event_loop),
    "online_read": (False, OnlineFeatureReader.read),
}


@pytest.mark.parametrize("mode", list(READS))
def test_the_reader_returns_what_feasts_sdk_returns_for_every_user(
    profile_store: FeatureStore, latest_user_ids: list[str], mode: str
) -> None:
    ids = latest_user_ids + UNKNOWN + latest_user_ids[:3]
    use_sql, read = READS[mode]
    served = read(OnlineFeatureReader(profile_store, use_sql=use_sql), ids)
    sdk = profile_store.get_online_features(
        features=profile_store.get_feature_service(FEATURE_SERVICE),
        entity_rows=[{JOIN_KEY: user_id} for user_id in ids],
    ).to_dict(include_event_timestamps=True)
    for feature in FEATURES:
        values = served.values[feature.name]
        assert values == sdk[feature.name], feature.name
        # Same Python types too: ints stay ints, Float32 comes back as float32-rounded floats.
        assert [type(v) for v in values] == [type(v) for v in sdk[feature.name]], feature.name
        # The SDK gives each feature's event time in epoch seconds, 0 for a user not held.
        times = served.event_times[feature.view]
        assert [int(t.timestamp()) if t else 0 for t in times] == sdk[f"{feature.name}__ts"]
        # Every store's event times come back in UTC.
        assert {t.utcoffset() for t in times if t} == {timedelta(0)}, feature.name
    assert served.missing_features(len(latest_user_ids)) == FEATURE_NAMES
    assert served.missing_features(0) == []


@contextlib.contextmanager
def round_trips(connection) -> Iterator[list[int]]:
    """Counts, into the list it yields, the round trips to PostgreSQL on `connection` within
    the block: the Sync messages the client sent, in libpq's trace of the protocol."""
    count: list[int] = []
    with tempfile.TemporaryFile("w+") as trace:
        connection.pgconn.trace(trace.fileno())
        try:
            yield count
        finally:
            connection.pgconn.untrace()
        trace.seek(0)
        # Lines of a message: time, F(rontend) or B(ackend), length, type, ...; a query's
        # text may go on over lines of its own.
        messages = [line.split("\t") for line in trace]
    count.append(sum(m[1:2] == ["F"] and m[3].strip() == "Sync" for m in messages))


@pytest.mark.postgres
def test_a_postgres_read_is_one_round_trip_however_many_users(
    postgres_store, latest_user_ids: list[str]
) -> None:
    reader = OnlineFeatureReader(postgres_store)
    users = latest_user_ids[:50]
    # A statement is prepared at its first read on a connection: one more round trip, once.
    reader.read(users[:1])
    reader.read(users[:2])
    online = postgres_store.provider.online_store
    with online._get_conn(postgres_store.config, autocommit=True) as connection:
        with round_trips(connection) as one:
            reader.read(users[:1])
        with round_trips(connection) as many:
            reader.read(users)
    assert one == many == [1]

    async def requests_at_once() -> tuple[list[int], list[OnlineFeatures]]:
        await reader.read_async(users[:1])
        await reader.read_async(users[:2])
        # The reader's own connection for requests on the event loop.
        with round_trips(reader._async_connection) as trips:
            reads = await asyncio.gather(*(reader.read_async([user]) for user in users))
        return trips, reads

    trips, reads = asyncio.run(requests_at_once())
    assert trips == [1]
    assert [list(read.user_ids) for read in reads] == [[user] for user in users]
    assert all(read.as_of(0) for read in reads)


def test_the_reader_agrees_with_read_online(store, latest_user_ids: list[str]) -> None:
    ids = latest_user_ids[::7] + UNKNOWN
    served = OnlineFeatureReader(store).read(ids)
    frame = read_online(store, ids)
    for name in FEATURE_NAMES:
        sdk = frame[name].tolist()
        assert all(same(v, s) for v, s in zip(served.values[name], sdk, strict=True)), name


def test_served_model_inputs_equal_the_training_inputs(
    pipeline_data_dir: Path, store, latest_user_ids: list[str]
) -> None:
    """The month's training rows (Feast offline store, point in time) and the online features
    of the same users become identical model inputs through the one shared conversion."""
    training = ParquetSnapshotStore(pipeline_data_dir / "snapshots").read(
        "training_dataset", months.as_of("2024-02")
    )
    served = OnlineFeatureReader(store).read(training[JOIN_KEY].tolist())
    online_inputs = model_inputs(served.columns(range(len(training))))
    training_inputs = model_inputs(training)
    assert len(training) == len(latest_user_ids)
    for feature in FEATURES:
        online, offline = online_inputs[feature.name], training_inputs[feature.name]
        if feature.categorical:
            assert online.tolist() == offline.tolist(), feature.name
        else:
            np.testing.assert_array_equal(online, offline, err_msg=feature.name)


def test_served_probabilities_equal_the_scikit_learn_pipeline(
    pipeline_data_dir: Path, store, latest_user_ids: list[str]
) -> None:
    """The ONNX twin behind /predict ranks users as the logged Pipeline does (within 1e-5),
    on features read by Feast's SDK and converted as training converts them."""
    settings = serving_settings(pipeline_data_dir)
    users = latest_user_ids[::20]
    with TestClient(create_app(settings)) as client:
        body = client.post("/predict/batch", json={"user_ids": users}).json()
    version = body["model"]["version"]
    mlflow.set_tracking_uri(settings.tracking_uri)
    pipeline = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{version}")
    expected = np.asarray(pipeline.predict(to_model_frame(read_online(store, users))))[:, 1]
    served = np.array([r["probability"] for r in body["results"]])
    assert [r["user_id"] for r in body["results"]] == users
    np.testing.assert_allclose(served, expected, atol=1e-5)
    clear = np.abs(expected - 0.5) > 1e-5
    predictions = np.array([r["prediction"] for r in body["results"]])
    assert (predictions[clear] == (expected[clear] >= 0.5)).all()
