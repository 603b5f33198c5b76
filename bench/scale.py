"""Benchmark: the profiles side by side, `streamflow pipeline` over generated seeds of each size.

For each size it generates the seeds once (`streamflow generate`); then for each profile, in a
fresh data dir:

- `local`: nothing to start (the embedded profile).
- `postgres`, `cluster`: throwaway PostgreSQL databases (data, MLflow, Dagster), and the
  profile's native stack as `make stack` runs it (`python -m streamflow.ops.stack up`, under
  supervisord: MLflow with its Postgres backend and served artifacts, the Dagster webserver and
  daemon, the API, and under `cluster` a celery worker of two pool processes on dagster-celery's
  tasks)
  on free ports; `cluster` also gets a RabbitMQ vhost and a Redis database of its own.
  The idle stack is sampled for `--idle-seconds` before any data.

Then `streamflow pipeline --seeds DIR` runs every month. A thread samples the RSS of every
process of the stack and of the run (psutil); each step's start, end and process come from the
Dagster instance's events, so each asset gets its wall time and the peak RSS of the process
that ran it (and its children) over its window. Every server started is stopped at the end, on
failure and on Ctrl-C too; the databases, vhost and Redis keys are dropped.

    .venv/bin/python bench/scale.py --profiles local,postgres,cluster --sizes 100000 --months 3 \
        --save

Prints a markdown report; `--save` writes it to bench/reports/scale.md (or the path given).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from processes import RssSampler

REPO = Path(__file__).resolve().parents[1]
# The throwaway databases, RabbitMQ vhost and Redis db of the tests (tests/profiles.py,
# tests/cluster.py) are the bench's too.
sys.path.insert(0, str(REPO))

from tests.cluster import rabbitmq_vhost, redis_db  # noqa: E402
from tests.profiles import POSTGRES, free_port, throwaway_databases  # noqa: E402

BIN = REPO / ".venv" / "bin"
STREAMFLOW = str(BIN / "streamflow")
PYTHON = str(BIN / "python")
REPORT = REPO / "bench" / "reports" / "scale.md"
PROFILES = ("local", "postgres", "cluster")
MB = 2**20
GB = 10**9

# Targets: issue 21 (1M users × 3 months) and issue 25 (10M users × 1 month, local).
WALL_RATIO_MAX = 1.5
WORKER_PROCESS_MAX = 1.2 * GB
RUN_PROCESS_MAX = 1.5 * GB
TOGETHER_MAX = 5 * GB
IDLE_STACK_MAX = 1.5 * GB
TEN_MILLION_WALL_MAX = 40 * 60
TEN_MILLION_TREE_MAX = 8 * GB

# Every run's steps from the instance: start, end, success and the pid that ran it (a celery
# worker's pool process under `cluster`), and the run's check evaluations.
STEP_READER = """
import json
from dagster import DagsterEventType as T, DagsterInstance
kinds = {T.STEP_START, T.STEP_SUCCESS, T.STEP_FAILURE, T.ASSET_MATERIALIZATION,
         T.ASSET_CHECK_EVALUATION}
runs = []
with DagsterInstance.get() as instance:
    for record in sorted(instance.get_run_records(), key=lambda r: r.create_timestamp):
        run, steps, checks = record.dagster_run, {}, {"passed": 0, "failed": []}
        for entry in instance.all_logs(run.run_id, of_type=kinds):
            event = entry.dagster_event
            step = steps.setdefault(
                event.step_key, {"start": None, "end": None, "ok": False, "assets": 0}
            )
            if event.event_type == T.ASSET_CHECK_EVALUATION:
                data = event.event_specific_data
                if data.passed:
                    checks["passed"] += 1
                else:
                    checks["failed"].append(data.check_name)
            elif event.event_type == T.ASSET_MATERIALIZATION:
                step["assets"] += 1
            elif event.event_type == T.STEP_START:
                step.update(start=entry.timestamp, pid=event.pid)
            else:
                step.update(end=entry.timestamp, ok=event.event_type == T.STEP_SUCCESS)
        runs.append({"partition": run.tags.get("dagster/partition"), "status": run.status.value,
                     "start": record.start_time, "end": record.end_time, "steps": steps,
                     "checks": checks})
print(json.dumps(runs))
"""

# Steps that materialize no asset (the checks that run apart from their asset) share one line.
CHECKS = "checks in steps of their own"


@dataclass
class Step:
    key: str
    seconds: float
    peak_rss: int  # the process that ran it and its children, over the step's window
    ok: bool
    start: float = 0.0
    materializes: bool = True


@dataclass
class ProfileResult:
    profile: str
    users: int
    months: int
    wall_s: float = 0.0
    returncode: int | None = None
    error: str | None = None
    stack_up_s: float = 0.0
    idle_stack: int = 0  # peak over the idle window
    idle_programs: dict[str, int] = field(default_factory=dict)
    run_process: int = 0
    run_tree: int = 0
    stack_peak: int = 0
    together: int = 0
    stack_after: int = 0
    postgres_backends: int = 0
    shared_servers: dict[str, int] = field(default_factory=dict)
    programs: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # count, sum, max
    largest_worker: tuple[str, int] = ("", 0)
    steps: list[Step] = field(default_factory=list)
    month_seconds: dict[str, float] = field(default_factory=dict)
    checks_passed: int = 0
    checks_failed: list[str] = field(default_factory=list)
    runs_ok: int = 0
    disk_bytes: int = 0
    load: tuple[float, float] = (0.0, 0.0)

    @property
    def ok(self) -> bool:
        return (
            self.returncode == 0
            and self.runs_ok == self.months
            and not self.checks_failed
            and all(s.ok for s in self.steps)
        )


class StackError(RuntimeError):
    pass


def _clean_env() -> dict[str, str]:
    """The caller's environment without any StreamFlow, Dagster or stack setting of its own."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STREAMFLOW_", "DAGSTER_", "MLFLOW_"))
    }


def _stack_cli(action: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "streamflow.ops.stack", action],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _stack_programs(env: dict[str, str]) -> dict[str, int]:
    """`stack status`'s running programs: `<name>  pid <pid>` lines."""
    programs = {}
    for line in _stack_cli("status", env, 120).stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "pid" and parts[2].isdigit():
            programs[parts[0]] = int(parts[2])
    return programs


def _kill_tree(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM a process and its descendants, SIGKILL what is left after `timeout`."""
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.terminate()
        _, alive = psutil.wait_procs(processes, timeout=timeout)
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


@contextlib.contextmanager
def native_stack(env: dict[str, str], data_dir: Path, sampler: RssSampler, timeout: float):
    """The profile's `make stack`, followed by the sampler; always stopped afterwards."""
    pid_file = data_dir / "stack" / "supervisord.pid"
    try:
        started = _stack_cli("up", env, timeout)
        if started.returncode:
            raise StackError(f"stack up failed:\n{started.stdout[-3000:]}{started.stderr[-3000:]}")
        supervisord = int(pid_file.read_text())
        # Programs first: a process is labelled by its nearest followed ancestor.
        sampler.follow(supervisord, "supervisord", "stack")
        for name, pid in _stack_programs(env).items():
            sampler.follow(pid, name, "stack")
        yield
    finally:
        supervisord = int(pid_file.read_text()) if pid_file.exists() else None
        try:
            stopped = _stack_cli("down", env, 240)
            if stopped.returncode:
                print(f"stack down failed: {stopped.stderr[-2000:]}", file=sys.stderr)
        except subprocess.TimeoutExpired:
            print("stack down timed out", file=sys.stderr)
        if supervisord is not None and psutil.pid_exists(supervisord):
            print(f"supervisord {supervisord} outlived `stack down`: killed", file=sys.stderr)
            _kill_tree(supervisord)


@contextlib.contextmanager
def profile_env(
    profile: str, data_dir: Path, seeds: Path, sampler: RssSampler, stack_timeout: float
):
    """The run's environment under `profile`, with its throwaway databases, vhost, Redis db."""
    env = _clean_env() | {
        "STREAMFLOW_PROFILE": profile,
        "STREAMFLOW_DATA_DIR": str(data_dir),
        "DAGSTER_HOME": str(data_dir / "dagster"),
        "PYTHONWARNINGS": "ignore",
    }
    with contextlib.ExitStack() as stack:
        databases: list[str] = []
        if profile in ("postgres", "cluster"):
            databases = stack.enter_context(throwaway_databases("", "_mlflow", "_dagster"))
            data, tracking, instance = databases
            mlflow_port = free_port()
            env |= {
                "STREAMFLOW_POSTGRES_DB": data,
                "STREAMFLOW_STACK_MLFLOW_DB": tracking,
                "STREAMFLOW_STACK_DAGSTER_DB": instance,
                # The instance file's DAGSTER_POSTGRES_*, for the stack, the run and the bench.
                "DAGSTER_POSTGRES_HOST": POSTGRES["host"],
                "DAGSTER_POSTGRES_PORT": str(POSTGRES["port"]),
                "DAGSTER_POSTGRES_USER": POSTGRES["user"],
                "DAGSTER_POSTGRES_PASSWORD": "",
                "DAGSTER_POSTGRES_DB": instance,
                "STREAMFLOW_STACK_MLFLOW_PORT": str(mlflow_port),
                "STREAMFLOW_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
                "STREAMFLOW_STACK_DAGSTER_PORT": str(free_port()),
                "STREAMFLOW_STACK_CODE_SERVER_PORT": str(free_port()),
                # Minutes, on a two-core machine that other work may keep busy.
                "STREAMFLOW_STACK_START_TIMEOUT_SECONDS": str(stack_timeout),
                "STREAMFLOW_STACK_API_PORT": str(free_port()),
                # The seeds location reaches the workers through their environment, as `make
                # stack` users set it; the run carrying it by itself is issue 21's item 7.
                "STREAMFLOW_SEEDS_DIR": str(seeds),
            }
            sampler.follow_postgres(databases)
        if profile == "cluster":
            env["STREAMFLOW_REDIS_DB"] = str(stack.enter_context(redis_db()))
            env["STREAMFLOW_CELERY_BROKER"] = stack.enter_context(rabbitmq_vhost())
            sampler.follow_shared_servers()
        yield env, databases


def _read_steps(env: dict[str, str]) -> list[dict]:
    answer = subprocess.run(
        [PYTHON, "-c", STEP_READER], env=env, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    if answer.returncode:
        raise RuntimeError(f"reading the instance's steps failed:\n{answer.stderr[-3000:]}")
    return json.loads(answer.stdout.strip().splitlines()[-1])


def _disk_bytes(data_dir: Path, data_database: str | None) -> int:
    total = sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file())
    if data_database:
        import psycopg

        with psycopg.connect(dbname=data_database, **POSTGRES) as connection:
            total += connection.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return total


def _run_pipeline(
    env: dict[str, str], seeds: Path, log: Path, sampler: RssSampler, timeout: float
) -> tuple[int, float, int]:
    """`streamflow pipeline` in its own session, followed by the sampler; killed (its whole
    tree) if it outlives `timeout` or this process is interrupted. Returns (code, wall, pid)."""
    started = time.time()
    with open(log, "w") as output:
        process = subprocess.Popen(
            [STREAMFLOW, "pipeline", "--seeds", str(seeds)],
            env=env, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    sampler.follow(process.pid, "run", "run")
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"pipeline still running after {timeout:.0f}s: stopped", file=sys.stderr)
        code = -1
    finally:
        if process.poll() is None:
            _kill_tree(process.pid)
            process.wait(timeout=30)
    return code, time.time() - started, process.pid


def run_profile(
    profile: str, users: int, months: int, seeds: Path, work: Path, args: argparse.Namespace
) -> ProfileResult:
    result = ProfileResult(profile, users, months)
    data_dir = work / f"data-{profile}-{users}"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    log = work / f"pipeline-{profile}-{users}.log"
    sampler = RssSampler(args.interval)
    sampler.start()
    try:
        with (
            profile_env(profile, data_dir, seeds, sampler, args.stack_timeout) as (env, databases),
            contextlib.ExitStack() as servers,
        ):
            if profile != "local":
                began = time.time()
                servers.enter_context(
                    native_stack(env, data_dir, sampler, args.stack_timeout + 120)
                )
                result.stack_up_s = time.time() - began
                idle_start = time.time()
                time.sleep(args.idle_seconds)
                idle_end = time.time()
                result.idle_stack = sampler.peak(idle_start, idle_end, groups={"stack"})
                result.idle_programs = _programs(sampler, idle_start, idle_end)
                idle_shared = _shared(sampler, idle_start, idle_end)
            code, wall, pid = _run_pipeline(env, seeds, log, sampler, args.timeout)
            end = time.time()
            start = end - wall
            result.returncode, result.wall_s = code, wall
            time.sleep(args.settle_seconds)
            result.stack_after = sampler.last(end, time.time(), {"stack"})
            _memory_figures(result, sampler, start, end, pid)
            if profile != "local":
                result.shared_servers = {
                    name: (idle_shared.get(name, 0), peak)
                    for name, peak in _shared(sampler, start, end).items()
                }
            result.load = sampler.load_range(start, end)
            result.disk_bytes = _disk_bytes(data_dir, databases[0] if databases else None)
            _step_figures(result, sampler, _read_steps(env))
    except (StackError, RuntimeError, subprocess.SubprocessError) as error:
        result.error = str(error)
    finally:
        sampler.stop()
    if result.returncode not in (0, None):
        tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
        result.error = (
            (result.error or "") + f"pipeline exited {result.returncode}: " + "\n".join(tail)
        )
    if not args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)
    return result


def _programs(sampler: RssSampler, start: float, end: float) -> dict[str, int]:
    """The stack's RSS by program (a program's processes summed) at the window's peak sample."""
    best: dict[str, int] = {}
    for rss in sampler.window(start, end):
        sums: dict[str, int] = defaultdict(int)
        for pid, value in rss.items():
            proc = sampler.procs[pid]
            if proc.group == "stack":
                sums[proc.label.split(":")[0]] += value
        if sum(sums.values()) > sum(best.values()):
            best = dict(sums)
    return best


def _shared(sampler: RssSampler, start: float, end: float) -> dict[str, int]:
    peaks: dict[str, int] = defaultdict(int)
    for rss in sampler.window(start, end):
        sums: dict[str, int] = defaultdict(int)
        for pid, value in rss.items():
            if sampler.procs[pid].group == "shared":
                sums[sampler.procs[pid].label] += value
        for name, value in sums.items():
            peaks[name] = max(peaks[name], value)
    return dict(peaks)


def _memory_figures(
    result: ProfileResult, sampler: RssSampler, start: float, end: float, run_pid: int
) -> None:
    result.run_process = sampler.peak(start, end, pids={run_pid})
    result.run_tree = sampler.peak(start, end, groups={"run"})
    result.stack_peak = sampler.peak(start, end, groups={"stack"})
    result.together = sampler.peak(start, end, groups={"run", "stack"})
    result.postgres_backends = sampler.peak(start, end, groups={"postgres"})
    peaks = sampler.process_peaks(start, end)
    programs: dict[str, list[int]] = defaultdict(list)
    for pid, peak in peaks.items():
        proc = sampler.procs[pid]
        if proc.group == "stack":
            programs[proc.label.split(":")[0]].append(peak)
            if proc.label.startswith("celery-worker") and peak > result.largest_worker[1]:
                result.largest_worker = (f"{proc.label} (pid {pid})", peak)
    at_peak = _programs(sampler, start, end)
    result.programs = {
        name: (len(values), at_peak.get(name, 0), max(values)) for name, values in programs.items()
    }


def _step_figures(result: ProfileResult, sampler: RssSampler, runs: list[dict]) -> None:
    subtrees: dict[int, set[int]] = {}
    for run in runs:
        result.runs_ok += run["status"] == "SUCCESS"
        result.checks_passed += run["checks"]["passed"]
        result.checks_failed += [f"{run['partition']} {c}" for c in run["checks"]["failed"]]
        if run["start"] and run["end"]:
            result.month_seconds[run["partition"]] = run["end"] - run["start"]
        for key, step in run["steps"].items():
            materializes = step["assets"] > 0
            if step["start"] is None or step["end"] is None:
                result.steps.append(Step(key, 0.0, 0, False, materializes=materializes))
                continue
            pid = step.get("pid")
            if pid not in subtrees:
                subtrees[pid] = sampler.subtree(pid) if pid else set()
            peak = sampler.peak(step["start"], step["end"], pids=subtrees[pid])
            seconds = step["end"] - step["start"]
            result.steps.append(Step(key, seconds, peak, step["ok"], step["start"], materializes))


def _mb(n: float) -> str:
    return f"{n / MB:,.0f}"


def _machine() -> str:
    with open("/proc/cpuinfo") as info:
        models = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    cpu = models[0] if models else platform.processor() or "unknown CPU"
    return (
        f"{os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"{platform.system()} {platform.release()}"
    )


def _asset_rows(result: ProfileResult) -> dict[str, tuple[float, int]]:
    """Seconds and peak RSS by asset step (in the order the steps started), checks together."""
    rows: dict[str, tuple[float, int]] = {}
    for step in sorted(result.steps, key=lambda s: (not s.materializes, s.start)):
        name = step.key if step.materializes else CHECKS
        seconds, peak = rows.get(name, (0.0, 0))
        rows[name] = (seconds + step.seconds, max(peak, step.peak_rss))
    return rows


def _verdict(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def verdicts(results: list[ProfileResult]) -> list[str]:
    """Each target checked against the figures of the sizes measured."""
    lines = []
    by_size: dict[int, dict[str, ProfileResult]] = defaultdict(dict)
    for r in results:
        by_size[r.users][r.profile] = r
    for users, profiles in sorted(by_size.items()):
        months = next(iter(profiles.values())).months
        at = f"{users:,} users × {months} month{'s' if months > 1 else ''}"
        scope = (
            "the target's size"
            if (users, months) == (1_000_000, 3)
            else "targets set at 1M users × 3 months"
        )
        lines += [f"At {at} ({scope}):", ""]
        local = profiles.get("local")
        for name in ("postgres", "cluster"):
            r = profiles.get(name)
            if r is None:
                continue
            if local and local.ok and r.ok:
                ratio = r.wall_s / local.wall_s
                lines.append(
                    f"- {name} wall {r.wall_s:,.0f} s = {ratio:.2f}× local "
                    f"(target ≤ {WALL_RATIO_MAX}×): {_verdict(ratio <= WALL_RATIO_MAX)}"
                )
            lines.append(
                f"- {name} idle stack {_mb(r.idle_stack)} MB (target < 1.5 GB): "
                f"{_verdict(r.idle_stack < IDLE_STACK_MAX)}"
            )
            lines.append(
                f"- {name} run process {_mb(r.run_process)} MB (target < 1.5 GB): "
                f"{_verdict(r.run_process < RUN_PROCESS_MAX)}"
            )
            if name == "cluster":
                label, peak = r.largest_worker
                lines.append(
                    f"- cluster largest worker process {_mb(peak)} MB, {label} (target < 1.2 GB "
                    f"each): {_verdict(peak < WORKER_PROCESS_MAX)}"
                )
            lines.append(
                f"- {name} stack and run together {_mb(r.together)} MB (target < 5 GB): "
                f"{_verdict(r.together < TOGETHER_MAX)}"
            )
        for r in profiles.values():
            if not r.ok:
                lines.append(f"- {r.profile}: the run was not green (see above): NOT met")
        if local and users >= 10_000_000:
            lines.append(
                f"- local {at}: wall {local.wall_s / 60:.1f} min (issue 25: < 40 min at 10M × 1), "
                f"{_verdict(local.wall_s < TEN_MILLION_WALL_MAX)}; process tree "
                f"{_mb(local.run_tree)} MB (< 8 GB): "
                f"{_verdict(local.run_tree < TEN_MILLION_TREE_MAX)}"
            )
        lines.append("")
    return lines


def report(
    results: list[ProfileResult],
    generate_s: dict[int, float],
    command: str,
    load: tuple[float, float],
    interval: float,
) -> str:
    lines = [
        "# Scale: the profiles side by side, `streamflow pipeline` over generated seeds",
        "",
        f"Machine: {_machine()}. Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"load average (1 min) {load[0]:.1f} at the start, {load[1]:.1f} at the end (each "
        "run's range below). Other work shares the machine: compare the ratios within one run.",
        "",
        f"Command: `{command}`",
        "",
        "What is measured: `local` starts nothing; `postgres` and `cluster` start the profile's "
        "native stack (`python -m streamflow.ops.stack up`, as `make stack`) on their own "
        "ports and throwaway databases (`cluster`: a RabbitMQ vhost, a Redis db and a "
        "celery worker of its own, two pool processes). RSS is sampled every "
        f"{interval:g} s for every process of the stack "
        "(supervisord and each program's process tree) and of the run (`streamflow pipeline` "
        "and its children). *Together* is the stack and the run at one sample. PostgreSQL "
        "backends of the run's databases are listed apart (their RSS counts the shared buffers "
        "they touched), as are the machine-wide Redis and RabbitMQ servers, which other work "
        "uses too. A step's peak is its process's (and its children's) over the step's window: "
        "the run process under `local` and `postgres`, a worker's pool process under `cluster`.",
        "",
    ]
    sizes = sorted({r.users for r in results})
    for users in sizes:
        rows = [r for r in results if r.users == users]
        local = next((r for r in rows if r.profile == "local" and r.ok), None)
        months = rows[0].months
        lines += [
            f"## {users:,} users × {months} month{'s' if months > 1 else ''}",
            "",
            f"Seeds generated in {generate_s[users]:.1f} s.",
            "",
            "| profile | green | pipeline wall s | ÷ local | stack start s | idle stack MB "
            "| run process MB | run tree MB | stack MB | together MB | largest worker process "
            "MB | stack after the run MB | PG backends MB | data on disk MB | load during |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in rows:
            ratio = f"{r.wall_s / local.wall_s:.2f}×" if local and r.ok else "–"
            server = r.profile != "local"
            green = (
                f"yes ({r.runs_ok}/{r.months} runs, {r.checks_passed} checks)" if r.ok else "**no**"
            )
            lines.append(
                f"| {r.profile} | {green} | {r.wall_s:,.0f} | {ratio} "
                f"| {f'{r.stack_up_s:.0f}' if server else '–'} "
                f"| {_mb(r.idle_stack) if server else '–'} | {_mb(r.run_process)} "
                f"| {_mb(r.run_tree)} | {_mb(r.stack_peak) if server else '–'} | {_mb(r.together)} "
                f"| {_mb(r.largest_worker[1]) if r.largest_worker[1] else '–'} "
                f"| {_mb(r.stack_after) if server else '–'} "
                f"| {_mb(r.postgres_backends) if server else '–'} | {_mb(r.disk_bytes)} "
                f"| {r.load[0]:.1f}–{r.load[1]:.1f} |"
            )
        for r in rows:
            if r.error or not r.ok:
                failed = ", ".join(r.checks_failed[:10])
                steps = ", ".join(s.key for s in r.steps if not s.ok)
                lines += [
                    "",
                    f"**{r.profile} not green**: runs ok {r.runs_ok}/{r.months}; failed steps: "
                    f"{steps or 'none'}; failed checks: {failed or 'none'}.",
                ]
                if r.error:
                    lines += ["", "```", r.error.strip()[-2000:], "```"]
        lines += [
            "",
            "Per asset, summed over the months: wall s / peak RSS MB of the step's process.",
            "",
            "| asset | " + " | ".join(r.profile for r in rows) + " |",
            "|---|" + "---:|" * len(rows),
        ]
        asset_rows = [_asset_rows(r) for r in rows]
        for name in dict.fromkeys(name for a in asset_rows for name in a):
            cells = [
                f"{a[name][0]:.1f} / {_mb(a[name][1])}" if name in a else "–" for a in asset_rows
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "Per month (wall s of the run):",
            "",
            "| profile | " + " | ".join(sorted(rows[0].month_seconds)) + " |",
            "|---|" + "---:|" * len(rows[0].month_seconds),
        ]
        for r in rows:
            cells = [f"{r.month_seconds.get(m, 0):.0f}" for m in sorted(rows[0].month_seconds)]
            lines.append(f"| {r.profile} | " + " | ".join(cells) + " |")
        for r in rows:
            if not r.programs:
                continue
            lines += [
                "",
                f"The {r.profile} stack's programs: MB idle (at the idle peak), during the run "
                "(the program's processes at the stack's peak sample), and its largest single "
                "process's peak.",
                "",
                "| program | processes | idle MB | at the stack's peak MB | largest process MB |",
                "|---|---:|---:|---:|---:|",
            ]
            for name, (count, at_peak, largest) in sorted(r.programs.items()):
                lines.append(
                    f"| {name} | {count} | {_mb(r.idle_programs.get(name, 0))} | {_mb(at_peak)} "
                    f"| {_mb(largest)} |"
                )
            for name, (idle, peak) in sorted(r.shared_servers.items()):
                lines.append(
                    f"| {name} (shared: not in the totals) | – | {_mb(idle)} | {_mb(peak)} | – |"
                )
        lines.append("")
    lines += ["## Verdicts", "", *verdicts(results)]
    return "\n".join(lines).rstrip() + "\n"


def _parse_list(text: str, kind) -> list:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"an empty list: {text!r}")
    return [kind(item) for item in items]


def _profile(name: str) -> str:
    if name not in PROFILES:
        raise argparse.ArgumentTypeError(f"unknown profile {name!r}; choose from {PROFILES}")
    return name


def _users(text: str) -> int:
    try:
        users = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size is a number of users, not {text!r}") from None
    if users < 1000:
        raise argparse.ArgumentTypeError(f"a size of at least 1000 users, not {users}")
    return users


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--profiles", "--profile", dest="profiles", action="extend", default=None,
        type=lambda text: _parse_list(text, _profile),
        help="comma-separated, in this order (default local,postgres,cluster)",
    )  # fmt: skip
    parser.add_argument(
        "--sizes", action="extend", default=None, type=lambda text: _parse_list(text, _users),
        help="users, comma-separated (default 100000)",
    )  # fmt: skip
    parser.add_argument("--months", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/streamflow-scale"))
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--settle-seconds", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=0.5, help="sampling period, s")
    parser.add_argument(
        "--timeout", type=float, default=3 * 3600.0, help="seconds a pipeline may run"
    )
    parser.add_argument("--stack-timeout", type=float, default=600.0)
    parser.add_argument(
        "--save", nargs="?", type=Path, const=REPORT, default=None,
        help=f"write the report ({REPORT.relative_to(REPO)} unless a path is given)",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the seeds and data dirs")
    args = parser.parse_args(argv)
    args.profiles = list(dict.fromkeys(args.profiles or PROFILES))
    args.sizes = sorted(set(args.sizes or [100_000]))
    if args.months < 1:
        parser.error(f"--months must be at least 1, not {args.months}")
    if args.interval <= 0 or args.idle_seconds < 0 or args.timeout <= 0:
        parser.error("--interval and --timeout must be positive, --idle-seconds not negative")
    return args


def _interrupt(signum, frame):
    # SIGTERM unwinds like Ctrl-C, through every `finally` that stops a server.
    raise KeyboardInterrupt(f"signal {signum}")


def measure(args: argparse.Namespace) -> tuple[list[ProfileResult], dict[int, float]]:
    """Each size's seeds, then each profile's run over them, in order."""
    results, generate_s = [], {}
    for users in args.sizes:
        seeds = args.work / f"seeds-{users}x{args.months}"
        shutil.rmtree(seeds, ignore_errors=True)
        print(f"generating {users:,} users × {args.months} months ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        generated = subprocess.run(
            [STREAMFLOW, "generate", "--users", str(users), "--months", str(args.months),
             "--seed", "42", "--out", str(seeds)],
            env=_clean_env(), capture_output=True, text=True, timeout=3600,
        )  # fmt: skip
        if generated.returncode:
            raise RuntimeError(f"streamflow generate failed:\n{generated.stderr[-3000:]}")
        generate_s[users] = time.perf_counter() - started
        try:
            for profile in args.profiles:
                print(f"{profile}: {users:,} users ...", file=sys.stderr, flush=True)
                result = run_profile(profile, users, args.months, seeds, args.work, args)
                results.append(result)
                state = "green" if result.ok else f"NOT green: {result.error or ''}"
                print(f"{profile}: {result.wall_s:,.0f} s, {state}", file=sys.stderr, flush=True)
        finally:
            if not args.keep:
                shutil.rmtree(seeds, ignore_errors=True)
    return results, generate_s


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    args.work.mkdir(parents=True, exist_ok=True)
    command = ".venv/bin/python bench/scale.py " + " ".join(argv or sys.argv[1:])
    load_start = os.getloadavg()[0]
    try:
        results, generate_s = measure(args)
    except KeyboardInterrupt:
        print("interrupted: what it started is stopped, nothing reported", file=sys.stderr)
        return 130
    except RuntimeError as error:
        print(f"bench/scale.py: {error}", file=sys.stderr)
        return 2
    text = report(results, generate_s, command, (load_start, os.getloadavg()[0]), args.interval)
    print(text)
    if args.save:
        args.save.write_text(text)
        print(f"wrote {args.save}", file=sys.stderr)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
