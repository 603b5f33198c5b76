"""Serving latency and throughput: /health, /predict and the textbook /predict, side by side.

Starts `streamflow serve` and `bench/textbook_server.py` on loopback over the same stores, then
drives each case with a load generator in a separate process (lean asyncio sockets and/or an
httpx.AsyncClient, one keep-alive connection per concurrent client) at each concurrency with the
same number of requests, and reports p50/p95/p99 latency, throughput and the servers' memory.
With `--large-data-dir` (stores the pipeline built from large generated seeds, e.g. 1M users) a
second `streamflow serve` over them runs the same /predict case in the same run, interleaved:

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data-dir", type=Path, help="stores built by the pipeline (default: build)"
    )
    parser.add_argument("--seeds", type=Path, default=DEFAULT_SEEDS)
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
    if (args.large_data_dir is None) != (args.large_seeds is None):
        parser.error("--large-data-dir and --large-seeds go together")

    load_before = os.getloadavg()[0]
    with ExitStack() as stack:
        env, users, args.users = prepare(stack, args)
        ours_port, textbook_port = free_port(), free_port()
        ours = start(stack, ours_command(ours_port), env)
        textbook = start(stack, textbook_command(textbook_port), env)
        started = time.perf_counter()
        wait_until(f"http://127.0.0.1:{ours_port}/ready", ours)
        startup = time.perf_counter() - started
        print(f"streamflow serve ready in {startup:.1f}s", flush=True)
        wait_until(f"http://127.0.0.1:{textbook_port}/health", textbook)
        startup_rss = memory_mb(ours.pid)[0]
        large_cases = []
        if args.large_data_dir is not None:
            large_port = free_port()
            large_env = server_env(args.large_data_dir.resolve())
            large = start(stack, ours_command(large_port), large_env)
            wait_until(f"http://127.0.0.1:{large_port}/ready", large, timeout=600)
            scratch = users.parent / "large-users.txt"
            large_users, args.large_users = users_file(args.large_seeds, scratch)
            large_cases = [(LARGE, large_port, "/predict", large_users, large.pid, args.requests)]

        rows = []
        for client in args.clients:
            for concurrency in args.concurrency:
                cases = [
                    (HEALTH, ours_port, "/health", None, ours.pid, args.requests),
                    (PREDICT, ours_port, "/predict", users, ours.pid, args.requests),
                    (
                        TEXTBOOK,
                        textbook_port,
                        "/predict",
                        users,
                        textbook.pid,
                        args.textbook_requests,
                    ),
                    *large_cases,
                ]
                for name, port, path, bodies, pid, requests in cases:
                    result = run_case(client, port, path, bodies, concurrency, args, pid, requests)
                    rss, peak = memory_mb(pid)
                    rows.append(
                        {"client": client, "case": name, "concurrency": concurrency, **result}
                    )
                    rows[-1] |= {"rss": rss, "peak": peak}
                    print(
                        f"{client:<5} c={concurrency:<3} {name:<24} p50 {result['p50']:7.2f} ms  "
                        f"p95 {result['p95']:7.2f}  p99 {result['p99']:7.2f}  "
                        f"{result['rps']:8.1f} req/s  CPU {result['cpu_us']:7.0f} us/req  "
                        f"errors {result['errors']} {result['error_statuses'] or ''}  "
                        f"RSS {rss:.0f} MB",
                        flush=True,
                    )
        if large_cases:
            # What the large server holds once many distinct users have been read, one request
            # each: its caches fill with users, not with the same few thousand again.
            distinct, _ = users_file(args.large_seeds, users.parent / "distinct.txt", DISTINCT)
            before = memory_mb(large.pid)[0]
            run_case("raw", large_port, "/predict", distinct, 8, args, large.pid, DISTINCT)
            args.distinct_rss = (before, *memory_mb(large.pid))
            print(
                f"large stores: RSS {before:.0f} MB -> {args.distinct_rss[1]:.0f} MB after "
                f"{DISTINCT:,} distinct users",
                flush=True,
            )
        report = render(rows, args, startup, startup_rss, (load_before, os.getloadavg()[0]))
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(report)
        print(report)


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


# The targets of issue 13, checked by `verdicts` from one run.
RATIO_TARGET, P99_TARGET_MS, RPS_TARGET, RSS_TARGET_MB = 2.0, 10.0, 1500.0, 400.0


def verdicts(by: dict, client: str, rss_after_load: float) -> list[str]:
    """Each target with its figure, met or missed (or not measured, without its concurrency)."""

    def verdict(met: bool) -> str:
        return "met" if met else "**missed**"

    health, ours, busiest = (
        by.get((client, case, c)) for case, c in ((HEALTH, 8), (PREDICT, 8), (PREDICT, 32))
    )
    lines = []
    if health and ours:
        ratio = ours["p50"] / health["p50"]
        lines += [
            f"- /predict p50 ÷ /health p50 at c=8: {ratio:.2f} ({ours['p50']:.2f} ms ÷ "
            f"{health['p50']:.2f} ms; target ≤ {RATIO_TARGET:g}): {verdict(ratio <= RATIO_TARGET)}",
            f"- /predict p99 at c=8: {ours['p99']:.2f} ms (target < {P99_TARGET_MS:g} ms): "
            f"{verdict(ours['p99'] < P99_TARGET_MS)}",
        ]
    else:
        lines.append("- ratio and p99 at c=8: not measured (run with `--concurrency 8`)")
    if busiest:
        lines.append(
            f"- /predict throughput at c=32: {busiest['rps']:,.0f} req/s (target ≥ "
            f"{RPS_TARGET:,.0f}): {verdict(busiest['rps'] >= RPS_TARGET)}"
        )
    else:
        lines.append("- throughput at c=32: not measured (run with `--concurrency 32`)")
    lines.append(
        f"- API RSS after load: {rss_after_load:.0f} MB (target < {RSS_TARGET_MB:g} MB): "
        f"{verdict(rss_after_load < RSS_TARGET_MB)}"
    )
    return lines


def large_lines(by: dict, args: argparse.Namespace, rows: list[dict]) -> list[str]:
    """/predict over the large stores against the same case over the real seeds' (issue 14)."""
    lines = [
        "",
        f"Over the large stores ({args.large_users:,} users, `{args.large_data_dir}`) against "
        f"the seeds' ({args.users:,} users), same run, same cases interleaved:",
        "",
    ]
    for client in args.clients:
        for concurrency in args.concurrency:
            small, large = by[(client, PREDICT, concurrency)], by[(client, LARGE, concurrency)]
            lines.append(
                f"- {client}, c={concurrency}: p50 {large['p50']:.2f} ms vs {small['p50']:.2f} "
                f"({large['p50'] / small['p50']:.2f}x), p99 {large['p99']:.2f} vs "
                f"{small['p99']:.2f}, server CPU {large['cpu_us']:,.0f} vs {small['cpu_us']:,.0f} "
                f"µs/req ({large['cpu_us'] / small['cpu_us']:.2f}x)"
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


def render(
    rows: list[dict], args: argparse.Namespace, startup: float, startup_rss: float, load_avg
) -> str:
    by = {(r["client"], r["case"], r["concurrency"]): r for r in rows}
    large = (
        f" and `{LARGE}` a second `streamflow serve` over stores of {args.large_users:,} users"
        if args.large_data_dir
        else ""
    )
    lines = [
        "# Serving benchmark",
        "",
        f"`python bench/serve.py`: {args.requests} requests per case ({args.textbook_requests} "
        f"for the textbook) after {args.warmup} warm-up, "
        "the cases interleaved per concurrency; the load generator runs in its own process "
        "on loopback, one keep-alive connection per concurrent client: `raw` is asyncio + uvloop "
        "sockets parsing only the status line and Content-Length (the tightest floor), `httpx` "
        "an `httpx.AsyncClient` (opt-in: it costs about a millisecond per request itself). "
        f"`/predict` bodies take, in turn, a seeded random sample of the {args.users:,} users of "
        "the newest seeds month. Servers: `streamflow serve` and "
        "`bench/textbook_server.py` (per request the Feast SDK read and the logged scikit-learn "
        "Pipeline through `mlflow.pyfunc`), one uvicorn process each, over the same stores built "
        f"by the pipeline from the seeds{large}. {os.cpu_count()} CPUs shared by servers and "
        f"load generator; 1-minute load average {load_avg[0]:.1f} before and {load_avg[1]:.1f} "
        "after the run (the machine is shared with other work, whose load lands on every case).",
        "",
        machine(),
        "",
        "| client | concurrency | case | p50 ms | p95 ms | p99 ms | req/s | server CPU µs/req | "
        "errors | server RSS MB |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['client']} | {r['concurrency']} | {r['case']} | {r['p50']:.2f} | "
            f"{r['p95']:.2f} | {r['p99']:.2f} | {r['rps']:,.1f} | {r['cpu_us']:,.0f} | "
            f"{r['errors']} | {r['rss']:.0f} |"
        )
    lines += ["", "Ratios, per concurrency:", ""]
    for client in args.clients:
        for concurrency in args.concurrency:
            health = by[(client, HEALTH, concurrency)]
            ours = by[(client, PREDICT, concurrency)]
            textbook = by[(client, TEXTBOOK, concurrency)]
            lines.append(
                f"- {client}, c={concurrency}: /predict p50 = {ours['p50'] / health['p50']:.2f}x "
                f"/health p50; throughput {ours['rps'] / textbook['rps']:.0f}x the textbook's; "
                f"p99 {ours['p99']:.2f} ms"
            )
    ours_rows = [r for r in rows if r["case"] in (HEALTH, PREDICT)]
    rss_after_load = max(r["rss"] for r in ours_rows)
    peak = max(r["peak"] for r in ours_rows)
    textbook_peak = max(r["peak"] for r in rows if r["case"] == TEXTBOOK)
    lines += [
        f"- `streamflow serve` RSS: {startup_rss:.0f} MB after start, {rss_after_load:.0f} MB "
        f"after load, peak {peak:.0f} MB (textbook peak {textbook_peak:.0f} MB); ready "
        f"{startup:.0f} s after launch (started beside the textbook server).",
        *(large_lines(by, args, rows) if args.large_data_dir else []),
        "",
        "Targets (issue 13):",
        "",
        *verdicts(by, args.clients[0], rss_after_load),
        *(
            f"- **{r['errors']} errors** (HTTP {r['error_statuses']}) in {r['case']} at "
            f"c={r['concurrency']}: its figures are not valid"
            for r in rows
            if r["errors"]
        ),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
