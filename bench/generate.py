"""Generator throughput: wall time, peak RSS, rows/s and bytes written per size, one child each."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from streamflow.ops.generator import DEFAULT_CHUNK_SIZE, generate_seeds


def child(out: Path, users: int, months: int, seed: int) -> None:
    summary = generate_seeds(out, users, months, seed)
    json.dump({"rows": sum(summary.rows_per_month), "bytes": summary.bytes_written}, sys.stdout)


def measure(out: Path, users: int, months: int, seed: int) -> dict[str, float]:
    """Run one generation in a fresh process; os.wait4 gives that child's own peak RSS."""
    command = [
        sys.executable,
        __file__,
        "--child",
        "--users",
        str(users),
        "--months",
        str(months),
        "--seed",
        str(seed),
        "--out",
        str(out),
    ]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"generation of {users} users failed with exit code {process.returncode}")
    result = json.loads(output)
    # ru_maxrss is in kilobytes on Linux.
    return {**result, "wall": wall, "rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--months", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, help="where to generate (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the generated seeds")
    parser.add_argument("--report", type=Path, help="also write the markdown table here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.out, args.users[0], args.months, args.seed)
        return

    base = args.out or Path(tempfile.mkdtemp(prefix="streamflow-generate-"))
    lines = [
        "# Generator benchmark",
        "",
        f"`generate_seeds(users, months={args.months}, seed={args.seed})`, chunk size "
        f"{DEFAULT_CHUNK_SIZE:,}, each size in its own child process (peak RSS from os.wait4). "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}. Rows written: user rows summed over "
        "months (each is one line in each of the six CSVs); the output directory is deleted "
        "after each size.",
        "",
        "| users | months | rows written | wall s | peak RSS MB | rows/s | MB written | MB/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    try:
        for users in args.users:
            out = base / f"users_{users}"
            r = measure(out, users, args.months, args.seed)
            line = (
                f"| {users:,} | {args.months} | {r['rows']:,} | {r['wall']:.1f} | "
                f"{r['rss_mb']:.0f} | {r['rows'] / r['wall']:,.0f} | {r['bytes'] / 1e6:,.0f} | "
                f"{r['bytes'] / 1e6 / r['wall']:.0f} |"
            )
            print(line, flush=True)
            lines.append(line)
            if not args.keep:
                shutil.rmtree(out)
    finally:
        if not args.keep and args.out is None:
            shutil.rmtree(base, ignore_errors=True)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
