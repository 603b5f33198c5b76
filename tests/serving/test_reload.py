"""Hot reload through TestClient: promotions are picked up, failed loads keep the old model."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient

from serving.app import create_app
from streamflow.adapters.registry import CHAMPION_ALIAS, MODEL_NAME
from tests.serving.conftest import KNOWN_USER, serving_settings

pytestmark = pytest.mark.slow

INTERVAL = 0.5
# A poll every INTERVAL plus a model load (download, compile, check): well under a second.
PICKUP = INTERVAL + 5.0


def registry_of(data_dir: Path) -> MlflowClient:
    settings = serving_settings(data_dir)
    return MlflowClient(settings.tracking_uri, settings.tracking_uri)


def promote(registry: MlflowClient, version: str) -> None:
    """As the production_model asset does: move the champion alias."""
    registry.set_registered_model_alias(MODEL_NAME, CHAMPION_ALIAS, version)


def champion(registry: MlflowClient) -> str:
    return str(registry.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS).version)


def predict_until(
    client: TestClient, done: Callable[[], bool], timeout: float
) -> tuple[float, list[int]]:
    """Predict in a loop until `done()`; every answer's status, and how long it took."""
    started = time.monotonic()
    statuses = []
    while not done():
        assert time.monotonic() - started < timeout, "the server did not pick up the change"
        statuses.append(client.post("/predict", json={"user_id": KNOWN_USER}).status_code)
        time.sleep(0.02)
    return time.monotonic() - started, statuses


def test_a_promotion_is_picked_up_within_the_interval(data_dir_copy: Path) -> None:
    registry = registry_of(data_dir_copy)
    before = champion(registry)
    other = next(
        str(v.version) for v in registry.search_model_versions() if str(v.version) != before
    )
    settings = serving_settings(data_dir_copy, reload_interval_seconds=INTERVAL)
    with TestClient(create_app(settings)) as client:
        assert client.get("/model").json()["version"] == before
        promote(registry, other)
        took, statuses = predict_until(
            client, lambda: client.get("/model").json()["version"] == other, PICKUP
        )
        assert took <= PICKUP
        # Not one request failed while the new version loaded and was swapped in.
        assert set(statuses) <= {200}
        model = client.get("/model").json()
        assert "champion" in model["aliases"]
        assert model["reload"]["reloads"] == 2
        assert model["reload"]["failed_version"] is None
        assert model["partition"] == "2024-01"
        predicted = client.post("/predict", json={"user_id": KNOWN_USER}).json()
        assert predicted["model"]["version"] == other
        # The poller counts the load once it has returned, a moment after the swap /model shows.
        loaded = 'streamflow_model_reloads_total{outcome="loaded"} 2.0'
        predict_until(client, lambda: loaded in client.get("/metrics").text, PICKUP)
        assert f"streamflow_model_version {float(other)}" in client.get("/metrics").text


def test_an_alias_move_is_picked_up(data_dir_copy: Path) -> None:
    registry = registry_of(data_dir_copy)
    settings = serving_settings(
        data_dir_copy,
        reload_interval_seconds=INTERVAL,
        model_uri=f"models:/{MODEL_NAME}@{CHAMPION_ALIAS}",
    )
    with TestClient(create_app(settings)) as client:
        before = client.get("/model").json()["version"]
        other = next(
            str(v.version) for v in registry.search_model_versions() if str(v.version) != before
        )
        registry.set_registered_model_alias(MODEL_NAME, CHAMPION_ALIAS, other)
        predict_until(client, lambda: client.get("/model").json()["version"] == other, PICKUP)


def test_a_version_that_fails_to_load_keeps_the_old_one_serving(
    data_dir_copy: Path, tmp_path: Path
) -> None:
    registry = registry_of(data_dir_copy)
    before = registry.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS)
    # A registered version whose model directory has no ONNX twin.
    empty_model = tmp_path / "empty_model"
    empty_model.mkdir()
    (empty_model / "MLmodel").write_text("flavors: {}\n")
    broken = registry.create_model_version(
        MODEL_NAME,
        source=empty_model.as_uri(),
        tags={"feature_service": "churn_model_v1", "as_of": "2024-03-31"},
    )
    settings = serving_settings(data_dir_copy, reload_interval_seconds=INTERVAL)
    with TestClient(create_app(settings)) as client:
        promote(registry, str(broken.version))
        _, statuses = predict_until(
            client,
            lambda: client.get("/model").json()["reload"]["failed_version"] == str(broken.version),
            PICKUP,
        )
        assert set(statuses) <= {200}
        model = client.get("/model").json()
        assert model["version"] == str(before.version)
        assert f"loading v{str(broken.version)} failed" in model["reload"]["last_error"]
        assert model["reload"]["failures"] >= 1
        response = client.post("/predict", json={"user_id": KNOWN_USER})
        assert response.status_code == 200
        assert response.json()["model"]["version"] == str(before.version)
        assert client.get("/ready").status_code == 200
        metrics = client.get("/metrics").text
        assert "streamflow_model_reload_failing 1.0" in metrics
        assert re.search(r'streamflow_model_reloads_total\{outcome="failed"\} [1-9]', metrics)

        # Once the champion alias points at a loadable version again, the failure clears.
        promote(registry, str(before.version))
        predict_until(
            client, lambda: client.get("/model").json()["reload"]["failed_version"] is None, PICKUP
        )
        assert "streamflow_model_reload_failing 0.0" in client.get("/metrics").text


def test_a_version_trained_on_another_feature_service_is_refused(data_dir_copy: Path) -> None:
    registry = registry_of(data_dir_copy)
    before = champion(registry)
    other = next(
        str(v.version) for v in registry.search_model_versions() if str(v.version) != before
    )
    registry.set_model_version_tag(MODEL_NAME, other, "feature_service", "churn_model_v0")
    settings = serving_settings(data_dir_copy, reload_interval_seconds=INTERVAL)
    with TestClient(create_app(settings)) as client:
        promote(registry, other)
        predict_until(
            client,
            lambda: client.get("/model").json()["reload"]["failed_version"] == other,
            PICKUP,
        )
        model = client.get("/model").json()
        assert model["version"] == before
        assert "churn_model_v0" in model["reload"]["last_error"]


def test_polling_off_keeps_the_loaded_version(data_dir_copy: Path) -> None:
    registry = registry_of(data_dir_copy)
    settings = serving_settings(data_dir_copy, reload_interval_seconds=0)
    with TestClient(create_app(settings)) as client:
        before = client.get("/model").json()["version"]
        other = next(
            str(v.version) for v in registry.search_model_versions() if str(v.version) != before
        )
        promote(registry, other)
        time.sleep(1.0)
        assert client.get("/model").json()["version"] == before
