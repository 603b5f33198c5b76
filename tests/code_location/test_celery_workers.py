"""The cluster profile's celery setup: one config for runs and workers, a broker preflight."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from dagster import DagsterInstance, execute_job, reconstructable

from streamflow.settings import Settings, get_settings
from streamflow_assets.cluster import QUEUE, BrokerUnreachable, check_broker, executor_config
from tests.cluster import (
    KEPT_MB,
    celery_workers,
    dagster_home,
    group_pids,
    keeping_job,
    rabbitmq_vhost,
    redis_db,
    require_servers,
)
from tests.conftest import child_env
from tests.profiles import free_port, throwaway_databases


def test_a_closed_broker_port_fails_at_once_naming_the_broker_without_its_password() -> None:
    url = f"amqp://guest:s3cret@127.0.0.1:{free_port()}/streamflow"
    started = time.monotonic()
    with pytest.raises(BrokerUnreachable) as raised:
        check_broker(url, timeout=2)
    assert time.monotonic() - started < 10
    message = str(raised.value)
    assert f"celery broker amqp://guest:**@127.0.0.1:{url.rsplit(':', 1)[1]}" in message
    assert "s3cret" not in message
    assert "STREAMFLOW_CELERY_BROKER" in message


WORKER_APP_CONF = """
import json
from streamflow_assets.celery_app import app
print(json.dumps({
    "conf": {key: app.conf[key] for key in ["broker_url", "result_backend", *CONFIG_SOURCE]},
    "queues": [queue.name for queue in app.conf.task_queues],
    "tasks": sorted(app.tasks),
}))
"""


def test_workers_read_the_config_the_runs_use(tmp_path: Path) -> None:
    """The app `celery -A` loads on a worker, from the worker's environment."""
    variables = {
        "STREAMFLOW_PROFILE": "cluster",
        "STREAMFLOW_DATA_DIR": str(tmp_path),
        "STREAMFLOW_CELERY_BROKER": "amqp://guest:guest@127.0.0.1:5672/x",
        "STREAMFLOW_REDIS_DB": "7",
    }
    settings = Settings(
        profile="cluster", celery_broker=variables["STREAMFLOW_CELERY_BROKER"], redis_db=7
    )
    config = executor_config(settings)
    code = f"CONFIG_SOURCE = {sorted(config['config_source'])!r}\n" + WORKER_APP_CONF
    result = subprocess.run(
        [sys.executable, "-c", code], env=child_env(**variables), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert loaded["conf"] == {
        "broker_url": config["broker"],
        "result_backend": "redis://127.0.0.1:6379/7",
        **config["config_source"],
    }
    assert loaded["conf"]["task_acks_late"] is True
    # Celery reads the per-child limit in KiB.
    assert (
        loaded["conf"]["worker_max_memory_per_child"] == settings.celery_worker_max_memory_mb * 1024
    )
    # dagster-celery's queue and its three tasks, as `dagster_celery.app` has them.
    assert loaded["queues"] == [QUEUE]
    assert {"execute_plan", "execute_job", "resume_job"} <= set(loaded["tasks"])


@pytest.mark.cluster
@pytest.mark.postgres
@pytest.mark.slow
def test_a_pool_process_that_keeps_memory_after_a_step_is_replaced_by_a_fresh_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real worker (`streamflow celery-worker`) on a vhost of its own, with the limit at half
    of what the step keeps: the process that ran the step goes, a fresh one under it takes over."""
    require_servers()
    limit_mb = KEPT_MB // 2
    with (
        throwaway_databases("_dagster") as (database,),
        rabbitmq_vhost() as broker,
        redis_db() as db,
    ):
        variables = {
            "STREAMFLOW_PROFILE": "cluster",
            "STREAMFLOW_DATA_DIR": str(tmp_path / "data"),
            "STREAMFLOW_CELERY_BROKER": broker,
            "STREAMFLOW_REDIS_DB": str(db),
            "STREAMFLOW_CELERY_WORKER_MAX_MEMORY_MB": str(limit_mb),
        }
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        settings = get_settings()
        home = dagster_home(settings, tmp_path / "dagster", database)
        for name, value in home.items():
            monkeypatch.setenv(name, value)
        try:
            with (
                celery_workers(settings, child_env(**variables, **home), tmp_path, 1) as (worker,),
                DagsterInstance.get() as instance,
            ):
                with execute_job(reconstructable(keeping_job), instance) as result:
                    assert result.success
                    step_pid = result.output_for_node("keep_memory")
                assert step_pid != os.getpid()
                # It exits once it has answered; celery's pool forks another in its place.
                deadline = time.monotonic() + 60
                while step_pid in group_pids(worker.process.pid):
                    assert time.monotonic() < deadline, "the process that kept memory stayed"
                    time.sleep(0.2)
                # The replacement is forked after the old one is reaped: wait for it to appear.
                while not (others := group_pids(worker.process.pid) - {worker.process.pid}):
                    assert time.monotonic() < deadline, "no pool process left"
                    time.sleep(0.2)
                assert all(
                    psutil.Process(pid).memory_info().rss < limit_mb * 2**20 for pid in others
                )
        finally:
            get_settings.cache_clear()
