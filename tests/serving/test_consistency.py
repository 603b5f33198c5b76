"""Served features and predictions cannot disagree with Feast's SDK, training, or scikit-learn."""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.features import OnlineFeatureReader
from streamflow_assets.core import months
from streamflow_assets.core.feature_store import open_store, read_online
from streamflow_assets.core.features import (
    FEATURE_NAMES,
    FEATURE_SERVICE,
    FEATURES,
    JOIN_KEY,
    model_inputs,
    to_model_frame,
)
from streamflow_assets.core.registry import MODEL_NAME
from streamflow_assets.core.snapshots import ParquetSnapshotStore
from tests.serving.conftest import serving_settings

pytestmark = pytest.mark.slow

UNKNOWN = ["0000-NOBODY", "9999-ZZZZZ"]


@pytest.fixture(scope="module")
def store(pipeline_data_dir: Path):
    return open_store(serving_settings(pipeline_data_dir))


def same(served: object, sdk: object) -> bool:
    """Equal values of equal types; pandas turns a missing value into None or NaN."""
    if served is None:
        return sdk is None or (isinstance(sdk, float) and math.isnan(sdk))
    return served == sdk


@pytest.mark.parametrize("use_sql", [True, False], ids=["sqlite-query", "online_read"])
def test_the_reader_returns_what_feasts_sdk_returns_for_every_user(
    store, latest_user_ids: list[str], use_sql: bool
) -> None:
    ids = latest_user_ids + UNKNOWN + latest_user_ids[:3]
    served = OnlineFeatureReader(store, use_sql=use_sql).read(ids)
    sdk = store.get_online_features(
        features=store.get_feature_service(FEATURE_SERVICE),
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
    assert served.missing_features(len(latest_user_ids)) == FEATURE_NAMES
    assert served.missing_features(0) == []


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
