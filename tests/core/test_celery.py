"""The cluster profile's celery setup: one config for runs and workers, a broker preflight."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from streamflow_assets.core.celery import (
    BrokerUnreachable,
    check_broker,
    executor_config,
    write_worker_config,
)
from streamflow_assets.core.settings import Settings
from tests.profiles import free_port


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


def test_workers_read_the_config_the_runs_use(tmp_path: Path) -> None:
    settings = Settings(
        profile="cluster", celery_broker="amqp://guest:guest@127.0.0.1:5672/x", redis_db=7
    )
    written = yaml.safe_load(write_worker_config(settings, tmp_path / "w.yaml").read_text())
    assert written == {"execution": {"config": executor_config(settings)}}
    assert written["execution"]["config"]["backend"] == "redis://127.0.0.1:6379/7"
    assert written["execution"]["config"]["config_source"]["task_acks_late"] is True
