"""Benchmark: the native stack's memory (`make stack`) idle, and a celery worker's after a step.

For each profile it starts the whole stack with `streamflow.ops.stack.up` on free loopback ports,
throwaway databases (and, for `cluster`, a Redis db and a RabbitMQ vhost of its own), waits until
every service answers, then samples every process under the stack's supervisord for `--idle`
seconds: the RSS summed over the processes (and, at the end, their PSS: shared pages counted once),
and every Dagster code server seen, with the CPU seconds each used. With `--users N` (cluster), it
then generates one month of N users, runs `streamflow pipeline --seeds DIR --partitions 2024-01`
against the stack (its workers were started without STREAMFLOW_SEEDS_DIR) and reports each
worker's pool process before, at its peak and after the month.

    .venv/bin/python bench/stack_memory.py --profiles postgres cluster --users 100000 --save

Prints a markdown report; `--save` writes it to bench/reports/stack_memory.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streamflow.ops.stack import (  # noqa: E402
    WORKER,
    StackSettings,
    Supervisor,
    build_stack,
    create_databases,
    down,
    drop_databases,
    up,
)
from streamflow.settings import Settings  # noqa: E402
from tests.cluster import rabbitmq_vhost, redis_db  # noqa: E402
from tests.profiles import free_port  # noqa: E402

STREAMFLOW = Path(sys.executable).parent / "streamflow"
REPORT = REPO / "bench" / "reports" / "stack_memory.md"
MB = 1024 * 1024


def _tree(root: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.NoSuchProcess):
        parent = psutil.Process(root)
        return [parent, *parent.children(recursive=True)]
    return []


def _is_code_server(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        command = " ".join(process.cmdline())
        return "api grpc" in command or "code-server start" in command
    return False


@dataclass
class IdleSample:
    """What `--idle` seconds of sampling saw."""

    rss_mb: list[float] = field(default_factory=list)
    pss_mb: float = 0.0
    by_service: dict[str, float] = field(default_factory=dict)
    pss_by_service: dict[str, float] = field(default_factory=dict)
    # (service, pid, what the process runs, RSS MB, PSS MB) of every process at the end.
    each: list[tuple[str, int, str, float, float]] = field(default_factory=list)
    code_servers: dict[int, float] = field(default_factory=dict)  # pid -> CPU seconds
    processes: int = 0
    load: list[float] = field(default_factory=list)  # 1-minute load average, every sample


def sample_idle(supervisor: Supervisor, seconds: float) -> IdleSample:
    sample = IdleSample()
    root = supervisor.daemon_pid()
    deadline = time.monotonic() + seconds
    while True:
        total = 0
        for process in _tree(root):
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
                if _is_code_server(process):
                    times = process.cpu_times()
                    sample.code_servers[process.pid] = times.user + times.system
        sample.rss_mb.append(total / MB)
        sample.load.append(os.getloadavg()[0])
        if time.monotonic() > deadline:
            break
        time.sleep(2)
    processes = _tree(root)
    sample.processes = len(processes)
    sample.pss_mb = sum(_pss(p) for p in processes) / MB
    services = {p.pid: "supervisord" for p in processes}
    for name, pid in supervisor.running().items():
        tree = _tree(pid)
        services.update((p.pid, name) for p in tree)
        sample.by_service[name] = sum(_rss(p) for p in tree) / MB
        sample.pss_by_service[name] = sum(_pss(p) for p in tree) / MB
    for process in processes:
        sample.each.append(
            (
                services[process.pid],
                process.pid,
                _what(process),
                _rss(process) / MB,
                _pss(process) / MB,
            )
        )
    return sample


def _what(process: psutil.Process) -> str:
    """The program a process runs and its first arguments, without paths or URLs."""
    with contextlib.suppress(psutil.Error):
        words = [Path(w).name if w.startswith("/") else w for w in process.cmdline()[:5]]
        if Path(words[0]).name.startswith("python") and len(words) > 1:
            words = words[1:]
        return " ".join(w for w in words if "://" not in w)[:60]
    return "?"


def _rss(process: psutil.Process) -> int:
    with contextlib.suppress(psutil.Error):
        return process.memory_info().rss
    return 0


def _pss(process: psutil.Process) -> int:
    with contextlib.suppress(psutil.Error):
        return process.memory_full_info().pss
    return 0


def worker_pools(supervisor: Supervisor) -> dict[str, list[psutil.Process]]:
    """Each worker program's celery pool processes: the children of the program, celery's main
    process (`celery -A streamflow_assets.celery_app worker`)."""
    pools = {}
    for name, pid in supervisor.running().items():
        if name == WORKER:
            with contextlib.suppress(psutil.Error):
                pools[name] = psutil.Process(pid).children()
    return pools


def pools_rss(supervisor: Supervisor) -> dict[str, float]:
    return {
        name: max((_rss(p) for p in pools), default=0) / MB
        for name, pools in worker_pools(supervisor).items()
    }


@dataclass
class StepSample:
    users: int
    seconds: float
    before: dict[str, float]
    peak: dict[str, float]
    after: dict[str, float]
    pool_pids_before: dict[str, list[int]]
    pool_pids_after: dict[str, list[int]]


def generate(users: int, seeds: Path) -> None:
    subprocess.run(
        [str(STREAMFLOW), "generate", "--users", str(users), "--months", "1", "--out", str(seeds)],
        check=True,
        capture_output=True,
    )


def run_a_month(supervisor: Supervisor, env: dict[str, str], users: int, seeds: Path) -> StepSample:
    before = pools_rss(supervisor)
    pids_before = {n: [p.pid for p in ps] for n, ps in worker_pools(supervisor).items()}
    peak = dict(before)
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for name, rss in pools_rss(supervisor).items():
                peak[name] = max(peak.get(name, 0), rss)
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    done = subprocess.run(
        [str(STREAMFLOW), "pipeline", "--seeds", str(seeds), "--partitions", "2024-01"],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - started
    stop.set()
    watcher.join()
    if done.returncode != 0:
        raise RuntimeError(f"pipeline failed:\n{done.stdout}\n{done.stderr}")
    # The pool replaces a process after its step; give it the moment to fork the new one.
    time.sleep(5)
    return StepSample(
        users,
        seconds,
        before,
        peak,
        pools_rss(supervisor),
        pids_before,
        {n: [p.pid for p in ps] for n, ps in worker_pools(supervisor).items()},
    )


@contextlib.contextmanager
def stack_of(profile: str, work: Path, worker_seeds: Path | None):
    """The stack of one profile on its own ports, databases, Redis db and vhost; torn down."""
    stem = f"streamflow_bench_{uuid.uuid4().hex[:8]}"
    databases = {role: f"{stem}_{role}" for role in ("data", "mlflow", "dagster")}
    server = Settings()
    create_databases(server, databases.values())
    saved = dict(os.environ)
    try:
        with contextlib.ExitStack() as resources:
            for name in [n for n in os.environ if n.startswith(("STREAMFLOW_", "DAGSTER_"))]:
                del os.environ[name]
            variables = {
                "STREAMFLOW_PROFILE": profile,
                "STREAMFLOW_DATA_DIR": str(work / "data"),
                "STREAMFLOW_POSTGRES_DB": databases["data"],
            }
            if worker_seeds is not None:
                variables["STREAMFLOW_SEEDS_DIR"] = str(worker_seeds)
            if profile == "cluster":
                variables["STREAMFLOW_REDIS_DB"] = str(resources.enter_context(redis_db()))
                variables["STREAMFLOW_CELERY_BROKER"] = resources.enter_context(rabbitmq_vhost())
            os.environ.update(variables)
            settings = Settings()
            stack = build_stack(
                settings,
                StackSettings(
                    mlflow_port=free_port(),
                    dagster_port=free_port(),
                    code_server_port=free_port(),
                    api_port=free_port(),
                    mlflow_db=databases["mlflow"],
                    dagster_db=databases["dagster"],
                    start_timeout_seconds=600,
                ),
            )
            try:
                up(stack)
                yield stack
            finally:
                down(stack)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        drop_databases(server, databases.values())


def measure(profile: str, args) -> tuple[IdleSample, StepSample | None]:
    with tempfile.TemporaryDirectory(prefix="stack-memory-") as tmp:
        seeds = Path(tmp) / "seeds"
        users = args.users if profile == "cluster" else 0
        if users:
            generate(users, seeds)
        # Only to compare with code whose runs did not carry their seeds location.
        worker_seeds = seeds if args.seeds_in_worker_env else None
        with stack_of(profile, Path(tmp), worker_seeds) as stack:
            supervisor = Supervisor(stack.state_dir)
            sample = sample_idle(supervisor, args.idle)
            step = None
            if users:
                env = stack.environment()
                env.pop("STREAMFLOW_SEEDS_DIR", None)
                step = run_a_month(supervisor, env, users, seeds)
            return sample, step


def report(results: dict[str, tuple[IdleSample, StepSample | None]], args) -> str:
    lines = [
        "# The native stack's memory: idle, and a celery worker after a step",
        "",
        f"Machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; "
        f"{platform.python_version()}; run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Command: "
        f"`.venv/bin/python bench/stack_memory.py {' '.join(sys.argv[1:])}`.",
        "",
        f"## Idle stack ({args.idle:.0f} s after every service answered, no data)",
        "",
        "RSS summed over every process under the stack's supervisord (shared pages counted once "
        "per process), its peak over the window, PSS (shared pages split between their "
        "processes) at the end, and the Dagster code servers seen during the window.",
        "",
        "| profile | processes | RSS at the end MB | peak RSS MB | PSS MB | code servers seen "
        "| their CPU s | load average (1 min) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for profile, (idle, _) in results.items():
        lines.append(
            f"| {profile} | {idle.processes} | {idle.rss_mb[-1]:,.0f} | {max(idle.rss_mb):,.0f} "
            f"| {idle.pss_mb:,.0f} | {len(idle.code_servers)} "
            f"| {sum(idle.code_servers.values()):.1f} "
            f"| {min(idle.load):.1f}–{max(idle.load):.1f} |"
        )
    lines += ["", "RSS / PSS per service at the end (the service's process tree), MB:", ""]
    services = sorted({s for idle, _ in results.values() for s in idle.by_service})
    lines += ["| service | " + " | ".join(results) + " |", "|---|" + "---:|" * len(results)]
    for service in services:
        cells = [
            f"{idle.by_service[service]:,.0f} / {idle.pss_by_service[service]:,.0f}"
            if service in idle.by_service
            else "-"
            for idle, _ in results.values()
        ]
        lines.append(f"| {service} | " + " | ".join(cells) + " |")
    for profile, (idle, _) in results.items():
        lines += [
            "",
            f"Every process of the {profile} stack at the end:",
            "",
            "| service | pid | runs | RSS MB | PSS MB |",
            "|---|---:|---|---:|---:|",
        ]
        lines += [
            f"| {service} | {pid} | `{what}` | {rss:,.0f} | {pss:,.0f} |"
            for service, pid, what, rss, pss in idle.each
        ]
    steps = [(p, step) for p, (_, step) in results.items() if step is not None]
    for profile, step in steps:
        lines += [
            "",
            f"## A month of {step.users:,} users on the {profile} profile's workers",
            "",
            "`streamflow pipeline --seeds DIR --partitions 2024-01` against the stack "
            f"({step.seconds:.0f} s). RSS of each worker's "
            "pool process (the largest when it has several):",
            "",
            "| worker | before MB | peak MB | after MB | pool pids before → after |",
            "|---|---:|---:|---:|---|",
        ]
        for name in step.before:
            lines.append(
                f"| {name} | {step.before.get(name, 0):,.0f} | {step.peak.get(name, 0):,.0f} "
                f"| {step.after.get(name, 0):,.0f} | {step.pool_pids_before.get(name)} → "
                f"{step.pool_pids_after.get(name)} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=["postgres", "cluster"])
    parser.add_argument("--idle", type=float, default=240, help="seconds to watch the idle stack")
    parser.add_argument("--users", type=int, default=0, help="users of the cluster's month")
    parser.add_argument(
        "--seeds-in-worker-env",
        action="store_true",
        help="start the stack with STREAMFLOW_SEEDS_DIR set (code whose runs do not carry it)",
    )
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    results = {}
    for profile in args.profiles:
        results[profile] = measure(profile, args)
        print(report(results, args), flush=True)
    text = report(results, args)
    if args.save:
        REPORT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
