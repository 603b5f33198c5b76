"""`make stack` processes under supervisord: SIGTERM reaches Dagster-like servers and their
process groups, and `down` stops only what supervisord runs for the data dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import yaml

from streamflow.ops.dagster_home import dagster_postgres_env, use_dagster_home
from streamflow.ops.stack import (
    CODE_SERVER,
    WORKER,
    Service,
    Stack,
    StackSettings,
    Supervisor,
    with_needs,
)
from streamflow.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
# What `dagster-webserver`, `dagster-daemon` and `dagster dev` do at startup
# (dagster._utils.interrupts.setup_interrupt_handlers): SIGTERM gets SIGINT's handler, so a
# process that inherited SIGINT ignored also ignores SIGTERM. It starts a child of its own (as
# the webserver and MLflow start workers) and reports how it ended.
DAGSTER_LIKE = """
import pathlib, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGINT))
out = pathlib.Path(sys.argv[1])
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
out.write_text(f"up {worker.pid}")
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


def wait_for_text(path: Path, expected: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().startswith(expected):
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} never said {expected!r}")


def alive(pid: int) -> bool:
    try:
        # A zombie is gone but for its exit status.
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False


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


def test_down_stops_a_dagster_like_server_and_its_workers_even_if_up_ran_with_sigint_ignored(
    stack: Stack, tmp_path: Path
) -> None:
    report, script = tmp_path / "report", tmp_path / "dagster_like.py"
    script.write_text(DAGSTER_LIKE)
    service = Service("dagster-daemon", [sys.executable, str(script), str(report)], None)
    processes = Supervisor(stack.state_dir, [service], stop_timeout=15)
    with sigint_ignored():
        processes.ensure_daemon(dict(os.environ))
    try:
        pid = processes.start(service)
        worker = int(wait_for_text(report, "up").split()[1])
        assert processes.running() == {"dagster-daemon": pid}

        started = time.monotonic()
        assert processes.shutdown() == ["dagster-daemon"]
        # Interrupted (SIGTERM handled as SIGINT), well before the SIGKILL deadline; the worker
        # it started went with its process group.
        assert report.read_text() == "interrupted"
        assert time.monotonic() - started < 10
        assert not alive(pid) and not alive(worker)
        assert processes.daemon_pid() is None and processes.running() == {}
    finally:
        processes.shutdown()


def test_a_service_that_exits_at_start_is_named_with_its_log(stack: Stack) -> None:
    failing = Service("mlflow", [sys.executable, "-c", "print('no such backend'); exit(3)"], None)
    processes = Supervisor(stack.state_dir, [failing], stop_timeout=15)
    processes.ensure_daemon(dict(os.environ))
    try:
        with pytest.raises(RuntimeError, match=r"mlflow (did not start|exited)") as raised:
            processes.start(failing)
            processes.wait_ready(failing, time.monotonic() + 30)
        assert "no such backend" in str(raised.value)
    finally:
        processes.shutdown()


def test_down_without_supervisord_leaves_alone_the_process_of_a_stale_pid_file(
    stack: Stack,
) -> None:
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    try:
        processes = Supervisor(stack.state_dir, [], stop_timeout=15)
        processes.write_config()
        # What a supervisord that died without cleaning up would leave, the pid since reused.
        (stack.state_dir / "supervisord.pid").write_text(f"{bystander.pid}\n")

        started = time.monotonic()
        assert processes.shutdown() == []
        assert time.monotonic() - started < 10
        time.sleep(0.5)
        assert bystander.poll() is None
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
        home = use_dagster_home(settings)
        assert (home / "dagster.yaml").read_text() == (REPO_ROOT / source).read_text()
    # The postgres instance file reads its server from the StreamFlow settings' one.
    assert os.environ["DAGSTER_POSTGRES_PORT"] == "6543"
    assert os.environ["DAGSTER_POSTGRES_DB"] == "dagster"


def test_down_under_another_profile_stops_the_programs_it_does_not_know_too(stack: Stack) -> None:
    """`make stack PROFILE=cluster` then a plain `make stack-down`: the workers go as well."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    api, worker = Service("api", sleeper, None), Service("celery-worker-1", sleeper, None)
    cluster = Supervisor(stack.state_dir, [api, worker], stop_timeout=15)
    cluster.ensure_daemon(dict(os.environ))
    try:
        pids = [cluster.start(api), cluster.start(worker)]
        plain = Supervisor(stack.state_dir, [api], stop_timeout=15)
        assert plain.shutdown() == ["api", "celery-worker-1"]
        assert not any(alive(pid) for pid in pids)
    finally:
        cluster.shutdown()


def test_the_webserver_and_the_daemon_use_the_stacks_one_code_server(stack: Stack) -> None:
    ours = Stack(stack.settings, StackSettings(code_server_port=4567))
    services = {service.name: service for service in ours.services()}
    code = services[CODE_SERVER]
    assert code.command[1:3] == ["api", "grpc"]
    assert code.command[code.command.index("-p") + 1] == "4567"
    assert code.command[code.command.index("-m") + 1] == "streamflow_assets.definitions"
    workspace = yaml.safe_load(ours.write_workspace().read_text())
    assert workspace == {
        "load_from": [
            {"grpc_server": {"host": "127.0.0.1", "port": 4567, "location_name": "streamflow"}}
        ]
    }
    for name in ("dagster-webserver", "dagster-daemon"):
        command = services[name].command
        assert command[command.index("-w") + 1] == str(ours.workspace)
        # Started after the code server answers, and with it when asked for alone.
        assert services[name].needs == (CODE_SERVER,)
        assert with_needs(services.values(), [name]) == {name, CODE_SERVER}


def test_a_scripts_settings_reach_the_services_whatever_the_callers_environment(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMFLOW_POSTGRES_DB", "the_callers")
    monkeypatch.setenv("STREAMFLOW_REDIS_DB", "3")
    settings = Settings(
        data_dir=stack.settings.data_dir,
        profile="cluster",
        postgres_db="the_scripts",
        redis_db=9,
        celery_broker="amqp://guest:guest@127.0.0.1:5672/vhost",
        seeds_dir=Path("/seeds/here"),
    )
    env = Stack(settings, StackSettings()).environment()
    assert (env["STREAMFLOW_POSTGRES_DB"], env["STREAMFLOW_REDIS_DB"]) == ("the_scripts", "9")
    assert env["STREAMFLOW_CELERY_BROKER"] == "amqp://guest:guest@127.0.0.1:5672/vhost"
    assert env["STREAMFLOW_SEEDS_DIR"] == "/seeds/here"
    assert env["STREAMFLOW_PROFILE"] == "cluster"


# A server that exits at SIGTERM while a child of its process group ignores it (the code server,
# whose run process it stopped waiting for); the child says it is up once it ignores SIGTERM.
LEAVES_A_CHILD = """
import subprocess, sys, time
subprocess.Popen([sys.executable, sys.argv[1], sys.argv[2]])
time.sleep(600)
"""
IGNORES_SIGTERM = """
import os, pathlib, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path(sys.argv[1]).write_text(f"up {os.getpid()}")
time.sleep(600)
"""


def test_down_stops_what_a_program_left_in_its_process_group(stack: Stack, tmp_path: Path) -> None:
    report, parent, child_script = tmp_path / "report", tmp_path / "p.py", tmp_path / "c.py"
    parent.write_text(LEAVES_A_CHILD)
    child_script.write_text(IGNORES_SIGTERM)
    command = [sys.executable, str(parent), str(child_script), str(report)]
    service = Service("dagster-code", command, None)
    processes = Supervisor(stack.state_dir, [service], stop_timeout=15)
    processes.ensure_daemon(dict(os.environ))
    try:
        processes.start(service)
        child = int(wait_for_text(report, "up").split()[1])
        assert processes.shutdown() == ["dagster-code"]
        deadline = time.monotonic() + 10
        while alive(child):
            assert time.monotonic() < deadline, "the child outlived `down`"
            time.sleep(0.1)
    finally:
        processes.shutdown()


def test_the_cluster_stack_runs_one_worker_with_a_pool_process_per_core(tmp_path: Path) -> None:
    """One celery worker per host, `worker_concurrency` steps at a time: two workers of one pool
    process each held 100 MB more idle than one of two (bench/reports/scale_1m3.md)."""
    settings = Settings(data_dir=tmp_path / "data", profile="cluster")
    (worker,) = Stack(settings, StackSettings(worker_concurrency=3)).workers()
    assert worker.name == WORKER
    assert worker.command[-4:] == ["--name", WORKER, "--concurrency", "3"]
    assert Stack(Settings(data_dir=tmp_path / "data"), StackSettings()).workers() == []
