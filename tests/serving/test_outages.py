"""API-side outages on the postgres profile, against the machine's real servers: the MLflow
tracking server stopped and started again, and PostgreSQL cut off behind a TCP proxy."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from mlflow.tracking import MlflowClient

from streamflow.adapters.registry import CHAMPION_ALIAS, MODEL_NAME
from tests.profiles import POSTGRES, throwaway_databases
from tests.serving.conftest import (
    KNOWN_USER,
    REPO_ROOT,
    STREAMFLOW,
    Child,
    clean_env,
    free_port,
    serve,
)
from tests.tcp_proxy import TcpProxy, tcp_proxy

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.postgres]

INTERVAL = 0.5
MLFLOW = REPO_ROOT / ".venv" / "bin" / "mlflow"
STORE = "MonotonicPostgreSQLOnlineStore"


@dataclass
class Tracking:
    """Our own `mlflow server` (Postgres backend, served artifacts) on a fixed free port, so
    that it can be stopped and started again at the same address."""

    command: list[str]
    env: dict[str, str]
    log: Path
    url: str
    child: Child | None = None

    def start(self) -> None:
        self.child = Child.start(self.command, self.env, self.log)
        self.child.wait_for(f"{self.url}/health", 200)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()


@dataclass
class Deployment:
    api: str
    tracking: Tracking
    proxy: TcpProxy


@pytest.fixture(scope="module")
def deployment(real_seeds: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Both real months through `streamflow pipeline` on the postgres profile (throwaway
    databases), then `streamflow serve` reaching PostgreSQL through a proxy the tests cut."""
    scratch = tmp_path_factory.mktemp("outages")
    data_dir = scratch / "data"
    with (
        throwaway_databases("", "_mlflow", "_dagster") as (data, mlflow_db, dagster_db),
        tcp_proxy(POSTGRES["host"], POSTGRES["port"]) as proxy,
    ):
        port = free_port()
        backend = (
            f"postgresql://{POSTGRES['user']}@{POSTGRES['host']}:{POSTGRES['port']}/{mlflow_db}"
        )
        tracking = Tracking(
            [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(port)]
            + ["--workers", "1", "--backend-store-uri", backend]
            + ["--serve-artifacts", "--artifacts-destination", str(scratch / "artifacts")],
            clean_env(data_dir),
            scratch / "mlflow.log",
            f"http://127.0.0.1:{port}",
        )
        profile = {"profile": "postgres", "postgres_db": data, "mlflow_tracking_uri": tracking.url}
        tracking.start()
        api = None
        try:
            pipeline = Child.start(
                [str(STREAMFLOW), "pipeline", "--seeds", str(real_seeds)],
                clean_env(data_dir, **profile)
                | {"DAGSTER_HOME": str(data_dir / "dagster"), "DAGSTER_POSTGRES_DB": dagster_db},
                scratch / "pipeline.log",
            )
            assert pipeline.process.wait(timeout=900) == 0, pipeline.output()
            api, url = serve(
                data_dir,
                scratch / "api.log",
                **profile,
                postgres_port=proxy.port,
                reload_interval_seconds=INTERVAL,
            )
            api.wait_for(f"{url}/ready", 200)
            yield Deployment(url, tracking, proxy)
        finally:
            if api is not None:
                api.stop()
            tracking.stop()


def predict(url: str) -> httpx.Response:
    return httpx.post(f"{url}/predict", json={"user_id": KNOWN_USER}, timeout=10)


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    (value,) = re.findall(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(value)


def wait_until(done: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not done():
        assert time.monotonic() - started < timeout, f"{what} within {timeout}s"
        time.sleep(0.1)
    return time.monotonic() - started


def test_mlflow_down_keeps_serving_and_a_promotion_is_picked_up_once_back(
    deployment: Deployment,
) -> None:
    api, tracking = deployment.api, deployment.tracking
    served = predict(api).json()["model"]["version"]
    unreachable = 'streamflow_model_reload_errors_total{reason="registry_unreachable"}'
    errors_before = metric(api, unreachable)

    tracking.stop()
    wait_until(
        lambda: metric(api, unreachable) >= errors_before + 3,
        timeout=60,
        what="three failed polls counted",
    )
    answer = predict(api)
    assert answer.status_code == 200 and answer.json()["model"]["version"] == served
    assert httpx.get(f"{api}/ready").status_code == 200
    assert metric(api, "streamflow_model_registry_up") == 0
    assert httpx.get(f"{api}/model").json()["reload"]["registry_reachable"] is False

    tracking.start()
    registry = MlflowClient(tracking.url, tracking.url)
    other = next(
        str(v.version)
        for v in registry.search_model_versions(f"name = '{MODEL_NAME}'")
        if str(v.version) != served
    )
    registry.set_registered_model_alias(MODEL_NAME, CHAMPION_ALIAS, other)
    wait_until(
        lambda: httpx.get(f"{api}/model").json()["version"] == other,
        timeout=60,
        what="the promoted version serves",
    )
    assert predict(api).json()["model"]["version"] == other
    assert metric(api, "streamflow_model_registry_up") == 1


def test_postgres_cut_off_answers_503_naming_the_store_and_recovers_without_restart(
    deployment: Deployment,
) -> None:
    api, proxy = deployment.api, deployment.proxy
    assert predict(api).status_code == 200

    proxy.cut()
    try:
        answer = predict(api)
        assert answer.status_code == 503, answer.text
        assert answer.json()["detail"].startswith(f"online store {STORE} unavailable: ")
        batch = httpx.post(f"{api}/predict/batch", json={"user_ids": [KNOWN_USER]}, timeout=10)
        assert batch.status_code == 503 and STORE in batch.json()["detail"]
        features = httpx.get(f"{api}/features/{KNOWN_USER}", timeout=10)
        assert features.status_code == 503 and STORE in features.json()["detail"]
        ready = httpx.get(f"{api}/ready", timeout=10)
        assert ready.status_code == 503 and STORE in ready.json()["detail"]
        assert httpx.get(f"{api}/health", timeout=10).status_code == 200
    finally:
        proxy.restore()
    took = wait_until(lambda: predict(api).status_code == 200, timeout=30, what="recovery")
    assert httpx.get(f"{api}/ready", timeout=10).status_code == 200
    print(f"recovered {took:.2f}s after the proxy came back")
