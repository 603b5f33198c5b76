"""`make stack` processes: SIGTERM reaches Dagster-like servers, and only what was started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from streamflow_assets.cli import dagster_postgres_env, prepare_dagster_home
from streamflow_assets.core.settings import Settings
from streamflow_assets.stack import (
    Record,
    Service,
    Stack,
    StackSettings,
    _group_alive,
    _start_ticks,
    down,
    start,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
# What `dagster-webserver`, `dagster-daemon` and `dagster dev` do at startup
# (dagster._utils.interrupts.setup_interrupt_handlers): SIGTERM gets SIGINT's handler, so a
# process that inherited SIGINT ignored also ignores SIGTERM. It reports how it ended.
DAGSTER_LIKE = """
import pathlib, signal, sys, time
signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGINT))
out = pathlib.Path(sys.argv[1])
out.write_text("up")
try:
    time.sleep(600)
except KeyboardInterrupt:
    out.write_text("interrupted")
"""


@contextmanager
def sigint_ignored() -> Iterator[None]:
    """As in a shell script's `cmd &`: children inherit SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def wait_for_text(path: Path, expected: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text() == expected:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never said {expected!r}")


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    settings = Settings(data_dir=tmp_path / "data")
    return Stack(settings, StackSettings(stop_timeout_seconds=15))


def test_the_trap_is_real_a_dagster_like_server_started_with_sigint_ignored_ignores_sigterm(
    tmp_path: Path,
) -> None:
    report = tmp_path / "report"
    with sigint_ignored():
        child = subprocess.Popen([sys.executable, "-c", DAGSTER_LIKE, str(report)])
    try:
        wait_for_text(report, "up")
        child.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=1.5)
    finally:
        child.kill()
        child.wait()


def test_stack_down_stops_a_dagster_like_server_with_sigterm_even_if_started_with_sigint_ignored(
    stack: Stack, tmp_path: Path
) -> None:
    report = tmp_path / "report"
    service = Service("dagster-daemon", [sys.executable, "-c", DAGSTER_LIKE, str(report)], None)
    with sigint_ignored():
        record = start(stack, service, dict(os.environ))
    wait_for_text(report, "up")
    assert stack.pid_file("dagster-daemon").exists()

    started = time.monotonic()
    assert down(stack) == ["dagster-daemon"]
    # Interrupted (SIGTERM handled as SIGINT), well before the SIGKILL deadline.
    assert report.read_text() == "interrupted"
    assert time.monotonic() - started < 10
    assert not _group_alive(record.pid)
    assert not stack.pid_file("dagster-daemon").exists()


def test_stack_down_leaves_alone_a_process_whose_pid_was_recorded_but_reused(
    stack: Stack,
) -> None:
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    try:
        stack.state_dir.mkdir(parents=True)
        ticks = _start_ticks(bystander.pid)
        assert ticks is not None
        # A record of an earlier process that happened to have the bystander's pid.
        stale = Record("mlflow", bystander.pid, ticks - 1, ["mlflow", "server"])
        stack.pid_file("mlflow").write_text(stale.to_json())

        started = time.monotonic()
        assert down(stack) == []
        # Not even waited for, let alone killed.
        assert time.monotonic() - started < 1
        time.sleep(0.5)
        assert bystander.poll() is None
        assert not stack.pid_file("mlflow").exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_the_stack_points_every_service_at_its_own_servers_and_postgres_instance(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith(("DAGSTER_", "STREAMFLOW_")):
            monkeypatch.delenv(name)
    settings = Settings(
        data_dir=stack.settings.data_dir, profile="postgres", postgres_user="sf", postgres_port=6543
    )
    env = Stack(settings, StackSettings(dagster_db="dagster_x", mlflow_port=5999)).environment()
    assert env["STREAMFLOW_PROFILE"] == "postgres"
    assert env["STREAMFLOW_MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5999"
    assert env["DAGSTER_HOME"] == str(settings.data_dir / "dagster")
    assert (env["DAGSTER_POSTGRES_USER"], env["DAGSTER_POSTGRES_PORT"]) == ("sf", "6543")
    assert (env["DAGSTER_POSTGRES_DB"], env["DAGSTER_POSTGRES_PASSWORD"]) == ("dagster_x", "")


def test_prepare_dagster_home_gives_each_profile_its_instance_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Registered with monkeypatch (set, then unset), so what the function sets is undone too.
    for name in ("DAGSTER_HOME", *dagster_postgres_env(Settings())):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    for profile, source in (("local", "dagster.yaml"), ("postgres", "dagster.postgres.yaml")):
        monkeypatch.delenv("DAGSTER_HOME", raising=False)
        settings = Settings(data_dir=tmp_path / profile, profile=profile, postgres_port=6543)
        home = prepare_dagster_home(settings)
        assert (home / "dagster.yaml").read_text() == (REPO_ROOT / source).read_text()
    # The postgres instance file reads its server from the StreamFlow settings' one.
    assert os.environ["DAGSTER_POSTGRES_PORT"] == "6543"
    assert os.environ["DAGSTER_POSTGRES_DB"] == "dagster"
