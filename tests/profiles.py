"""Test environments per profile: local dirs, or throwaway Postgres databases and MLflow."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psycopg
import pytest
from psycopg import sql

from streamflow.settings import Settings, get_settings

if TYPE_CHECKING:
    from dagster import DagsterInstance

REPO = Path(__file__).resolve().parents[1]
PROFILES = ["local", pytest.param("postgres", marks=pytest.mark.postgres)]
# The server the machine runs (trust auth on loopback); .ci/run starts it when it is down.
POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _admin() -> psycopg.Connection:
    try:
        return psycopg.connect(dbname="postgres", autocommit=True, **POSTGRES)
    except psycopg.OperationalError as error:
        raise RuntimeError(
            f"the postgres profile is tested against a real server on {POSTGRES['host']}:"
            f"{POSTGRES['port']}, which is not reachable ({error}); start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
        ) from error


@contextlib.contextmanager
def throwaway_databases(*suffixes: str) -> Iterator[list[str]]:
    """Fresh databases with unique names, dropped (connections and all) afterwards."""
    stem = f"streamflow_test_{uuid.uuid4().hex[:10]}"
    names = [f"{stem}{suffix}" for suffix in suffixes]
    with _admin() as admin:
        for name in names:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield names
    finally:
        with _admin() as admin:
            for name in names:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


@contextlib.contextmanager
def mlflow_server(database: str, artifacts: Path, log: Path) -> Iterator[str]:
    """`mlflow server` with a Postgres backend and served artifacts, on a free loopback port."""
    port = free_port()
    backend = f"postgresql://{POSTGRES['user']}@{POSTGRES['host']}:{POSTGRES['port']}/{database}"
    command = [
        str(REPO / ".venv" / "bin" / "mlflow"), "server", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1", "--backend-store-uri", backend,
        "--serve-artifacts", "--artifacts-destination", str(artifacts),
    ]  # fmt: skip
    # As `make stack` runs it: without the job-queue workers (GenAI scorers) MLflow 3 starts.
    env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "w") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        # Minutes, not seconds, on a two-core machine that other test runs keep busy.
        deadline = time.monotonic() + 300
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@contextlib.contextmanager
def profile(
    name: str, data_dir: Path, seeds: Path, env_vars: Mapping[str, str] | None = None
) -> Iterator[Settings]:
    """The environment of one profile for a test module (and `env_vars`); yields its Settings."""
    with contextlib.ExitStack() as stack:
        env = stack.enter_context(pytest.MonkeyPatch.context())
        for variable in [n for n in os.environ if n.startswith("STREAMFLOW_")]:
            env.delenv(variable)
        env.setenv("STREAMFLOW_PROFILE", name)
        env.setenv("STREAMFLOW_DATA_DIR", str(data_dir))
        env.setenv("STREAMFLOW_SEEDS_DIR", str(seeds))
        for variable, value in (env_vars or {}).items():
            env.setenv(variable, value)
        if name in ("postgres", "cluster"):
            data, tracking, instance = stack.enter_context(
                throwaway_databases("", "_mlflow", "_dagster")
            )
            env.setenv("STREAMFLOW_POSTGRES_DB", data)
            server = mlflow_server(tracking, data_dir / "artifacts", data_dir / "mlflow.log")
            env.setenv("STREAMFLOW_MLFLOW_TRACKING_URI", stack.enter_context(server))
        if name == "cluster":
            from tests.cluster import dagster_home, rabbitmq_vhost, redis_db

            env.setenv("STREAMFLOW_REDIS_DB", str(stack.enter_context(redis_db())))
            env.setenv("STREAMFLOW_CELERY_BROKER", stack.enter_context(rabbitmq_vhost()))
            get_settings.cache_clear()
            home = dagster_home(get_settings(), data_dir / "dagster", instance)
            for variable, value in home.items():
                env.setenv(variable, value)
        get_settings.cache_clear()
        stack.callback(get_settings.cache_clear)
        yield get_settings()


@contextlib.contextmanager
def built_pipeline(
    name: str,
    data_dir: Path,
    seeds: Path,
    assets: list[str] | None = None,
    env_vars: Mapping[str, str] | None = None,
) -> Iterator[tuple[Settings, DagsterInstance]]:
    """Both real months through the monthly pipeline (or just `assets`) under one profile."""
    from dagster import instance_for_test

    from streamflow.ops.pipeline import run_months
    from streamflow_assets.definitions import build_definitions

    with (
        profile(name, data_dir, seeds, env_vars) as settings,
        instance_for_test() as instance,
    ):
        outcomes = run_months(
            ["2024-01", "2024-02"],
            defs=build_definitions(settings),
            instance=instance,
            assets=assets,
        )
        assert all(o.success for o in outcomes), [o.error for o in outcomes]
        yield settings, instance
