"""Sustained mixed load on a real `streamflow serve`: errors, 5xx, latency, throughput, memory.

Starts `streamflow serve` over stores built by the pipeline from the real seeds, then drives it
from a separate process: `--concurrency` clients (httpx.AsyncClient, one keep-alive connection
each) send a mix of POST /predict (70%), POST /predict/batch of 20 users (10%) and
GET /features/{user_id} (20%) over the 7,043 real users, first for `--warmup` seconds, then for
`--seconds`. Prints and reports errors (transport errors and any status but 200), 5xx, p50/p99
per route, requests/s, and the server's RSS after the warm-up and after the run.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
from serve import DEFAULT_SEEDS, REPO_ROOT, VENV_BIN, build_stores, free_port, memory_mb, wait_until

MIX = (("POST /predict", 0.7), ("POST /predict/batch", 0.1), ("GET /features/{user_id}", 0.2))
BATCH_SIZE = 20
RSS_TARGET = 1.10


async def _client(
    client: httpx.AsyncClient, users: list[str], deadline: float, rng: random.Random, out: dict
) -> None:
    routes, weights = zip(*MIX, strict=True)
    while time.monotonic() < deadline:
        route = rng.choices(routes, weights)[0]
        started = time.perf_counter()
        try:
            if route == "POST /predict":
                answer = await client.post("/predict", json={"user_id": rng.choice(users)})
            elif route == "POST /predict/batch":
                ids = rng.sample(users, BATCH_SIZE)
                answer = await client.post("/predict/batch", json={"user_ids": ids})
            else:
                answer = await client.get(f"/features/{rng.choice(users)}")
            status = answer.status_code
        except httpx.HTTPError as error:
            out["transport_errors"].append(f"{route}: {type(error).__name__}: {error}")
            continue
        out["latency"].setdefault(route, []).append((time.perf_counter() - started) * 1000)
        out["statuses"][str(status)] = out["statuses"].get(str(status), 0) + 1


async def _drive(url: str, users: list[str], seconds: float, concurrency: int) -> dict:
    out: dict = {"latency": {}, "statuses": {}, "transport_errors": []}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        deadline = time.monotonic() + seconds
        started = time.monotonic()
        await asyncio.gather(
            *(_client(client, users, deadline, random.Random(n), out) for n in range(concurrency))
        )
        out["seconds"] = time.monotonic() - started
    return out


def drive(args: argparse.Namespace) -> None:
    users = Path(args.users).read_text().split()
    print(json.dumps(asyncio.run(_drive(args.url, users, args.seconds, args.concurrency))))


def run_load(url: str, users: Path, seconds: float, concurrency: int) -> dict:
    """One load phase in its own process (so the client's CPU is not the server's)."""
    command = [sys.executable, __file__, "--drive", "--url", url, "--users", str(users)]
    command += ["--seconds", str(seconds), "--concurrency", str(concurrency)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    free = subprocess.run(["free", "-g"], capture_output=True, text=True).stdout.strip()
    python = platform.python_version()
    return f"`nproc` {os.cpu_count()}, CPU {cpu}, CPython {python}\n\n```\n{free}\n```"


def render(
    args: argparse.Namespace, run: dict, rss_warm: float, rss_after: float, load: tuple
) -> str:
    total = sum(run["statuses"].values())
    errors = len(run["transport_errors"]) + total - run["statuses"].get("200", 0)
    server_errors = sum(n for status, n in run["statuses"].items() if status.startswith("5"))
    ratio = rss_after / rss_warm
    lines = [
        "# Load benchmark",
        "",
        f"`python bench/load.py`: {args.seconds:.0f} s at concurrency {args.concurrency} after "
        f"{args.warmup:.0f} s of warm-up, against one `streamflow serve` process over stores "
        "built by the pipeline from the real seeds; the load generator (httpx.AsyncClient, one "
        "keep-alive connection per client) runs in its own process on the same machine. Mix: "
        + ", ".join(f"{route} {share:.0%}" for route, share in MIX)
        + f" (batches of {BATCH_SIZE} users); users drawn from the 7,043 real ones.",
        "",
        f"Machine: {machine()}",
        "",
        f"1-minute load average {load[0]:.1f} before and {load[1]:.1f} after (the machine is "
        "shared with other work).",
        "",
        "| route | requests | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
    ]
    for route, values in sorted(run["latency"].items()):
        lines.append(
            f"| {route} | {len(values):,} | {percentile(values, 0.5):.2f} | "
            f"{percentile(values, 0.99):.2f} |"
        )
    lines += [
        "",
        f"- requests: {total:,} in {run['seconds']:.1f} s = {total / run['seconds']:,.1f} req/s",
        f"- statuses: {run['statuses']}",
        f"- errors: {errors} (transport errors {len(run['transport_errors'])}); "
        f"5xx: {server_errors}",
        f"- server RSS: {rss_warm:.1f} MB after warm-up, {rss_after:.1f} MB after the run: "
        f"ratio {ratio:.3f} (target < {RSS_TARGET}) — {'met' if ratio < RSS_TARGET else 'MISSED'}",
        f"- target 0 errors, 0 5xx — {'met' if errors == 0 and server_errors == 0 else 'MISSED'}",
    ]
    if run["transport_errors"]:
        lines += ["", "First transport errors:", ""]
        lines += [f"- {error}" for error in run["transport_errors"][:10]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data-dir", type=Path, help="stores built by the pipeline (default: build)"
    )
    parser.add_argument("--seeds", type=Path, default=DEFAULT_SEEDS)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--report", type=Path, default=REPO_ROOT / "bench/reports/load.md")
    parser.add_argument("--drive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--users", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        drive(args)
        return

    load_before = os.getloadavg()[0]
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-load-")))
        data_dir = (args.data_dir or scratch / "data").resolve()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMFLOW_", "DAGSTER"))}
        env |= {"STREAMFLOW_DATA_DIR": str(data_dir)}
        if not (data_dir / "mlflow" / "mlflow.db").exists():
            build_stores(args.seeds, data_dir, env)
        users = scratch / "users.txt"
        with open(args.seeds / "month_001" / "users.csv", newline="") as source:
            users.write_text("\n".join(row["user_id"] for row in csv.DictReader(source)))
        port = free_port()
        server = subprocess.Popen(
            [str(VENV_BIN / "streamflow"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stack.callback(server.wait)
        stack.callback(server.terminate)
        url = f"http://127.0.0.1:{port}"
        wait_until(f"{url}/ready", server)
        print(f"warm-up {args.warmup:.0f} s at concurrency {args.concurrency} ...", flush=True)
        run_load(url, users, args.warmup, args.concurrency)
        rss_warm, _ = memory_mb(server.pid)
        print(f"run {args.seconds:.0f} s ...", flush=True)
        run = run_load(url, users, args.seconds, args.concurrency)
        rss_after, _ = memory_mb(server.pid)
    report = render(args, run, rss_warm, rss_after, (load_before, os.getloadavg()[0]))
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
