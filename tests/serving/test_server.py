"""`streamflow serve` as real uvicorn processes over HTTP on loopback, with a real MLflow server."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from mlflow.tracking import MlflowClient

from streamflow.adapters.registry import CHAMPION_ALIAS, MODEL_NAME
from streamflow.domain.features import FEATURE_NAMES
from tests.serving.conftest import (
    KNOWN_USER,
    LATEST_AS_OF,
    REPO_ROOT,
    Child,
    clean_env,
    free_port,
    latest_csv_row,
    serve,
)

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

INTERVAL = 0.5
MLFLOW = REPO_ROOT / ".venv" / "bin" / "mlflow"


@dataclass
class Servers:
    """A: tracking through a real MLflow server; B: strict freshness; C: a missing model."""

    api: str
    strict: str
    no_model: str
    mlflow: Child
    tracking_uri: str


@pytest.fixture(scope="module")
def servers(pipeline_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    scratch = tmp_path_factory.mktemp("servers")
    # Server A's registry is a copy: its test promotes another version.
    data_dir = scratch / "data"
    shutil.copytree(
        pipeline_data_dir, data_dir, ignore=shutil.ignore_patterns("dagster", "snapshots")
    )
    mlflow_port = free_port()
    tracking_uri = f"http://127.0.0.1:{mlflow_port}"
    mlflow = Child.start(
        [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(mlflow_port)]
        + ["--backend-store-uri", f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}"]
        + ["--default-artifact-root", (data_dir / "mlflow" / "artifacts").as_uri()]
        + ["--workers", "1"],
        clean_env(data_dir),
        scratch / "mlflow.log",
    )
    # B and C start while MLflow does; A once MLflow answers, so its first load goes through it.
    strict, strict_url = serve(
        pipeline_data_dir, scratch / "strict.log", strict_freshness=True, max_feature_age_days=1
    )
    no_model, no_model_url = serve(
        pipeline_data_dir, scratch / "no_model.log", model_uri="models:/no_such_model@champion"
    )
    children = [mlflow, strict, no_model]
    try:
        mlflow.wait_for(f"{tracking_uri}/health", 200)
        # The first registry call of a fresh MLflow server is slow (it opens its stores).
        MlflowClient(tracking_uri, tracking_uri).search_model_versions(f"name = '{MODEL_NAME}'")
        api, api_url = serve(
            data_dir,
            scratch / "api.log",
            mlflow_tracking_uri=tracking_uri,
            reload_interval_seconds=INTERVAL,
        )
        children.append(api)
        api.wait_for(f"{api_url}/ready", 200)
        strict.wait_for(f"{strict_url}/ready", 200)
        no_model.wait_for(f"{no_model_url}/health", 200)
        yield Servers(api_url, strict_url, no_model_url, mlflow, tracking_uri)
    finally:
        for child in children:
            child.stop()


def predict(url: str, user_id: str = KNOWN_USER) -> httpx.Response:
    return httpx.post(f"{url}/predict", json={"user_id": user_id}, timeout=10)


def test_every_status_code_over_http(servers: Servers) -> None:
    api = servers.api
    assert httpx.get(f"{api}/health").json() == {"status": "ok"}
    assert httpx.get(f"{api}/ready").status_code == 200
    assert predict(api).status_code == 200
    assert httpx.get(f"{api}/features/{KNOWN_USER}").status_code == 200
    assert httpx.get(f"{api}/model").status_code == 200
    metrics = httpx.get(f"{api}/metrics")
    assert metrics.status_code == 200 and "streamflow_http_requests_total" in metrics.text
    batch = httpx.post(f"{api}/predict/batch", json={"user_ids": [KNOWN_USER, "0000-NOBODY"]})
    assert batch.status_code == 200
    assert batch.json()["unknown_user_ids"] == ["0000-NOBODY"]

    unknown = predict(api, "0000-NOBODY")
    assert unknown.status_code == 404
    assert unknown.json()["detail"]["missing_features"] == FEATURE_NAMES
    assert "error" in unknown.json()["detail"]
    assert httpx.get(f"{api}/features/0000-NOBODY").status_code == 404
    assert httpx.post(f"{api}/predict", json={"user_id": "no spaces"}).status_code == 422
    assert httpx.post(f"{api}/predict", content=b"not json").status_code == 422
    assert httpx.post(f"{api}/predict/batch", json={"user_ids": ["a"] * 1001}).status_code == 422

    stale = predict(servers.strict)
    assert stale.status_code == 409
    assert stale.json()["detail"]["features_as_of"].startswith(LATEST_AS_OF)

    assert httpx.get(f"{servers.no_model}/health").status_code == 200
    not_ready = httpx.get(f"{servers.no_model}/ready")
    assert not_ready.status_code == 503
    assert "no_such_model" in not_ready.json()["detail"]
    assert predict(servers.no_model).status_code == 503


def test_features_used_are_the_latest_csv_values_over_http(
    servers: Servers, real_seeds: Path
) -> None:
    used = predict(servers.api).json()["features_used"]
    row = latest_csv_row(real_seeds, KNOWN_USER)
    assert used["months_active"] == int(row["months_active"])
    assert used["net_service"] == row["net_service"]
    assert used["monthly_fee"] == float(row["monthly_fee"])


def test_batch_results_equal_single_results_over_http(
    servers: Servers, latest_user_ids: list[str]
) -> None:
    ids = latest_user_ids[100:120]
    batch = httpx.post(f"{servers.api}/predict/batch", json={"user_ids": ids}).json()
    assert [predict(servers.api, user_id).json() for user_id in ids] == batch["results"]


def test_a_promotion_is_picked_up_over_http(servers: Servers) -> None:
    registry = MlflowClient(servers.tracking_uri, servers.tracking_uri)
    before = httpx.get(f"{servers.api}/model").json()["version"]
    other = next(
        str(v.version) for v in registry.search_model_versions() if str(v.version) != before
    )
    registry.set_registered_model_alias(MODEL_NAME, CHAMPION_ALIAS, other)
    promoted = time.monotonic()
    while httpx.get(f"{servers.api}/model").json()["version"] != other:
        assert predict(servers.api).status_code == 200
        # One interval, then a load: five registry calls through the MLflow server, which on a
        # busy 2-core machine take up to seconds.
        assert time.monotonic() - promoted < INTERVAL + 10, "promotion not picked up"
        time.sleep(0.05)
    assert predict(servers.api).json()["model"]["version"] == other


def test_predictions_continue_when_mlflow_stops(servers: Servers) -> None:
    served = predict(servers.api).json()["model"]["version"]
    servers.mlflow.stop()
    stopped = time.monotonic()
    while httpx.get(f"{servers.api}/model").json()["reload"]["registry_reachable"]:
        assert time.monotonic() - stopped < 30, "the server never noticed MLflow was gone"
        time.sleep(0.1)
    response = predict(servers.api)
    assert response.status_code == 200
    assert response.json()["model"]["version"] == served
    assert httpx.get(f"{servers.api}/ready").status_code == 200
    assert "streamflow_model_registry_up 0.0" in httpx.get(f"{servers.api}/metrics").text
    # And it keeps answering across further failed polls.
    time.sleep(3 * INTERVAL)
    assert predict(servers.api).status_code == 200
