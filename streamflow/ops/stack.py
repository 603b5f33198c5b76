"""`make stack`: PostgreSQL, MLflow, Dagster's code server, webserver and daemon, and the API,
without Docker, as supervisord programs.

Dagster runs as it is deployed: one long-lived code server (`dagster api grpc`) that the
webserver, the daemon and the runs they launch use, through a workspace of one `grpc_server`.
Under the cluster profile also RabbitMQ and Redis (started when down) and two celery workers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xmlrpc.client
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import tenacity
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from supervisor.xmlrpc import SupervisorTransport

from streamflow.ops.dagster_home import dagster_home, dagster_postgres_env, prepare_dagster_home
from streamflow.settings import REPO_ROOT, Settings, get_settings

# Every service binds to loopback: the native stack is for one user on one machine.
HOST = "127.0.0.1"
WORKER = "celery-worker"
CODE_SERVER = "dagster-code"
SERVICES = ("mlflow", CODE_SERVER, "dagster-webserver", "dagster-daemon", WORKER, "api")
# The code location's name in the workspace (the UI's /locations/streamflow/...).
LOCATION = "streamflow"
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


class StackSettings(BaseSettings):
    """Ports and databases of the native stack (`STREAMFLOW_STACK_*`); hosts are loopback only."""

    model_config = SettingsConfigDict(env_prefix="STREAMFLOW_STACK_", extra="ignore")

    mlflow_port: int = 5000
    dagster_port: int = 3000
    code_server_port: int = 4000
    api_port: int = 8000
    mlflow_db: str = "mlflow"
    dagster_db: str = "dagster"
    # One uvicorn worker serves a one-user stack (MLflow's app runs requests in threads); each
    # more is another full MLflow import (about 270 MB) besides the `mlflow server` process.
    mlflow_workers: int = 1
    # The cluster profile's one celery worker on this machine, its pool a process per step at a
    # time (celery's advice: a worker per host, as many pool processes as cores). Two workers of
    # one process each held 192 MB idle apiece; one worker of two held 281 MB.
    worker_concurrency: int = Field(default=2, ge=1)
    start_timeout_seconds: float = 180.0
    stop_timeout_seconds: float = 60.0


@dataclass(frozen=True)
class Service:
    """One long-running process of the stack, the URL that answers once it is up (`tcp://` for a
    server that opens its port only when ready), and the services it needs up first."""

    name: str
    command: list[str]
    ready_url: str | None
    needs: tuple[str, ...] = ()


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

    @property
    def workspace(self) -> Path:
        """The workspace of the webserver and the daemon: the stack's code server."""
        return self.state_dir / "workspace.yaml"

    def dsn(self, database: str) -> str:
        return dsn(self.settings, database)

    def write_workspace(self) -> Path:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.workspace.write_text(
            "load_from:\n  - grpc_server:\n"
            f"      host: {HOST}\n      port: {self.stack.code_server_port}\n"
            f"      location_name: {LOCATION}\n"
        )
        return self.workspace

    def environment(self) -> dict[str, str]:
        """The services' environment: the caller's, with every StreamFlow setting of this stack
        (a script's Settings reach the services as they are), pointed at its servers."""
        s = self.settings
        env = dict(os.environ)
        env.update(settings_env(s))
        env.update(
            {
                "STREAMFLOW_MLFLOW_TRACKING_URI": self.tracking_uri,
                "STREAMFLOW_DAGSTER_UI_URL": self.dagster_url,
                "DAGSTER_HOME": str(self.dagster_home),
            }
        )
        # A launch asks the code server to start the run's process and waits until that process
        # has imported the code location: minutes, not Dagster's default minute, on a busy
        # two-core machine (a backfill's run then failed with DagsterUserCodeUnreachableError).
        env.setdefault("DAGSTER_GRPC_TIMEOUT_SECONDS", "600")
        # The instance file reads these; a caller's own values win (another server, a secret).
        for name, value in dagster_postgres_env(s, self.stack.dagster_db).items():
            env.setdefault(name, value)
        return env

    @property
    def dagster_home(self) -> Path:
        return dagster_home(self.settings)

    def services(self) -> list[Service]:
        bin_dir = Path(sys.executable).parent
        workspace = str(self.workspace)
        daemon = [str(bin_dir / "dagster-daemon"), "run", "-w", workspace]
        code_port = str(self.stack.code_server_port)
        return [
            Service(
                "mlflow",
                [
                    sys.executable,
                    "-m",
                    "streamflow.ops.mlflow_server",
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
            # The code location, loaded once; the runs it launches are its children. Dagster's
            # gRPC server itself rather than `dagster code-server start`, whose proxy process
            # (100 MB idle) only adds reloading the code from the UI: after a code change,
            # restart this program (`supervisorctl restart dagster-code`).
            Service(
                CODE_SERVER,
                [str(bin_dir / "dagster"), "api", "grpc", "-h", HOST, "-p", code_port]
                + ["-m", "streamflow_assets.definitions", "--location-name", LOCATION],
                # Dagster's gRPC server binds its port once the code is loaded.
                f"tcp://{HOST}:{code_port}",
            ),
            Service(
                "dagster-webserver",
                [str(bin_dir / "dagster-webserver"), "-h", HOST, "-p", str(self.stack.dagster_port)]
                + ["-w", workspace],
                f"{self.dagster_url}/server_info",
                needs=(CODE_SERVER,),
            ),
            Service("dagster-daemon", daemon, None, needs=(CODE_SERVER,)),
            *self.workers(),
            # The API loads the champion model at startup: after the tracking server answers
            # (else it starts not ready and waits for its next registry poll).
            Service(
                "api",
                [str(bin_dir / "streamflow"), "serve", "--host", HOST]
                + ["--port", str(self.stack.api_port)],
                f"{self.api_url}/health",
                needs=("mlflow",),
            ),
        ]

    def workers(self) -> list[Service]:
        """The cluster profile's celery worker (`streamflow celery-worker`, celery's worker)."""
        if self.settings.profile != "cluster":
            return []
        command = [str(Path(sys.executable).parent / "streamflow"), "celery-worker"]
        options = ["--name", WORKER, "--concurrency", str(self.stack.worker_concurrency)]
        return [Service(WORKER, [*command, *options], None)]


def dsn(settings: Settings, database: str) -> str:
    """libpq/SQLAlchemy URL of `database` on StreamFlow's PostgreSQL server."""
    password = quote(settings.postgres_password.get_secret_value(), safe="")
    user = quote(settings.postgres_user, safe="")
    auth = f"{user}:{password}" if password else user
    host = f"{settings.postgres_host}:{settings.postgres_port}"
    return f"postgresql://{auth}@{host}/{quote(database, safe='')}"


def settings_env(settings: Settings) -> dict[str, str]:
    """Every setting as the `STREAMFLOW_*` variable that sets it (unset ones left out)."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[f"STREAMFLOW_{name.upper()}"] = str(value)
    return env


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
    wait_until(
        lambda: _postgres_answers(settings),
        timeout,
        lambda: f"PostgreSQL did not accept connections within {timeout:.0f}s",
    )


def ensure_system_servers(timeout: float = 60.0) -> None:
    """The cluster profile's RabbitMQ and Redis: started as .ci/run starts them when down."""
    for name, (port, command) in SYSTEM_SERVERS.items():
        if _port_answers(port):
            continue
        print(f"starting {name}")
        subprocess.run(command, check=True)
        wait_until(
            lambda port=port: _port_answers(port),
            timeout,
            lambda name=name, port=port: f"{name} did not accept connections on {HOST}:{port}",
        )


def _port_answers(port: int) -> bool:
    return _answers(f"tcp://{HOST}:{port}")


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


class Supervisor:
    """supervisord over a state dir: one program per service, each in its own process group
    (its workers are stopped with it), its output in `<name>.log`; driven through supervisord's
    XML-RPC interface on its unix socket.

    The process runner is supervisord's; only the readiness waits (an HTTP answer) are ours.
    """

    def __init__(self, state_dir: Path, services: Sequence[Service] = (), stop_timeout=60.0):
        self.state_dir = state_dir
        self.services = list(services)
        self.stop_timeout = stop_timeout
        self.config = state_dir / "supervisord.conf"

    def log_file(self, name: str) -> Path:
        return self.state_dir / f"{name}.log"

    def write_config(self) -> None:
        state = self.state_dir
        sections = [
            f"[unix_http_server]\nfile={self.socket}\nchmod=0700",
            f"[supervisord]\nlogfile={state / 'supervisord.log'}\n"
            f"pidfile={state / 'supervisord.pid'}\ndirectory={REPO_ROOT}",
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            # For a user's own `supervisorctl -c <this file>` (README).
            f"[supervisorctl]\nserverurl=unix://{self.socket}",
        ]
        for priority, service in enumerate(self.services, start=1):
            # Values are Python %-format strings to supervisord: a literal % is written %%.
            command = shlex.join(service.command).replace("%", "%%")
            if "\n" in command:
                raise ValueError(f"{service.name}: a supervisord command is one line: {command!r}")
            sections.append(
                f"[program:{service.name}]\ncommand={command}\ndirectory={REPO_ROOT}\n"
                # Started by `up` in order, never restarted behind its back: a service that
                # exits is reported with its log, not hidden by a restart loop. One that exits
                # within its first second fails its start (supervisord's startsecs).
                f"priority={priority}\nautostart=false\nautorestart=false\nstartsecs=1\n"
                f"stopasgroup=true\nkillasgroup=true\nstopwaitsecs={self.stop_timeout:.0f}\n"
                f"stdout_logfile={self.log_file(service.name)}\nredirect_stderr=true"
            )
        state.mkdir(parents=True, exist_ok=True)
        # The commands hold the database URLs, passwords included: for this user's eyes only.
        self.config.touch(mode=0o600)
        self.config.chmod(0o600)
        self.config.write_text("\n\n".join(sections) + "\n")

    @property
    def socket(self) -> Path:
        return self.state_dir / "supervisor.sock"

    def rpc(self) -> Any:
        """supervisord's XML-RPC namespace (`supervisor.*`), as supervisorctl reaches it."""
        transport = SupervisorTransport(None, None, serverurl=f"unix://{self.socket}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def running(self) -> dict[str, int]:
        """The pids of the programs running now, by name; empty when supervisord is not running."""
        try:
            processes = self.rpc().getAllProcessInfo()
        except (OSError, xmlrpc.client.Fault):  # not running, or shutting down
            return {}
        return {p["name"]: p["pid"] for p in processes if p["statename"] == "RUNNING"}

    def daemon_pid(self) -> int | None:
        try:
            return self.rpc().getPID()
        except (OSError, xmlrpc.client.Fault):  # not running, or shutting down
            return None

    def update(self) -> None:
        """Make a running supervisord take the programs of the rewritten config, as
        `supervisorctl update` does: removed and changed programs stopped and dropped, new ones
        added (not started)."""
        rpc = self.rpc()
        [[added, changed, removed]] = rpc.reloadConfig()
        for name in [*removed, *changed]:
            rpc.stopProcessGroup(name)
            rpc.removeProcessGroup(name)
        for name in [*changed, *added]:
            rpc.addProcessGroup(name)

    def ensure_daemon(self, env: dict[str, str], timeout: float = 30.0) -> None:
        """Start supervisord (it detaches) with the services' environment, or make a running one
        read the current programs."""
        self.write_config()
        if self.daemon_pid() is not None:
            self.update()
            return
        supervisord = str(Path(sys.executable).with_name("supervisord"))
        subprocess.run([supervisord, "-c", str(self.config)], env=env, check=True)
        wait_until(
            lambda: self.daemon_pid() is not None,
            timeout,
            lambda: (
                f"supervisord did not answer in {timeout:.0f}s:\n"
                + _tail(self.state_dir / "supervisord.log")
            ),
            interval=0.2,
        )

    def start(self, service: Service) -> int:
        answer = "started"
        try:
            self.rpc().startProcess(service.name, True)
        except xmlrpc.client.Fault as fault:
            answer = fault.faultString
        pid = self.running().get(service.name)
        if pid is None:
            raise RuntimeError(
                f"{service.name} did not start: {answer}\n" + _tail(self.log_file(service.name))
            )
        return pid

    def wait_ready(self, service: Service, deadline: float) -> None:
        """Until the service's URL answers (any HTTP status), or raise with its log's tail."""

        def ready() -> bool:
            if service.name not in self.running():
                raise RuntimeError(f"{service.name} exited:\n{_tail(self.log_file(service.name))}")
            return service.ready_url is None or _answers(service.ready_url)

        wait_until(
            ready,
            max(0.0, deadline - time.monotonic()),
            lambda: (
                f"{service.name} did not answer {service.ready_url} in time:\n"
                + _tail(self.log_file(service.name))
            ),
        )

    def stop(self, names: Sequence[str]) -> None:
        rpc = self.rpc()
        for name in names:
            # One that already exited is stopped.
            with contextlib.suppress(xmlrpc.client.Fault):
                rpc.stopProcess(name, True)

    def shutdown(self) -> list[str]:
        """Stop every program (SIGTERM to its process group, SIGKILL after the stop timeout) and
        supervisord itself; returns the programs that were running."""
        pid = self.daemon_pid()
        if pid is None:
            return []
        # In start order; a program of another profile's `up` (celery workers) goes too.
        order = {service.name: index for index, service in enumerate(self.services)}
        groups = self.running()
        was_running = sorted(groups, key=lambda name: (order.get(name, len(order)), name))
        self.rpc().shutdown()
        wait_until(
            lambda: not _alive(pid),
            self.stop_timeout + 30,
            lambda: f"supervisord (pid {pid}) did not exit",
            interval=0.2,
        )
        # supervisord signals a group only while its leader lives: a program that exits on
        # SIGTERM before its children (the code server, whose run processes it stopped
        # waiting for) leaves them behind. A group with a member keeps its id, so this reaches
        # only what a program started.
        for pgid in groups.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        return was_running


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until(
    holds: Callable[[], bool], timeout: float, failure: Callable[[], str], interval: float = 0.5
) -> None:
    """Poll `holds` every `interval` s (tenacity) until it is true; RuntimeError(failure())
    after `timeout` s. An exception `holds` raises ends the wait at once."""
    try:
        tenacity.Retrying(
            stop=tenacity.stop_after_delay(timeout),
            wait=tenacity.wait_fixed(interval),
            retry=tenacity.retry_if_result(lambda held: not held),
        )(holds)
    except tenacity.RetryError:
        raise RuntimeError(failure()) from None


def supervisor(stack: Stack) -> Supervisor:
    return Supervisor(stack.state_dir, stack.services(), stack.stack.stop_timeout_seconds)


def _answers(url: str) -> bool:
    if url.startswith("tcp://"):
        host, port = url.removeprefix("tcp://").rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
        except OSError:
            return False
        return True
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


def up(stack: Stack, names: Sequence[str] = SERVICES) -> dict[str, int]:
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
    prepare_dagster_home(stack.settings)
    stack.write_workspace()
    processes = supervisor(stack)
    processes.ensure_daemon(stack.environment())
    already = processes.running()
    for name in already:
        if name in names:
            print(f"{name:<18} already running (pid {already[name]})")
    wanted = with_needs(processes.services, names)
    pending = [s for s in processes.services if s.name in wanted and s.name not in already]
    deadline = time.monotonic() + stack.stack.start_timeout_seconds
    ready = set(already)
    started: dict[str, int] = {}
    try:
        # In waves: each service once the services it needs answer, those of a wave together.
        while pending:
            wave = [s for s in pending if set(s.needs) <= ready]
            if not wave:
                raise RuntimeError(f"services that need what never starts: {pending}")
            for service in wave:
                started[service.name] = processes.start(service)
            for service in wave:
                processes.wait_ready(service, deadline)
                print(
                    f"{service.name:<18} pid {started[service.name]:<8} {service.ready_url or ''}"
                )
            ready.update(s.name for s in wave)
            pending = [s for s in pending if s not in wave]
    except BaseException:
        processes.stop(list(started))
        raise
    print(f"logs in {stack.state_dir}; `supervisorctl -c {processes.config} status`")
    return started


def with_needs(services: Sequence[Service], names: Iterable[str]) -> set[str]:
    """`names` and every service they need, directly or not."""
    needs = {service.name: service.needs for service in services}
    wanted, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(needs.get(name, ()))
    return wanted


def down(stack: Stack) -> list[str]:
    """Stop what supervisord runs for this data dir, and supervisord; nothing else."""
    stopped = supervisor(stack).shutdown()
    for name in stopped:
        print(f"stopped {name}")
    if not stopped:
        print(f"nothing running under {stack.state_dir}")
    return stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamflow.ops.stack", description=__doc__)
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
        alive = supervisor(stack).running()
        for name in SERVICES:
            print(f"{name:<18} {'pid ' + str(alive[name]) if name in alive else 'stopped'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
