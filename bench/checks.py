"""Benchmark: the snapshot store's memory on PostgreSQL, and the ingestion checks' time.

Two measurements, each in fresh processes, for this checkout and (with --baseline DIR) for
another tree of the code (e.g. `git archive <commit> streamflow_assets feature_repo | tar -x`),
side by side in one run:
  - store: one 1M-row table (usage_agg_30d of `streamflow generate --users N --months 1`)
    written to and read back from PostgreSQL by `PostgresSnapshotStore`: the process's RSS before,
    its peak during the call (VmHWM, reset just before), and the seconds;
  - checks: the ingestion group (the snapshots and their checks) of two months at --check-users
    on the local and postgres profiles: the step times of the second month, and the run's wall.
Prints markdown (and writes bench/reports/checks.md with --save).

    .venv/bin/python bench/checks.py --baseline /tmp/before --save
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parents[1]
PYTHON = str(REPO / ".venv" / "bin" / "python")
POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
TABLE = "usage_agg_30d_snapshots"

# One store call in a fresh process: RSS before it and the peak during it (Linux: writing 5 to
# /proc/self/clear_refs resets VmHWM to the current RSS).
STORE_RUNNER = """
import json, sys, time
from pathlib import Path
from streamflow.domain import months
from streamflow.domain.seeds import TABLES_BY_SNAPSHOT, parse_table
from streamflow.adapters.snapshots import PostgresSnapshotStore

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024

mode, dsn, folder, table = sys.argv[1:5]
store, as_of = PostgresSnapshotStore(dsn), months.as_of("2024-01")
if mode == "write":
    spec = TABLES_BY_SNAPSHOT[table]
    df, problems = parse_table(Path(folder) / spec.file, spec)
    assert not problems, problems
before = status("VmRSS")
Path("/proc/self/clear_refs").write_text("5")
started = time.perf_counter()
if mode == "write":
    store.write_month(as_of, {table: df})
    rows = len(df)
else:
    rows = len(store.read(table, as_of))
seconds = time.perf_counter() - started
print(json.dumps({"rows": rows, "before_mb": before, "peak_mb": status("VmHWM"),
                  "seconds": seconds}))
"""

# The ingestion group of two months in a fresh process; the step times of the second month.
CHECKS_RUNNER = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
from dagster import AssetSelection, Definitions, define_asset_job, instance_for_test
from streamflow.settings import get_settings
from streamflow_assets.definitions import build_definitions
from streamflow_assets.jobs import MONTHLY_PIPELINE
from streamflow.ops.pipeline import run_months

full = build_definitions(get_settings())
job = define_asset_job(MONTHLY_PIPELINE, selection=AssetSelection.groups("ingestion"))
defs = Definitions(assets=full.assets, asset_checks=full.asset_checks, jobs=[job],
                   resources=full.resources)
with instance_for_test() as instance:
    for key in ("2024-01", "2024-02"):
        started = time.perf_counter()
        (outcome,) = run_months([key], defs, instance)
        wall = time.perf_counter() - started
        if not outcome.success:
            sys.exit(f"{key} failed: {outcome.error}")
    steps = {s.step_key: s.end_time - s.start_time
             for s in instance.get_run_step_stats(outcome.run_id)}
print(json.dumps({"wall": wall, "checks": outcome.checks_passed + outcome.checks_failed,
                  "steps": steps}))
"""


def run(code: Path, script: str, args: list[str], env: dict[str, str]) -> dict:
    done = subprocess.run(
        [PYTHON, "-c", script, *args],
        env=os.environ | {"PYTHONPATH": str(code)} | env,
        capture_output=True,
        text=True,
        cwd=code,
    )
    if done.returncode:
        sys.exit(f"{code}: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def admin() -> psycopg.Connection:
    return psycopg.connect(dbname="postgres", autocommit=True, **POSTGRES)


def fresh_database() -> str:
    name = f"streamflow_bench_checks_{uuid.uuid4().hex[:8]}"
    with admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_database(name: str) -> None:
    with admin() as conn:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        conn.execute(drop.format(sql.Identifier(name)))


def generate(users: int, months: int, out: Path) -> Path:
    command = [str(REPO / ".venv" / "bin" / "streamflow"), "generate"]
    command += ["--users", str(users), "--months", str(months), "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True)
    return out


def store_rows(trees: dict[str, Path], seeds: Path) -> list[str]:
    lines = [
        "| code | call | rows | RSS before (MB) | peak (MB) | peak - before (MB) | seconds |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, code in trees.items():
        database = fresh_database()
        dsn = f"host={POSTGRES['host']} port={POSTGRES['port']} user=postgres dbname={database}"
        try:
            for mode in ("write", "read"):
                r = run(code, STORE_RUNNER, [mode, dsn, str(seeds / "month_000"), TABLE], {})
                lines.append(
                    f"| {name} | {mode} | {r['rows']:,} | {r['before_mb']:,.0f} | "
                    f"{r['peak_mb']:,.0f} | {r['peak_mb'] - r['before_mb']:,.0f} | "
                    f"{r['seconds']:.1f} |"
                )
        finally:
            drop_database(database)
    return lines


def check_rows(trees: dict[str, Path], seeds: Path, work: Path) -> list[str]:
    lines = [
        "| code | profile | run wall (s) | monthly_snapshots step (s) | 6 contract steps (s) "
        "| 6 row-count steps (s) | steps | check results |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for profile in ("local", "postgres"):
        for name, code in trees.items():
            env = {"STREAMFLOW_PROFILE": profile, "STREAMFLOW_SEEDS_DIR": str(seeds)}
            env["STREAMFLOW_DATA_DIR"] = str(work / f"{name}-{profile}")
            database = fresh_database() if profile == "postgres" else None
            if database:
                env["STREAMFLOW_POSTGRES_DB"] = database
            try:
                r = run(code, CHECKS_RUNNER, [], env)
            finally:
                if database:
                    drop_database(database)
            steps = r["steps"]
            asset = steps.pop("monthly_snapshots")
            contract = sum(s for key, s in steps.items() if key.endswith("_contract"))
            counts = sum(s for key, s in steps.items() if key.endswith("_row_count_change"))
            lines.append(
                f"| {name} | {profile} | {r['wall']:.1f} | {asset:.1f} | {contract:.1f} | "
                f"{counts:.1f} | {len(steps) + 1} | {r['checks']} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="another tree of the code to compare")
    parser.add_argument("--store-users", type=int, default=1_000_000)
    parser.add_argument("--check-users", type=int, default=100_000)
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    trees = {"this checkout": REPO} | ({"baseline": args.baseline} if args.baseline else {})
    with tempfile.TemporaryDirectory(prefix="bench-checks-") as tmp:
        work = Path(tmp)
        store = store_rows(trees, generate(args.store_users, 1, work / "store-seeds"))
        checks = check_rows(trees, generate(args.check_users, 2, work / "check-seeds"), work)
    load = os.getloadavg()
    baseline = " --baseline DIR" if args.baseline else ""
    report = "\n".join(
        [
            "# Snapshot store memory and ingestion checks",
            "",
            f"Command: `.venv/bin/python bench/checks.py{baseline}` (load average at the end: "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
            f"{os.cpu_count()} cores, other work on the machine).",
            "",
            f"## PostgresSnapshotStore, `{TABLE}` of {args.store_users:,} users",
            "",
            *store,
            "",
            f"## The ingestion group at {args.check_users:,} users (second month)",
            "",
            *checks,
            "",
        ]
    )
    print(report)
    if args.save:
        (REPO / "bench" / "reports" / "checks.md").write_text(report)


if __name__ == "__main__":
    main()
