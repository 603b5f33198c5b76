"""`make stack`: PostgreSQL, MLflow, Dagster webserver and daemon, and the API, without Docker.

Under the cluster profile also RabbitMQ and Redis (started when down) and two celery workers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from pydantic_settings import BaseSettings, SettingsConfigDict

from streamflow_assets.cli import dagster_postgres_env, dagster_yaml
from streamflow_assets.core.settings import REPO_ROOT, Settings, get_settings

# Every service binds to loopback: the native stack is for one user on one machine.
HOST = "127.0.0.1"
WORKERS = ("celery-worker-1", "celery-worker-2")
SERVICES = ("mlflow", "dagster-webserver", "dagster-daemon", *WORKERS, "api")
# How .ci/run starts the machine's own servers when they are down (both are system services that
# other programs may share: `down` leaves them running).
SYSTEM_SERVERS = {
    "RabbitMQ": (5672, ["rabbitmq-server", "-detached"]),
    "Redis": (
        6379,
        ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379"]
        + ["--save", "", "--appendonly", "no", "--dir", "/var/lib/redis"]
        + ["--logfile", "/var/log/redis/ci.log"],
    ),
}
# Started in between the service and its command: a process started with `&` by a shell inherits
# SIGINT ignored, and Dagster handles SIGTERM as it handles SIGINT, so it would ignore
# `stack down`. Resetting both to their defaults before exec makes SIGTERM stop it again.
_LAUNCHER = (
    "import os, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
    "signal.signal(signal.SIGQUIT, signal.SIG_DFL)\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


class StackSettings(BaseSettings):
    """Ports and databases of the native stack (`STREAMFLOW_STACK_*`); hosts are loopback only."""

    model_config = SettingsConfigDict(env_prefix="STREAMFLOW_STACK_", extra="ignore")

    mlflow_port: int = 5000
    dagster_port: int = 3000
    api_port: int = 8000
    mlflow_db: str = "mlflow"
    dagster_db: str = "dagster"
    mlflow_workers: int = 2
    workspace: Path = REPO_ROOT / "workspace.yaml"
    start_timeout_seconds: float = 180.0
    stop_timeout_seconds: float = 60.0


@dataclass(frozen=True)
class Service:
    """One long-running process of the stack and the URL that answers once it is up."""

    name: str
    command: list[str]
    ready_url: str | None


@dataclass(frozen=True)
class Stack:
    """The native stack of one data dir: its services, environment, and `<data_dir>/stack/`."""

    settings: Settings
    stack: StackSettings

    @property
    def state_dir(self) -> Path:
        return self.settings.data_dir / "stack"

    @property
    def tracking_uri(self) -> str:
        return f"http://{HOST}:{self.stack.mlflow_port}"

    @property
    def dagster_url(self) -> str:
        return f"http://{HOST}:{self.stack.dagster_port}"

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.stack.api_port}"

    def dsn(self, database: str) -> str:
        return dsn(self.settings, database)

    def environment(self) -> dict[str, str]:
        """The services' environment: the caller's, pointed at this stack's servers."""
        s = self.settings
        env = dict(os.environ)
        env.update(
            {
                "STREAMFLOW_PROFILE": s.profile,
                "STREAMFLOW_DATA_DIR": str(s.data_dir),
                "STREAMFLOW_MLFLOW_TRACKING_URI": self.tracking_uri,
                "STREAMFLOW_DAGSTER_UI_URL": self.dagster_url,
                "DAGSTER_HOME": str(self.dagster_home),
            }
        )
        # MLflow 3's server otherwise starts seven job-queue workers (GenAI scorers), each a full
        # MLflow import, for work this project never submits.
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        # The instance file reads these; a caller's own values win (another server, a secret).
        for name, value in dagster_postgres_env(s, self.stack.dagster_db).items():
            env.setdefault(name, value)
        return env

    @property
    def dagster_home(self) -> Path:
        return Path(os.environ.get("DAGSTER_HOME") or self.settings.dagster_home).resolve()

    def services(self) -> list[Service]:
        bin_dir = Path(sys.executable).parent
        workspace = str(self.stack.workspace)
        daemon = [str(bin_dir / "dagster-daemon"), "run", "-w", workspace]
        return [
            Service(
                "mlflow",
                [
                    str(bin_dir / "mlflow"),
                    "server",
                    "--backend-store-uri",
                    self.dsn(self.stack.mlflow_db),
                    "--serve-artifacts",
                    "--artifacts-destination",
                    str(self.settings.data_dir / "mlflow-artifacts"),
                    "--host",
                    HOST,
                    "--port",
                    str(self.stack.mlflow_port),
                    "--workers",
                    str(self.stack.mlflow_workers),
                ],
                f"{self.tracking_uri}/health",
            ),
            Service(
                "dagster-webserver",
                [str(bin_dir / "dagster-webserver"), "-h", HOST, "-p", str(self.stack.dagster_port)]
                + ["-w", workspace],
                f"{self.dagster_url}/server_info",
            ),
            Service("dagster-daemon", daemon, None),
            *self.workers(),
            Service(
                "api",
                [str(bin_dir / "streamflow"), "serve", "--host", HOST]
                + ["--port", str(self.stack.api_port)],
                f"{self.api_url}/health",
            ),
        ]

    def workers(self) -> list[Service]:
        """The cluster profile's celery workers (`streamflow celery-worker`: dagster-celery's)."""
        if self.settings.profile != "cluster":
            return []
        command = [str(Path(sys.executable).parent / "streamflow"), "celery-worker", "--name"]
        return [Service(name, [*command, name], None) for name in WORKERS]

    def pid_file(self, name: str) -> Path:
        return self.state_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.state_dir / f"{name}.log"


def dsn(settings: Settings, database: str) -> str:
    """libpq/SQLAlchemy URL of `database` on StreamFlow's PostgreSQL server."""
    password = quote(settings.postgres_password.get_secret_value(), safe="")
    user = quote(settings.postgres_user, safe="")
    auth = f"{user}:{password}" if password else user
    host = f"{settings.postgres_host}:{settings.postgres_port}"
    return f"postgresql://{auth}@{host}/{quote(database, safe='')}"


def build_stack(settings: Settings | None = None, stack: StackSettings | None = None) -> Stack:
    return Stack(settings or get_settings(), stack or StackSettings())


def ensure_postgres(settings: Settings, timeout: float = 60.0) -> None:
    """Wait for the server; start the machine's own cluster first if it is down.

    The cluster is a system service that other programs may share: `down` leaves it running.
    """
    if _postgres_answers(settings):
        return
    clusters = Path("/etc/postgresql")
    if settings.postgres_host not in (HOST, "localhost") or not clusters.is_dir():
        raise RuntimeError(
            f"PostgreSQL does not answer on {settings.postgres_host}:{settings.postgres_port}"
        )
    for version in sorted(p.name for p in clusters.iterdir()):
        print(f"starting PostgreSQL {version}/main")
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=True
        )
    deadline = time.monotonic() + timeout
    while not _postgres_answers(settings):
        if time.monotonic() > deadline:
            raise RuntimeError(f"PostgreSQL did not accept connections within {timeout:.0f}s")
        time.sleep(0.5)


def ensure_system_servers(timeout: float = 60.0) -> None:
    """The cluster profile's RabbitMQ and Redis: started as .ci/run starts them when down."""
    for name, (port, command) in SYSTEM_SERVERS.items():
        if _port_answers(port):
            continue
        print(f"starting {name}")
        subprocess.run(command, check=True)
        deadline = time.monotonic() + timeout
        while not _port_answers(port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not accept connections on {HOST}:{port}")
            time.sleep(0.5)


def _port_answers(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=2).close()
    except OSError:
        return False
    return True


def _postgres_answers(settings: Settings) -> bool:
    import psycopg

    try:
        with psycopg.connect(_maintenance_dsn(settings), connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def _maintenance_dsn(settings: Settings) -> str:
    return dsn(settings, "postgres")


def create_databases(settings: Settings, names: Iterable[str]) -> list[str]:
    """Create each database that does not exist yet; returns the ones created."""
    import psycopg
    from psycopg import sql

    created = []
    with psycopg.connect(_maintenance_dsn(settings), autocommit=True) as connection:
        for name in dict.fromkeys(names):
            exists = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                created.append(name)
    return created


def drop_databases(settings: Settings, names: Iterable[str]) -> None:
    """Drop each database if it exists, closing the connections still open on it."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(_maintenance_dsn(settings), autocommit=True) as connection:
        for name in names:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def prepare_dagster_home(stack: Stack) -> Path:
    """A DAGSTER_HOME whose dagster.yaml is the profile's instance (kept if already there)."""
    home = stack.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    source = dagster_yaml(stack.settings.profile)
    if not target.exists():
        # The instance of the docker compose stack, in PostgreSQL: the webserver, the daemon and
        # the run workers share it, and so does the `streamflow` CLI under the same profile.
        shutil.copyfile(source, target)
    elif target.read_bytes() != source.read_bytes():
        print(f"keeping {target}, which differs from {source.name}")
    return home


@dataclass(frozen=True)
class Record:
    """What `up` wrote about a process it started: enough to recognise it, not a reused pid."""

    name: str
    pid: int
    start_ticks: int
    command: list[str]

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def read(cls, path: Path) -> Record:
        return cls(**json.loads(path.read_text()))


def _stat(pid: int | str) -> list[str] | None:
    """Fields 3 (state) onwards of /proc/<pid>/stat; None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may hold spaces and parentheses: fields count from the last ')'.
    return stat.rsplit(")", 1)[1].split()


def _start_ticks(pid: int) -> int | None:
    """The running process's start time in clock ticks since boot (None when gone or a zombie)."""
    _reap(pid)
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _group_alive(pgid: int) -> bool:
    """Whether a non-zombie process is left in the process group."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc.iterdir():
        fields = _stat(entry.name) if entry.name.isdigit() else None
        if fields is not None and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def running(stack: Stack) -> dict[str, Record]:
    """The services `up` started that are still running, by name."""
    alive = {}
    for name in SERVICES:
        path = stack.pid_file(name)
        if path.exists():
            record = Record.read(path)
            if _start_ticks(record.pid) == record.start_ticks:
                alive[name] = record
    return alive


def start(stack: Stack, service: Service, env: dict[str, str]) -> Record:
    """Start `service` in its own session (so one signal reaches all its workers), log to file."""
    stack.state_dir.mkdir(parents=True, exist_ok=True)
    with open(stack.log_file(service.name), "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, *service.command],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ticks = _start_ticks(process.pid)
    record = Record(service.name, process.pid, ticks if ticks is not None else -1, service.command)
    stack.pid_file(service.name).write_text(record.to_json())
    return record


def wait_ready(stack: Stack, service: Service, record: Record, deadline: float) -> None:
    """Until the service's URL answers (any HTTP status), or raise with its log's tail."""
    while True:
        if _start_ticks(record.pid) != record.start_ticks:
            raise RuntimeError(f"{service.name} exited:\n{_tail(stack.log_file(service.name))}")
        if service.ready_url is None or _answers(service.ready_url):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{service.name} did not answer {service.ready_url} in time:\n"
                + _tail(stack.log_file(service.name))
            )
        time.sleep(0.5)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def up(stack: Stack, names: Sequence[str] = SERVICES) -> dict[str, Record]:
    """Start the services in `names` that are not running yet, and wait until they answer.

    If one fails to come up, every service this call started is stopped again.
    """
    settings = stack.settings
    ensure_postgres(settings)
    if settings.profile == "cluster":
        ensure_system_servers()
    created = create_databases(
        settings, [settings.postgres_db, stack.stack.mlflow_db, stack.stack.dagster_db]
    )
    if created:
        print(f"created databases: {', '.join(created)}")
    prepare_dagster_home(stack)
    env = stack.environment()
    already = running(stack)
    started: dict[str, Record] = {}
    services = [s for s in stack.services() if s.name in names and s.name not in already]
    for name in already:
        if name in names:
            print(f"{name:<18} already running (pid {already[name].pid})")
    deadline = time.monotonic() + stack.stack.start_timeout_seconds
    # The API loads the champion model at startup: it comes after the tracking server answers
    # (else it starts not ready and waits for its next registry poll).
    waves = [[s for s in services if s.name != "api"], [s for s in services if s.name == "api"]]
    try:
        for wave in waves:
            for service in wave:
                started[service.name] = start(stack, service, env)
            for service in wave:
                wait_ready(stack, service, started[service.name], deadline)
                pid = started[service.name].pid
                print(f"{service.name:<18} pid {pid:<8} {service.ready_url or ''}")
    except BaseException:
        stop_records(stack, list(started.values()))
        raise
    print(f"logs and pids in {stack.state_dir}")
    return started


def stop_records(stack: Stack, records: Sequence[Record]) -> list[str]:
    """SIGTERM each recorded process group, SIGKILL what is left of it after the timeout."""
    signalled = []
    for record in records:
        ticks = _start_ticks(record.pid)
        # A live process under the recorded pid but with another start time is somebody else's:
        # our group is gone (a pid is never reused while its process group has members).
        if ticks is None or ticks == record.start_ticks:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record.pid, signal.SIGTERM)
                signalled.append(record)
    deadline = time.monotonic() + stack.stack.stop_timeout_seconds
    for record in signalled:
        while _group_alive(record.pid) and time.monotonic() < deadline:
            _reap(record.pid)
            time.sleep(0.2)
        if _group_alive(record.pid):
            print(f"{record.name} ignored SIGTERM; killing its process group", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record.pid, signal.SIGKILL)
        _reap(record.pid)
    for record in records:
        stack.pid_file(record.name).unlink(missing_ok=True)
    return [record.name for record in signalled]


def _reap(pid: int) -> None:
    """Collect the exit status when this process is the parent (tests), else nothing to do."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def down(stack: Stack) -> list[str]:
    """Stop exactly the processes `up` recorded under `<data_dir>/stack/`, nothing else."""
    records = [Record.read(stack.pid_file(n)) for n in SERVICES if stack.pid_file(n).exists()]
    stopped = stop_records(stack, records)
    for name in stopped:
        print(f"stopped {name}")
    if not records:
        print(f"nothing recorded in {stack.state_dir}")
    return stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamflow_assets.stack", description=__doc__)
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("services", nargs="*", help=f"some of {', '.join(SERVICES)} (default all)")
    args = parser.parse_args(argv)
    # The native twin of docker-compose.yml runs the same profile unless told otherwise.
    os.environ.setdefault("STREAMFLOW_PROFILE", "postgres")
    get_settings.cache_clear()
    unknown = sorted(set(args.services) - set(SERVICES))
    if unknown:
        parser.error(f"unknown services {unknown}; choose from {', '.join(SERVICES)}")
    stack = build_stack()
    if args.action == "up":
        try:
            up(stack, args.services or SERVICES)
        except RuntimeError as error:
            print(f"stack up failed: {error}", file=sys.stderr)
            return 1
        print(
            f"Dagster UI {stack.dagster_url}  MLflow {stack.tracking_uri}  API {stack.api_url}"
            "  (stop with `make stack-down`)"
        )
    elif args.action == "down":
        down(stack)
    else:
        alive = running(stack)
        for name in SERVICES:
            print(f"{name:<18} {'pid ' + str(alive[name].pid) if name in alive else 'stopped'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
