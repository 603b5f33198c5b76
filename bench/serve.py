"""Serving latency and throughput: /health, /predict and the textbook /predict, side by side.

Starts `streamflow serve` and `bench/textbook_server.py` on loopback over the same stores, then
drives each case with a load generator in a separate process (asyncio + uvloop, keep-alive
HTTP/1.1 connections, one per concurrent client) at each concurrency with the same number of
requests, and reports p50/p95/p99 latency, throughput and the servers' resident memory.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
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


def _request(method: str, path: str, body: bytes | None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if body is None:
        return (head + "\r\n").encode()
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def _client(
    port: int, requests: list[bytes], next_index: list[int], latencies: list[float], errors: list
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while next_index[0] < len(requests):
            index = next_index[0]
            next_index[0] += 1
            started = time.perf_counter()
            writer.write(requests[index])
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            status = int(lines[0].split()[1])
            length = next(
                int(line.split(b":", 1)[1])
                for line in lines
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


async def _drive(port: int, requests: list[bytes], concurrency: int) -> dict[str, object]:
    latencies: list[float] = []
    errors: list[int] = []
    next_index = [0]
    started = time.perf_counter()
    await asyncio.gather(
        *(_client(port, requests, next_index, latencies, errors) for _ in range(concurrency))
    )
    wall = time.perf_counter() - started
    return {"latencies": latencies, "wall": wall, "errors": errors}


def load(args: argparse.Namespace) -> None:
    """Send `requests` (plus warm-up) at `concurrency`; print latencies and wall time as JSON."""
    import uvloop

    users = Path(args.user_ids).read_text().split() if args.user_ids else []
    requests = [
        _request(
            args.method,
            args.path,
            json.dumps({"user_id": users[i % len(users)]}).encode() if users else None,
        )
        for i in range(args.requests + args.warmup)
    ]
    (concurrency,) = args.concurrency
    uvloop.run(_drive(args.port, requests[: args.warmup], concurrency))
    result = uvloop.run(_drive(args.port, requests[args.warmup :], concurrency))
    json.dump(result, sys.stdout)


# The orchestration.


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


def run_case(port: int, path: str, users: Path | None, concurrency: int, args) -> dict:
    command = [sys.executable, __file__, "--load", "--port", str(port), "--path", path]
    command += ["--concurrency", str(concurrency), "--requests", str(args.requests)]
    command += ["--warmup", str(args.warmup)]
    if users is not None:
        command += ["--method", "POST", "--user-ids", str(users)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"load generator failed on {path}:\n{done.stderr}")
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
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data-dir", type=Path, help="stores built by the pipeline (default: build)"
    )
    parser.add_argument("--seeds", type=Path, default=DEFAULT_SEEDS)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
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

    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-serve-")))
        data_dir = (args.data_dir or scratch / "data").resolve()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMFLOW_", "DAGSTER"))}
        env |= {"STREAMFLOW_DATA_DIR": str(data_dir), "STREAMFLOW_RELOAD_INTERVAL_SECONDS": "30"}
        if not (data_dir / "mlflow" / "mlflow.db").exists():
            build_stores(args.seeds, data_dir, env)
        users_file = scratch / "users.txt"
        with open(args.seeds / "month_001" / "users.csv", newline="") as source:
            users_file.write_text("\n".join(row["user_id"] for row in csv.DictReader(source)))

        ours_port, textbook_port = free_port(), free_port()
        ours = subprocess.Popen(
            [
                str(VENV_BIN / "streamflow"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(ours_port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stack.callback(ours.wait)
        stack.callback(ours.terminate)
        textbook = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "bench" / "textbook_server.py")]
            + ["--host", "127.0.0.1", "--port", str(textbook_port)],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stack.callback(textbook.wait)
        stack.callback(textbook.terminate)
        started = time.perf_counter()
        wait_until(f"http://127.0.0.1:{ours_port}/ready", ours)
        print(f"streamflow serve ready in {time.perf_counter() - started:.1f}s", flush=True)
        wait_until(f"http://127.0.0.1:{textbook_port}/health", textbook)
        startup_rss = memory_mb(ours.pid)[0]

        rows = []
        for concurrency in args.concurrency:
            cases = [
                ("GET /health (floor)", ours_port, "/health", None, ours.pid),
                ("POST /predict", ours_port, "/predict", users_file, ours.pid),
                ("POST /predict textbook", textbook_port, "/predict", users_file, textbook.pid),
            ]
            for name, port, path, users, pid in cases:
                result = run_case(port, path, users, concurrency, args)
                rss, peak = memory_mb(pid)
                rows.append({"case": name, "concurrency": concurrency, **result, "rss": rss})
                rows[-1]["peak"] = peak
                print(
                    f"c={concurrency:<3} {name:<24} p50 {result['p50']:7.2f} ms  "
                    f"p95 {result['p95']:7.2f}  p99 {result['p99']:7.2f}  "
                    f"{result['rps']:8.1f} req/s  errors {result['errors']}  RSS {rss:.0f} MB",
                    flush=True,
                )
        report = render(rows, args, startup_rss, os.getloadavg())
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(report)
        print(report)


def render(rows: list[dict], args: argparse.Namespace, startup_rss: float, load_avg) -> str:
    by = {(r["case"], r["concurrency"]): r for r in rows}
    lines = [
        "# Serving benchmark",
        "",
        f"`python bench/serve.py` on loopback: {args.requests} requests per case after "
        f"{args.warmup} warm-up, cases interleaved per concurrency; load generator in its own "
        "process (asyncio + uvloop, keep-alive HTTP/1.1, one connection per concurrent client). "
        "`/predict` bodies cycle through the 7,043 real users. Servers: `streamflow serve` and "
        "`bench/textbook_server.py` (Feast SDK read + pyfunc RandomForest with `n_jobs=-1` per "
        "request), both one uvicorn process over the same stores built by the pipeline from the "
        f"real seeds. CPython {platform.python_version()}, {os.cpu_count()} CPUs; load average "
        f"at the end {load_avg[0]:.2f} (the machine is shared).",
        "",
        "| concurrency | case | p50 ms | p95 ms | p99 ms | req/s | errors | server RSS MB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['concurrency']} | {r['case']} | {r['p50']:.2f} | {r['p95']:.2f} | "
            f"{r['p99']:.2f} | {r['rps']:,.1f} | {r['errors']} | {r['rss']:.0f} |"
        )
    lines += ["", "Against the targets:", ""]
    for concurrency in args.concurrency:
        health = by[("GET /health (floor)", concurrency)]
        ours = by[("POST /predict", concurrency)]
        textbook = by[("POST /predict textbook", concurrency)]
        lines.append(
            f"- c={concurrency}: /predict p50 = {ours['p50'] / health['p50']:.2f}x /health p50; "
            f"throughput {ours['rps'] / textbook['rps']:.0f}x the textbook; "
            f"p99 {ours['p99']:.2f} ms"
        )
    peak = max(r["peak"] for r in rows if r["case"] != "POST /predict textbook")
    textbook_peak = max(r["peak"] for r in rows if r["case"] == "POST /predict textbook")
    lines += [
        f"- `streamflow serve` RSS: {startup_rss:.0f} MB after start, peak {peak:.0f} MB "
        f"(textbook peak {textbook_peak:.0f} MB).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
