"""Serving fixtures: stores built once by the real pipeline, apps and servers over them."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from filelock import FileLock

from streamflow.settings import ServingSettings
from tests.conftest import child_env

REPO_ROOT = Path(__file__).resolve().parents[2]
STREAMFLOW = REPO_ROOT / ".venv" / "bin" / "streamflow"
LATEST_MONTH = "month_001"
LATEST_AS_OF = "2024-02-29"
KNOWN_USER = "7590-VHVEG"


class IsolatedSettings(ServingSettings):
    """Serving settings from keyword arguments only: a developer's STREAMFLOW_* cannot leak in."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, *sources, **named):
        return (init_settings,)


def serving_settings(data_dir: Path, **overrides: object) -> ServingSettings:
    """Settings over a pipeline-built data dir; no polling unless a test asks for it."""
    return IsolatedSettings(data_dir=data_dir, **{"reload_interval_seconds": 0, **overrides})


@pytest.fixture(scope="session")
def pipeline_data_dir(
    real_seeds: Path, tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> Path:
    """Both real months through `streamflow pipeline`, once per test run: snapshots, the Feast
    registry and online store, and MLflow with v1 (2024-01) and v2 (2024-02, champion).

    Under `make test`'s xdist workers the first worker to need it builds it in their shared temp
    folder while the other waits for it: the serving files are spread over both workers, and
    each would otherwise run the pipeline again (about two minutes on a loaded machine)."""
    if worker_id == "master":
        return _build_pipeline_data_dir(real_seeds, tmp_path_factory.mktemp("serving") / "data")
    shared = tmp_path_factory.getbasetemp().parent / "serving-pipeline"
    built = shared / "built"
    with FileLock(shared.with_suffix(".lock")):
        if not built.exists():
            shutil.rmtree(shared, ignore_errors=True)  # a build that failed part way
            _build_pipeline_data_dir(real_seeds, shared / "data")
            built.touch()
    return shared / "data"


def _build_pipeline_data_dir(seeds: Path, data_dir: Path) -> Path:
    result = subprocess.run(
        [str(STREAMFLOW), "pipeline", "--seeds", str(seeds)],
        env={**clean_env(data_dir), "DAGSTER_HOME": str(data_dir / "dagster")},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return data_dir


@pytest.fixture
def data_dir_copy(pipeline_data_dir: Path, tmp_path: Path) -> Path:
    """A copy of the pipeline's stores for a test that changes the registry. Its versions still
    read their artifacts from the original data dir, which nobody changes."""
    copy = tmp_path / "data"
    shutil.copytree(pipeline_data_dir, copy, ignore=shutil.ignore_patterns("dagster", "snapshots"))
    return copy


def clean_env(data_dir: Path, **settings: object) -> dict[str, str]:
    """The environment of a child process: no STREAMFLOW_*/DAGSTER_* but the ones given."""
    named = {f"STREAMFLOW_{name.upper()}": str(value) for name, value in settings.items()}
    return child_env(STREAMFLOW_DATA_DIR=str(data_dir), **named)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Child:
    """A process a test started, in its own process group, with its output in a log file."""

    process: subprocess.Popen
    log: Path

    @classmethod
    def start(cls, command: list[str], env: dict[str, str], log: Path) -> Child:
        with open(log, "w") as out:
            process = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return cls(process, log)

    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, url: str, status: int | None = None, timeout: float = 240) -> None:
        """Until `url` answers (with `status`, when given), or fail with the child's output."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.process.args} exited with {self.process.returncode}:\n{self.output()}"
                )
            try:
                answer = httpx.get(url, timeout=5)
                if status is None or answer.status_code == status:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"{url} did not answer within {timeout}s:\n{self.output()}")

    def stop(self) -> None:
        """Terminate the child's process group (its workers too) and reap it."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def serve(data_dir: Path, log: Path, **settings: object) -> tuple[Child, str]:
    """`streamflow serve` over `data_dir` on a free loopback port; the child and its URL."""
    port = free_port()
    child = Child.start(
        [str(STREAMFLOW), "serve", "--host", "127.0.0.1", "--port", str(port)],
        clean_env(data_dir, **settings),
        log,
    )
    return child, f"http://127.0.0.1:{port}"


def latest_csv_row(seeds: Path, user_id: str) -> dict[str, str]:
    """Every column of a user's row in the latest month's CSVs (each has one row per user)."""
    row: dict[str, str] = {}
    for path in sorted((seeds / LATEST_MONTH).glob("*.csv")):
        with open(path, newline="") as source:
            for record in csv.DictReader(source):
                if record["user_id"] == user_id:
                    row.update(record)
                    break
    return row


@pytest.fixture(scope="session")
def latest_user_ids(real_seeds: Path) -> list[str]:
    with open(real_seeds / LATEST_MONTH / "users.csv", newline="") as source:
        return [record["user_id"] for record in csv.DictReader(source)]


@pytest.fixture(scope="session")
def api_url(pipeline_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `streamflow serve` over the pipeline's stores (read only), ready; its base URL."""
    child, url = serve(pipeline_data_dir, tmp_path_factory.mktemp("api") / "api.log")
    try:
        child.wait_for(f"{url}/ready", 200)
        yield url
    finally:
        child.stop()
