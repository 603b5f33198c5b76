"""Freshness fixtures: real stores built once by real Dagster runs, copied per test; a webhook."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetCheckEvaluation,
    DagsterEventType,
    DagsterInstance,
    SensorResult,
    build_sensor_context,
    instance_for_test,
    materialize,
)

from streamflow.adapters.alerts import read_jsonl
from streamflow.settings import Settings, get_settings
from streamflow_assets.definitions import build_definitions
from streamflow_assets.features.assets import feature_registry, online_features
from streamflow_assets.freshness.checks import freshness_alert_sensor, online_store_freshness
from streamflow_assets.ingestion.assets import monthly_snapshots
from streamflow_assets.partitions import add_seeded_months
from streamflow_assets.resources import build_resources

# "Materializing only its snapshots": the ingestion multi-asset alone, as the issue describes.
SNAPSHOTS_ONLY = [monthly_snapshots]
# A month all the way into the online store, with the freshness check run right after.
ONLINE_MONTH = [monthly_snapshots, feature_registry, online_features, online_store_freshness]


@dataclass(frozen=True)
class World:
    """A data dir (snapshots, Feast registry, online store) and the seeds dir it was built from."""

    data_dir: Path
    seeds_dir: Path

    def copy(self, to: Path) -> World:
        to.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.data_dir, to / "data")
        shutil.copytree(self.seeds_dir, to / "seeds")
        return World(to / "data", to / "seeds")

    @property
    def online_db(self) -> Path:
        return self.data_dir / "feast" / "online.db"

    @property
    def alerts(self) -> list[dict[str, Any]]:
        return read_jsonl(self.data_dir / "alerts.jsonl")


def run_assets(
    settings: Settings, instance: DagsterInstance, partition: str, assets: Sequence
) -> None:
    """A real Dagster run of some assets (and checks) for one month, recorded in `instance`."""
    add_seeded_months(instance, settings.seeds_dir, [partition])
    result = materialize(
        assets, partition_key=partition, instance=instance, resources=build_resources(settings)
    )
    assert result.success


def run_freshness_checks(settings: Settings, instance: DagsterInstance) -> AssetCheckEvaluation:
    """What the schedule runs: the check-only job; returns the check's evaluation."""
    job = build_definitions(settings).resolve_job_def("freshness_checks")
    result = job.execute_in_process(instance=instance)
    (evaluation,) = [
        event.asset_check_evaluation_data
        for event in result.all_events
        if event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
    ]
    return evaluation


class Sensor:
    """The alert sensor evaluated tick by tick, carrying its cursor as the daemon does."""

    def __init__(self, settings: Settings, instance: DagsterInstance):
        resources = build_resources(settings)
        self.resources = {"alerts": resources["alerts"], "freshness": resources["freshness"]}
        self.instance = instance
        self.cursor: str | None = None
        self.results: list[SensorResult] = []

    def tick(self) -> SensorResult:
        with build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources=self.resources
        ) as context:
            result = freshness_alert_sensor(context)
        self.cursor = result.cursor or self.cursor
        self.results.append(result)
        return result

    @property
    def failing(self) -> bool:
        return json.loads(self.cursor)["failing"]


@contextlib.contextmanager
def streamflow_env(world: World) -> Iterator[Settings]:
    """Settings (and the env that Feast's repo and the resources read) for a session fixture."""
    with pytest.MonkeyPatch.context() as env:
        for name in list(os.environ):
            if name.startswith("STREAMFLOW_"):
                env.delenv(name)
        env.setenv("STREAMFLOW_DATA_DIR", str(world.data_dir))
        env.setenv("STREAMFLOW_SEEDS_DIR", str(world.seeds_dir))
        get_settings.cache_clear()
        try:
            yield get_settings()
        finally:
            get_settings.cache_clear()


@pytest.fixture(scope="session")
def session_instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterInstance]:
    with instance_for_test(temp_dir=str(tmp_path_factory.mktemp("dagster_home"))) as instance:
        yield instance


def _seeds(real_seeds: Path, into: Path, *folders: str) -> None:
    for folder in folders:
        shutil.copytree(real_seeds / folder, into / folder)


@pytest.fixture(scope="session")
def january(
    real_seeds: Path, tmp_path_factory: pytest.TempPathFactory, session_instance: DagsterInstance
) -> World:
    """2024-01 ingested and online, by one real run (recorded in `session_instance`)."""
    root = tmp_path_factory.mktemp("january")
    world = World(root / "data", root / "seeds")
    _seeds(real_seeds, world.seeds_dir, "month_000")
    with streamflow_env(world) as settings:
        run_assets(settings, session_instance, "2024-01", ONLINE_MONTH)
    return world


@pytest.fixture(scope="session")
def february_snapshots_only(
    january: World, real_seeds: Path, tmp_path_factory: pytest.TempPathFactory
) -> World:
    """January online; then month_001 lands and only its snapshots are materialized."""
    world = january.copy(tmp_path_factory.mktemp("february_snapshots_only"))
    _seeds(real_seeds, world.seeds_dir, "month_001")
    with streamflow_env(world) as settings, instance_for_test() as instance:
        run_assets(settings, instance, "2024-02", SNAPSHOTS_ONLY)
    return world


@pytest.fixture(scope="session")
def february(february_snapshots_only: World, tmp_path_factory: pytest.TempPathFactory) -> World:
    """Both months online."""
    world = february_snapshots_only.copy(tmp_path_factory.mktemp("february"))
    with streamflow_env(world) as settings, instance_for_test() as instance:
        run_assets(settings, instance, "2024-02", ONLINE_MONTH)
    return world


@pytest.fixture
def world_copy(tmp_path: Path) -> Callable[[World], World]:
    """`world_copy(world)`: a private, writable copy of a session world for one test."""
    return lambda world: world.copy(tmp_path / "world")


@dataclass
class Receiver:
    """A real HTTP server on loopback standing in for Slack: records each POST's JSON body.

    `statuses` are answered in order (then 200), to play a flaky or broken receiver.
    """

    port: int = 0
    statuses: list[int] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/T000/B000/XXXX"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"no_service")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def free_port() -> int:
    """A loopback port nobody listens on (yet): connections to it are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()
