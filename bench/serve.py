"""Serving latency and throughput: /health, /predict and the textbook /predict, side by side.

Starts `streamflow serve` and `bench/textbook_server.py` on loopback over the same stores, then
drives each case with a load generator in a separate process (lean asyncio sockets and/or an
httpx.AsyncClient, one keep-alive connection per concurrent client) at each concurrency with the
same number of requests, and reports p50/p95/p99 latency, throughput and the servers' memory.
With `--profiles local,postgres,cluster` one `streamflow serve` per profile answers the same
cases in the same run, each over stores the pipeline builds from the seeds (the postgres and
cluster ones in throwaway databases of the machine's PostgreSQL and Redis, removed afterwards):

    .venv/bin/python bench/serve.py --profiles local,postgres,cluster --concurrency 8 --rounds 3

With `--large-data-dir` (local stores the pipeline built from large generated seeds, e.g. 1M
users) a second local `streamflow serve` over them runs the same /predict case, interleaved:

    .venv/bin/python bench/serve.py --data-dir var \
        --large-data-dir var-1m --large-seeds data/seeds-1m
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = REPO_ROOT / ".venv" / "bin"
DEFAULT_SEEDS = (REPO_ROOT / ".." / "shared" / "seeds").resolve()


# The load generator (runs in its own process: `serve.py --load ...`).


Request = tuple[str, str, bytes | None]


def raw_request(method: str, path: str, body: bytes | None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if body is None:
        return (head + "\r\n").encode()
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, wire: bytes
) -> tuple[int, bytes]:
    """One keep-alive HTTP/1.1 request already encoded; its status and body (by Content-Length)."""
    writer.write(wire)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:")
    )
    return int(lines[0].split()[1]), await reader.readexactly(length)


async def _raw_client(port: int, requests: list[Request], next_index: list[int], out: dict) -> None:
    """Keep-alive HTTP/1.1 over one socket, parsing only status and Content-Length."""
    wire = [raw_request(*request) for request in requests]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while next_index[0] < len(requests):
            index = next_index[0]
            next_index[0] += 1
            started = time.perf_counter()
            status, _ = await exchange(reader, writer, wire[index])
            out["latencies"].append(time.perf_counter() - started)
            if status != 200:
                out["errors"].append(status)
    finally:
        writer.close()


async def _httpx_client(
    port: int, requests: list[Request], next_index: list[int], out: dict
) -> None:
    """An httpx.AsyncClient with one keep-alive connection, as a typical Python caller."""
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=httpx.Limits(max_connections=1)
    ) as client:
        while next_index[0] < len(requests):
            method, path, body = requests[next_index[0]]
            next_index[0] += 1
            started = time.perf_counter()
            response = await client.request(method, path, content=body, headers=headers)
            out["latencies"].append(time.perf_counter() - started)
            if response.status_code != 200:
                out["errors"].append(response.status_code)


CLIENTS = {"raw": _raw_client, "httpx": _httpx_client}


async def drive(client, port: int, requests: list, concurrency: int) -> dict:
    """`concurrency` copies of `client` taking `requests` in turn; latencies, errors, wall time."""
    out: dict = {"latencies": [], "errors": []}
    next_index = [0]
    started = time.perf_counter()
    await asyncio.gather(*(client(port, requests, next_index, out) for _ in range(concurrency)))
    return {**out, "wall": time.perf_counter() - started}


def load(args: argparse.Namespace) -> None:
    """Send `requests` (plus warm-up) at `concurrency`; print latencies and wall time as JSON."""
    import uvloop

    users = Path(args.user_ids).read_text().split() if args.user_ids else []
    requests: list[Request] = [
        (
            args.method,
            args.path,
            json.dumps({"user_id": users[i % len(users)]}).encode() if users else None,
        )
        for i in range(args.requests + args.warmup)
    ]
    (concurrency,) = args.concurrency
    (kind,) = args.clients
    uvloop.run(drive(CLIENTS[kind], args.port, requests[: args.warmup], concurrency))
    result = uvloop.run(drive(CLIENTS[kind], args.port, requests[args.warmup :], concurrency))
    json.dump(result, sys.stdout)


# The orchestration.

HEALTH, PREDICT, TEXTBOOK = "GET /health (floor)", "POST /predict", "POST /predict textbook"
LARGE = "POST /predict, large stores"
LOGGED = "POST /predict, log + shadow"
# The shadow of `--prediction-log`: the first month's version, which every pipeline registers.
SHADOW_URI = "models:/streamflow_churn/1"
SHADOW_FRACTION = 0.1
LOG_RATIO_TARGET = 1.15
PROFILES = ("local", "postgres", "cluster")
# Bodies are a seeded sample of a month's users in random order (not its first rows): at a
# million users, reads then land all over the store as a product's traffic would.
USERS_PER_CASE = 20_000
# Then, with --large-data-dir, this many distinct users one request each (for the memory they
# leave behind).
DISTINCT = 80_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory_mb(pid: int) -> tuple[float, float]:
    """Resident and peak resident memory of a process, in MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready after {timeout}s")


def build_stores(seeds: Path, data_dir: Path, env: dict[str, str]) -> None:
    print(f"building stores from {seeds} into {data_dir} (the real pipeline) ...", flush=True)
    subprocess.run(
        [str(VENV_BIN / "streamflow"), "pipeline", "--seeds", str(seeds)],
        env={**env, "DAGSTER_HOME": str(data_dir / "dagster")},
        check=True,
        stdout=subprocess.DEVNULL,
    )


def process_tree(pid: int) -> list[int]:
    """A process and its descendants (gunicorn and `mlflow models serve` serve from children)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += parents.get(tree[-1], [])
    return tree


def tree_cpu_seconds(pid: int) -> float:
    return sum(cpu_seconds(p) for p in process_tree(pid) if Path(f"/proc/{p}").exists())


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a server and its worker processes, in MB."""
    return sum(memory_mb(p)[0] for p in process_tree(pid) if Path(f"/proc/{p}").exists())


def measure(command: list[str], pid: int, sent: int) -> dict:
    """Run a load generator command (JSON latencies on stdout); figures and server CPU/request."""
    cpu_before = tree_cpu_seconds(pid)
    done = subprocess.run(command, capture_output=True, text=True)
    cpu = tree_cpu_seconds(pid) - cpu_before
    if done.returncode:
        raise SystemExit(f"load generator failed: {command}\n{done.stderr}")
    result = json.loads(done.stdout)
    latencies = sorted(result["latencies"])

    def percentile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {
        "p50": percentile(0.50),
        "p95": percentile(0.95),
        "p99": percentile(0.99),
        "rps": len(latencies) / result["wall"],
        "errors": len(result["errors"]),
        "error_statuses": sorted(set(result["errors"])),
        # Server CPU per request (warm-up included): what a request costs, whatever the wait.
        "cpu_us": cpu / sent * 1e6,
    }


def run_case(
    client: str,
    port: int,
    path: str,
    users: Path | None,
    concurrency: int,
    args,
    pid: int,
    requests: int | None = None,
) -> dict:
    requests = requests or args.requests
    command = [sys.executable, __file__, "--load", "--clients", client]
    command += ["--port", str(port), "--path", path]
    command += ["--concurrency", str(concurrency), "--requests", str(requests)]
    command += ["--warmup", str(args.warmup)]
    if users is not None:
        command += ["--method", "POST", "--user-ids", str(users)]
    return measure(command, pid, requests + args.warmup)


def server_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMFLOW_", "DAGSTER"))}
    env |= {"STREAMFLOW_DATA_DIR": str(data_dir), "STREAMFLOW_RELOAD_INTERVAL_SECONDS": "30"}
    # `mlflow models serve` runs `uvicorn` from PATH.
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def users_file(seeds: Path, out: Path, size: int = USERS_PER_CASE) -> tuple[Path, int]:
    """A seeded random sample of the newest seeds month's user ids, one per line; and how many
    users the month has."""
    newest = sorted(seeds.glob("month_*"))[-1]
    with open(newest / "users.csv", newline="") as source:
        users = [row["user_id"] for row in csv.DictReader(source)]
    sample = random.Random(0).sample(users, min(size, len(users)))
    out.write_text("\n".join(sample))
    return out, len(users)


def prepare(stack: ExitStack, args: argparse.Namespace) -> tuple[dict[str, str], Path, int]:
    """The servers' environment over `args.data_dir` (built by the pipeline if it is empty) and
    a file of user ids of the newest seeds month, in a scratch dir that `stack` removes."""
    scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-serve-")))
    data_dir = (args.data_dir or scratch / "data").resolve()
    env = server_env(data_dir)
    if not (data_dir / "mlflow" / "mlflow.db").exists():
        build_stores(args.seeds, data_dir, env)
    return (env, *users_file(args.seeds, scratch / "users.txt"))


def start(stack: ExitStack, command: list[str], env: dict[str, str]) -> subprocess.Popen:
    """A server process, terminated (with its workers) when `stack` closes."""
    process = subprocess.Popen(
        command,
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def stop() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    stack.callback(stop)
    return process


def ours_command(port: int) -> list[str]:
    return [str(VENV_BIN / "streamflow"), "serve", "--host", "127.0.0.1", "--port", str(port)]


def textbook_command(port: int) -> list[str]:
    script = REPO_ROOT / "bench" / "textbook_server.py"
    return [sys.executable, str(script), "--host", "127.0.0.1", "--port", str(port)]


def server_profiles(
    stack: ExitStack, args: argparse.Namespace, scratch: Path, local_env: dict[str, str] | None
) -> dict[str, dict[str, str]]:
    """Per profile of `args.profiles`, the environment of a `streamflow serve` over stores built
    from the seeds. The postgres profile's: `streamflow pipeline` into throwaway databases of the
    machine's PostgreSQL with an MLflow server of its own; the cluster profile serves the same
    registry and models with the online store in a Redis database of its own, written from the
    same snapshots by the `online_features` asset's code (`materialize_month`)."""
    envs = {"local": local_env} if local_env is not None else {}
    if not {"postgres", "cluster"} & set(args.profiles):
        return envs
    # The test suite's helpers: throwaway databases dropped afterwards, a Redis database no one
    # else uses, emptied afterwards.
    sys.path.insert(0, str(REPO_ROOT))
    from tests.cluster import redis_db
    from tests.profiles import mlflow_server, throwaway_databases

    data, tracking_db, dagster_db = stack.enter_context(
        throwaway_databases("", "_mlflow", "_dagster")
    )
    tracking = stack.enter_context(
        mlflow_server(tracking_db, scratch / "mlflow-artifacts", scratch / "mlflow.log")
    )
    data_dir = scratch / "postgres"
    env = server_env(data_dir) | {
        "STREAMFLOW_PROFILE": "postgres",
        "STREAMFLOW_POSTGRES_DB": data,
        "STREAMFLOW_MLFLOW_TRACKING_URI": tracking,
    }
    build_stores(args.seeds, data_dir, env | {"DAGSTER_POSTGRES_DB": dagster_db})
    analyze(data)
    if "postgres" in args.profiles:
        envs["postgres"] = env
    if "cluster" in args.profiles:
        cluster = env | {
            "STREAMFLOW_PROFILE": "cluster",
            "STREAMFLOW_REDIS_DB": str(stack.enter_context(redis_db())),
        }
        write_redis(args.seeds, cluster)
        envs["cluster"] = cluster
    return {profile: envs[profile] for profile in args.profiles}


def analyze(database: str) -> None:
    """Planner statistics for the freshly written tables, as autovacuum gathers within a minute
    of a bulk write: without them, the first plans of the online read guess row counts."""
    import psycopg

    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=database) as connection:
        connection.execute("ANALYZE")


def write_redis(seeds: Path, env: dict[str, str]) -> None:
    """Every seeds month online in the cluster profile's Redis, from the postgres snapshots."""
    from streamflow.adapters.feature_store import materialize_month, open_store
    from streamflow.domain import months
    from streamflow.settings import Settings
    from streamflow_assets.resources import build_resources

    print("writing the months online into Redis ...", flush=True)
    settings = Settings(
        profile="cluster",
        data_dir=env["STREAMFLOW_DATA_DIR"],
        postgres_db=env["STREAMFLOW_POSTGRES_DB"],
        redis_db=int(env["STREAMFLOW_REDIS_DB"]),
        mlflow_tracking_uri=env["STREAMFLOW_MLFLOW_TRACKING_URI"],
    )
    store, snapshots = open_store(settings), build_resources(settings)["snapshots"].store()
    for key in months.seeded_months(seeds):
        as_of = months.as_of(key)
        materialize_month(
            store,
            lambda table, as_of=as_of: snapshots.read_batches(table, as_of, 200_000),
            as_of,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data-dir", type=Path, help="local stores built by the pipeline (default: build)"
    )
    parser.add_argument("--seeds", type=Path, default=DEFAULT_SEEDS)
    parser.add_argument(
        "--profiles",
        type=lambda text: text.split(","),
        default=["local"],
        help="comma-separated, of local,postgres,cluster: a `streamflow serve` of each",
    )
    parser.add_argument("--rounds", type=int, default=1, help="the cases, interleaved, again")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    # The textbook serves about 15 requests/s: a thousand would take minutes per concurrency.
    parser.add_argument("--textbook-requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--clients",
        nargs="+",
        choices=sorted(CLIENTS),
        # httpx spends about a millisecond of CPU per request itself: on two cores shared with
        # the server it saturates near 200 req/s and measures itself, so it is opt-in.
        default=["raw"],
        help="load generators: raw keep-alive sockets (lean, default) and/or httpx.AsyncClient",
    )
    parser.add_argument(
        "--large-data-dir",
        type=Path,
        help="stores the pipeline built from --large-seeds: /predict over them, in the same run",
    )
    parser.add_argument("--large-seeds", type=Path, help="the seeds of --large-data-dir")
    parser.add_argument(
        "--prediction-log",
        action="store_true",
        help="local: the server above with the prediction log off, and a second one with it on "
        f"and the shadow at {SHADOW_FRACTION:.0%}, same cases interleaved; then "
        "--log-soak-seconds at c=32 against the second, its log rows counted against its answers",
    )
    parser.add_argument("--log-soak-seconds", type=float, default=60.0)
    parser.add_argument("--report", type=Path, default=REPO_ROOT / "bench/reports/serve.md")
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="GET", help=argparse.SUPPRESS)
    parser.add_argument("--user-ids", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        load(args)
        return
    unknown = sorted(set(args.profiles) - set(PROFILES))
    if unknown or len(set(args.profiles)) != len(args.profiles):
        parser.error(f"--profiles: {','.join(args.profiles)}: each of {','.join(PROFILES)} once")
    if (args.large_data_dir is None) != (args.large_seeds is None):
        parser.error("--large-data-dir and --large-seeds go together")
    if args.large_data_dir is not None and "local" not in args.profiles:
        parser.error("--large-data-dir is served by the local profile: add it to --profiles")
    if args.prediction_log and "local" not in args.profiles:
        parser.error("--prediction-log is measured on the local profile: add it to --profiles")

    # Terminated (a timeout, Ctrl-C): unwind, so that the servers stop and the throwaway
    # databases are dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(f"{Path(__file__).name}: terminated"))
    load_before = os.getloadavg()[0]
    with ExitStack() as stack:
        if "local" in args.profiles:
            local_env, users, args.users = prepare(stack, args)
            scratch = users.parent
        else:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-serve-")))
            local_env, (users, args.users) = None, users_file(args.seeds, scratch / "users.txt")
        if args.prediction_log:
            logged_env = dict(local_env)
            local_env = local_env | {"STREAMFLOW_PREDICTION_LOG": "false"}
        envs = server_profiles(stack, args, scratch, local_env)
        servers = {}
        for profile, env in envs.items():
            port = free_port()
            process = start(stack, ours_command(port), env)
            started = time.perf_counter()
            wait_until(f"http://127.0.0.1:{port}/ready", process)
            startup = time.perf_counter() - started
            servers[profile] = (port, process, startup, memory_mb(process.pid)[0])
            print(f"streamflow serve ({profile}) ready in {startup:.1f}s", flush=True)
        textbook_cases, large_cases, logged_cases = [], [], []
        if args.prediction_log:
            logged_port = free_port()
            logged_env |= {
                "STREAMFLOW_SHADOW_MODEL_URI": SHADOW_URI,
                "STREAMFLOW_SHADOW_FRACTION": str(SHADOW_FRACTION),
            }
            logged = start(stack, ours_command(logged_port), logged_env)
            wait_until(f"http://127.0.0.1:{logged_port}/ready", logged)
            args.logged_before = log_rows(Path(logged_env[DATA_DIR]))
            args.logged_before_shadowed = log_rows(
                Path(logged_env[DATA_DIR]), "shadow_probability IS NOT NULL"
            )
            logged_cases = [("local", LOGGED, logged_port, "/predict", users, logged.pid)]
        if "local" in envs and args.textbook_requests > 0:
            textbook_port = free_port()
            textbook = start(stack, textbook_command(textbook_port), local_env)
            wait_until(f"http://127.0.0.1:{textbook_port}/health", textbook)
            textbook_cases = [("local", TEXTBOOK, textbook_port, "/predict", users, textbook.pid)]
        if args.large_data_dir is not None:
            large_port = free_port()
            large_env = server_env(args.large_data_dir.resolve())
            large = start(stack, ours_command(large_port), large_env)
            wait_until(f"http://127.0.0.1:{large_port}/ready", large, timeout=600)
            scratch_users = scratch / "large-users.txt"
            large_users, args.large_users = users_file(args.large_seeds, scratch_users)
            large_cases = [("local", LARGE, large_port, "/predict", large_users, large.pid)]

        rows = []
        for round_ in range(args.rounds):
            for client in args.clients:
                for concurrency in args.concurrency:
                    cases = [
                        case
                        for profile, (port, process, _, _) in servers.items()
                        for case in (
                            (profile, HEALTH, port, "/health", None, process.pid),
                            (profile, PREDICT, port, "/predict", users, process.pid),
                        )
                    ]
                    for profile, name, port, path, bodies, pid in (
                        cases + logged_cases + textbook_cases + large_cases
                    ):
                        requests = args.textbook_requests if name == TEXTBOOK else args.requests
                        result = run_case(
                            client, port, path, bodies, concurrency, args, pid, requests
                        )
                        rss, peak = memory_mb(pid)
                        rows.append(
                            {
                                "round": round_,
                                "client": client,
                                "profile": profile,
                                "case": name,
                                "concurrency": concurrency,
                                **result,
                                "rss": rss,
                                "peak": peak,
                            }
                        )
                        print(
                            f"round {round_} {client:<5} c={concurrency:<3} {profile:<8} "
                            f"{name:<28} p50 {result['p50']:7.2f} ms  "
                            f"p95 {result['p95']:7.2f}  p99 {result['p99']:7.2f}  "
                            f"{result['rps']:8.1f} req/s  CPU {result['cpu_us']:7.0f} us/req  "
                            f"errors {result['errors']} {result['error_statuses'] or ''}  "
                            f"RSS {rss:.0f} MB",
                            flush=True,
                        )
        if large_cases:
            # What the large server holds once many distinct users have been read, one request
            # each: its caches fill with users, not with the same few thousand again.
            distinct, _ = users_file(args.large_seeds, scratch / "distinct.txt", DISTINCT)
            before = memory_mb(large.pid)[0]
            run_case("raw", large_port, "/predict", distinct, 8, args, large.pid, DISTINCT)
            args.distinct_rss = (before, *memory_mb(large.pid))
            print(
                f"large stores: RSS {before:.0f} MB -> {args.distinct_rss[1]:.0f} MB after "
                f"{DISTINCT:,} distinct users",
                flush=True,
            )
        if logged_cases:
            args.soak = soak(rows, args, logged, logged_port, users, Path(logged_env[DATA_DIR]))
        startups = {profile: (startup, rss) for profile, (_, _, startup, rss) in servers.items()}
        report = render(rows, args, startups, (load_before, os.getloadavg()[0]))
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(report)
        print(report)


DATA_DIR = "STREAMFLOW_DATA_DIR"


def log_rows(data_dir: Path, where: str = "true") -> int:
    """Rows in the local prediction log under `data_dir` (0 before the first write)."""
    import sqlite3

    path = data_dir / "serving" / "predictions.sqlite"
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path)) as conn:
        exists = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 'prediction_log'"
        ).fetchone()[0]
        if not exists:
            return 0
        return conn.execute(f"SELECT count(*) FROM prediction_log WHERE {where}").fetchone()[0]


def soak(
    rows: list[dict],
    args: argparse.Namespace,
    server: subprocess.Popen,
    port: int,
    users: Path,
    data_dir: Path,
) -> dict:
    """`--log-soak-seconds` of /predict at c=32 against the logging server, then SIGTERM: how
    many answers it gave in the whole run, and how many rows its prediction log holds."""
    rps = max((r["rps"] for r in rows if r["case"] == LOGGED), default=1000.0)
    requests = int(rps * args.log_soak_seconds)
    started = time.perf_counter()
    result = run_case("raw", port, "/predict", users, 32, args, server.pid, requests)
    seconds = time.perf_counter() - started
    sent = [r for r in rows if r["case"] == LOGGED] + [result | {"requests": requests}]
    answered = sum((r.get("requests") or args.requests) + args.warmup - r["errors"] for r in sent)
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    dropped = next(
        float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("streamflow_prediction_log_dropped_total ")
    )
    rss = memory_mb(server.pid)[0]
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=60)
    after = log_rows(data_dir)
    shadowed = log_rows(data_dir, "shadow_probability IS NOT NULL") - args.logged_before_shadowed
    figures = {
        "seconds": seconds,
        "requests": requests,
        "p50": result["p50"],
        "p99": result["p99"],
        "rps": result["rps"],
        "answered": answered,
        "rows": after - args.logged_before,
        "shadowed": shadowed,
        "dropped": dropped,
        "rss": rss,
    }
    print(f"prediction log soak: {figures}", flush=True)
    return figures


def log_lines(rows: list[dict], args: argparse.Namespace) -> list[str]:
    """The server with the prediction log on and the shadow at 10 % against the same server
    with neither, same run, cases interleaved (issue 24)."""
    lines = [
        "",
        f"Prediction log (issue 24): `{LOGGED}` is a second local `streamflow serve` with the log "
        f"on and the shadow ({SHADOW_URI}) at {SHADOW_FRACTION:.0%}; `{PREDICT}` (local) has "
        "both off. Medians over the rounds:",
        "",
    ]

    def verdict(met: bool) -> str:
        return "met" if met else "**missed**"

    for client in args.clients:
        for concurrency in args.concurrency:
            off = figures(rows, client, "local", PREDICT, concurrency)
            on = figures(rows, client, "local", LOGGED, concurrency)
            p50, p99 = on["p50"] / off["p50"], on["p99"] / off["p99"]
            lines.append(
                f"- {client}, c={concurrency}: p50 {on['p50']:.2f} ms vs {off['p50']:.2f} "
                f"({p50:.2f}x), p99 {on['p99']:.2f} vs {off['p99']:.2f} ({p99:.2f}x), "
                f"target ≤ {LOG_RATIO_TARGET:g}x: {verdict(max(p50, p99) <= LOG_RATIO_TARGET)}"
            )
    rss = max(r["rss"] for r in rows if r["case"] == LOGGED)
    soaked = args.soak
    lines += [
        f"- RSS of the logging server after load: {max(rss, soaked['rss']):.0f} MB (target < "
        f"{RSS_TARGET_MB:g} MB): {verdict(max(rss, soaked['rss']) < RSS_TARGET_MB)}",
        f"- {soaked['seconds']:.0f} s at c=32 ({soaked['requests']:,} requests, "
        f"{soaked['rps']:,.0f} req/s, p50 {soaked['p50']:.2f} ms, p99 {soaked['p99']:.2f} ms), "
        f"then SIGTERM: {soaked['answered']:,} answers given in the run, {soaked['rows']:,} log "
        f"rows ({soaked['shadowed']:,} with the shadow's answer), {soaked['dropped']:.0f} "
        f"dropped: {verdict(soaked['rows'] == soaked['answered'])}",
    ]
    return lines


def machine() -> str:
    """The machine a report ran on: `nproc`, `free -g` and the CPU model."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    free = subprocess.run(["free", "-g"], capture_output=True, text=True).stdout.rstrip()
    return "\n".join(
        [
            f"Machine: `nproc` {nproc}, {cpu}, CPython {platform.python_version()}; `free -g`:",
            "",
            "```",
            free,
            "```",
        ]
    )


# The targets of issue 13 (local), checked by `verdicts` from one run.
RATIO_TARGET, P99_TARGET_MS, RPS_TARGET, RSS_TARGET_MB = 2.0, 10.0, 1500.0, 400.0
# Issue 21: the postgres profile's /predict p50 within this many times its own /health at c=8.
POSTGRES_RATIO_TARGET = 2.5
# How each profile's server reads a user's 14 features.
READS = {
    "local": "one SQLite query (a UNION ALL over the four views' tables)",
    "postgres": "one prepared PostgreSQL query (the same UNION ALL, binary results) on the event "
    "loop's own connection; requests that arrive while a query runs share the next one",
    "cluster": "one Redis HMGET (Feast keeps a user's views in one hash)",
}


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def figures(rows: list[dict], client: str, profile: str, case: str, concurrency: int) -> dict:
    """A case's rows of every round: its p50, p99 and req/s, the median over the rounds."""
    picked = [
        r
        for r in rows
        if (r["client"], r["profile"], r["case"], r["concurrency"])
        == (client, profile, case, concurrency)
    ]
    return {key: median([r[key] for r in picked]) for key in ("p50", "p99", "rps", "cpu_us")} | {
        "rounds": picked
    }


def ratios(rows: list[dict], client: str, profile: str, concurrency: int) -> list[float]:
    """/predict p50 ÷ the same server's /health p50, per round (measured side by side)."""
    key = (client, profile, concurrency)
    by = {
        (r["round"], r["case"]): r
        for r in rows
        if (r["client"], r["profile"], r["concurrency"]) == key
    }
    rounds = sorted({round_ for round_, _ in by})
    return [by[(n, PREDICT)]["p50"] / by[(n, HEALTH)]["p50"] for n in rounds]


def verdicts(rows: list[dict], args: argparse.Namespace) -> list[str]:
    """Each target with its figure (medians over the rounds), met or missed, or not measured."""

    def verdict(met: bool) -> str:
        return "met" if met else "**missed**"

    client, lines = args.clients[0], []
    if "local" in args.profiles:
        lines += ["Targets of issue 13 (local profile):", ""]
        if 8 in args.concurrency:
            ratio = median(ratios(rows, client, "local", 8))
            p99 = figures(rows, client, "local", PREDICT, 8)["p99"]
            lines += [
                f"- /predict p50 ÷ /health p50 at c=8: {ratio:.2f} (target ≤ {RATIO_TARGET:g}): "
                f"{verdict(ratio <= RATIO_TARGET)}",
                f"- /predict p99 at c=8: {p99:.2f} ms (target < {P99_TARGET_MS:g} ms): "
                f"{verdict(p99 < P99_TARGET_MS)}",
            ]
        else:
            lines.append("- ratio and p99 at c=8: not measured (run with `--concurrency 8`)")
        if 32 in args.concurrency:
            rps = figures(rows, client, "local", PREDICT, 32)["rps"]
            lines.append(
                f"- /predict throughput at c=32: {rps:,.0f} req/s (target ≥ {RPS_TARGET:,.0f}): "
                f"{verdict(rps >= RPS_TARGET)}"
            )
        else:
            lines.append("- throughput at c=32: not measured (run with `--concurrency 32`)")
        rss = max(r["rss"] for r in rows if r["profile"] == "local" and r["case"] != TEXTBOOK)
        lines += [
            f"- API RSS after load: {rss:.0f} MB (target < {RSS_TARGET_MB:g} MB): "
            f"{verdict(rss < RSS_TARGET_MB)}",
            "",
        ]
    lines += ["Targets of issue 21 (item 5):", ""]
    if "postgres" in args.profiles and 8 in args.concurrency:
        each = ratios(rows, client, "postgres", 8)
        ratio = median(each)
        lines.append(
            f"- postgres profile, /predict p50 ÷ its own /health p50 at c=8, real seeds: "
            f"{ratio:.2f} (median of {', '.join(f'{r:.2f}' for r in each)}; target ≤ "
            f"{POSTGRES_RATIO_TARGET:g}): {verdict(ratio <= POSTGRES_RATIO_TARGET)}"
        )
    else:
        lines.append("- postgres profile at c=8: not measured (`--profiles postgres`, c=8)")
    lines += [
        "- postgres profile over 1M users, p50 ≤ 3 ms: not measured by this run (it serves the "
        "real seeds only)",
        "",
    ]
    return lines


def large_lines(args: argparse.Namespace, rows: list[dict]) -> list[str]:
    """/predict over the large stores against the same case over the real seeds' (issue 14)."""
    lines = [
        "",
        f"Over the large stores ({args.large_users:,} users, `{args.large_data_dir}`) against "
        f"the seeds' ({args.users:,} users), same run, same cases interleaved (medians):",
        "",
    ]
    for client in args.clients:
        for concurrency in args.concurrency:
            small = figures(rows, client, "local", PREDICT, concurrency)
            large = figures(rows, client, "local", LARGE, concurrency)
            lines.append(
                f"- {client}, c={concurrency}: p50 {large['p50']:.2f} ms vs {small['p50']:.2f} "
                f"({large['p50'] / small['p50']:.2f}x), p99 {large['p99']:.2f} vs "
                f"{small['p99']:.2f}"
            )
    large_rss = max(r["rss"] for r in rows if r["case"] == LARGE)
    before, after, peak = args.distinct_rss
    lines += [
        f"- RSS after load over the large stores: {large_rss:.0f} MB (target < "
        f"{RSS_TARGET_MB:g} MB)",
        f"- then {DISTINCT:,} distinct users, one request each (c=8): RSS {before:.0f} MB "
        f"before, {after:.0f} MB after, peak {peak:.0f} MB (target < {RSS_TARGET_MB:g} MB)",
    ]
    return lines


def render(rows: list[dict], args: argparse.Namespace, startups: dict, load_avg) -> str:
    large = (
        f"; `{LARGE}` a second local `streamflow serve` over stores of {args.large_users:,} users"
        if args.large_data_dir
        else ""
    )
    textbook = (
        "; `POST /predict textbook` is `bench/textbook_server.py` over the local stores (per "
        "request the Feast SDK read and the logged scikit-learn Pipeline through `mlflow.pyfunc`)"
        if "local" in args.profiles and args.textbook_requests > 0
        else ""
    )
    command = " ".join(
        ["python bench/serve.py", f"--profiles {','.join(args.profiles)}"]
        + [f"--rounds {args.rounds}"] * (args.rounds > 1)
        + [f"--concurrency {' '.join(map(str, args.concurrency))}"]
        + ["--prediction-log"] * args.prediction_log
    )
    lines = [
        "# Serving benchmark",
        "",
        f"`{command}`: {args.requests} requests per case ({args.textbook_requests} for the "
        f"textbook) after {args.warmup} warm-up, the cases interleaved per concurrency, "
        f"{args.rounds} round(s); the load generator runs in its own process on loopback, one "
        "keep-alive connection per concurrent client: `raw` is asyncio + uvloop sockets parsing "
        "only the status line and Content-Length (the tightest floor), `httpx` an "
        "`httpx.AsyncClient` (opt-in: it costs about a millisecond per request itself). "
        f"`/predict` bodies take, in turn, a seeded random sample of the {args.users:,} users of "
        "the newest seeds month. One `streamflow serve` (one uvicorn process) per profile, over "
        f"stores built by the pipeline from the seeds{textbook}{large}. {os.cpu_count()} CPUs "
        "shared by servers, database servers and load generator; 1-minute load average "
        f"{load_avg[0]:.1f} before and {load_avg[1]:.1f} after the run (the machine is shared "
        "with other work, whose load lands on every case alike).",
        "",
        "How each profile's server reads a user's features (one round trip each):",
        "",
        *(f"- {profile}: {READS[profile]}" for profile in args.profiles),
        "",
        machine(),
        "",
        "| round | client | c | profile | case | p50 ms | p95 ms | p99 ms | req/s | "
        "server CPU µs/req | errors | server RSS MB |",
        "|---:|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['round']} | {r['client']} | {r['concurrency']} | {r['profile']} | "
            f"{r['case']} | {r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} | "
            f"{r['rps']:,.1f} | {r['cpu_us']:,.0f} | {r['errors']} | {r['rss']:.0f} |"
        )
    lines += [
        "",
        "Per profile and concurrency (medians over the rounds; the ratio is each round's "
        "/predict p50 over the same server's /health p50, measured side by side):",
        "",
        "| client | c | profile | /predict p50 ÷ /health p50 | /predict p50 ms | "
        "/predict p99 ms | /predict req/s | server CPU µs per /predict, per /health |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for client in args.clients:
        for concurrency in args.concurrency:
            for profile in args.profiles:
                each = ratios(rows, client, profile, concurrency)
                ours = figures(rows, client, profile, PREDICT, concurrency)
                health = figures(rows, client, profile, HEALTH, concurrency)
                lines.append(
                    f"| {client} | {concurrency} | {profile} | **{median(each):.2f}** "
                    f"({', '.join(f'{r:.2f}' for r in each)}) | {ours['p50']:.2f} | "
                    f"{ours['p99']:.2f} | {ours['rps']:,.0f} | {ours['cpu_us']:,.0f}, "
                    f"{health['cpu_us']:,.0f} |"
                )
    lines.append("")
    for profile, (startup, startup_rss) in startups.items():
        served = [r for r in rows if r["profile"] == profile and r["case"] in (HEALTH, PREDICT)]
        lines.append(
            f"- `streamflow serve` ({profile}) RSS: {startup_rss:.0f} MB after start, "
            f"{max(r['rss'] for r in served):.0f} MB after load, peak "
            f"{max(r['peak'] for r in served):.0f} MB; ready {startup:.0f} s after launch."
        )
    if "local" in args.profiles and args.textbook_requests > 0:
        for client in args.clients:
            for concurrency in args.concurrency:
                ours = figures(rows, client, "local", PREDICT, concurrency)
                book = figures(rows, client, "local", TEXTBOOK, concurrency)
                lines.append(
                    f"- {client}, c={concurrency}: local /predict throughput "
                    f"{ours['rps'] / book['rps']:.0f}x the textbook's"
                )
        book_peak = max(r["peak"] for r in rows if r["case"] == TEXTBOOK)
        lines.append(f"- textbook server peak RSS {book_peak:.0f} MB")
    lines += [
        *(large_lines(args, rows) if args.large_data_dir else []),
        *(log_lines(rows, args) if args.prediction_log else []),
        "",
        *verdicts(rows, args),
        *(
            f"- **{r['errors']} errors** (HTTP {r['error_statuses']}) in {r['profile']} "
            f"{r['case']} at c={r['concurrency']}, round {r['round']}: its figures are not valid"
            for r in rows
            if r["errors"]
        ),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
