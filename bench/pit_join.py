"""Benchmark: Feast's point-in-time join (`get_historical_features`) on PostgreSQL against DuckDB.

Generates synthetic seeds, stores three months of snapshots per profile (local: Parquet read by
DuckDB; postgres: the snapshot tables), applies the Feast repo, then times the join of the
second month's labelled users with `churn_model_v1` as `training_dataset` does. On PostgreSQL it
also runs Feast's query under EXPLAIN (ANALYZE, BUFFERS), as it is and after ANALYZE of the
tables with work_mem raised for the database, and prints where the time goes.

    .venv/bin/python bench/pit_join.py --users 100000 --save
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.profiles import POSTGRES, throwaway_databases  # noqa: E402

MONTHS = ["2024-01", "2024-02", "2024-03"]

# In a child process, under one profile's environment: store the months, apply, join, time.
CHILD = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
from pathlib import Path
import pandas as pd
import psycopg
from streamflow_assets.core import months
from streamflow_assets.core.feature_store import apply_definitions, open_store
from streamflow_assets.core.features import FEATURE_SERVICE
from streamflow_assets.core.seeds import iter_month
from streamflow_assets.core.settings import get_settings
from streamflow_assets.resources import build_resources
seeds, keys, explain = Path(sys.argv[1]), sys.argv[2].split(","), sys.argv[3] == "explain"
settings = get_settings()
tables = build_resources(settings)["snapshots"].store()
out = {}
if not tables.as_ofs("labels_snapshots"):
    started = time.perf_counter()
    for index, key in enumerate(keys):
        tables.write_month(months.as_of(key), iter_month(seeds / f"month_{index:03d}"))
    out["store_s"] = time.perf_counter() - started
store = open_store(settings)
apply_definitions(store, store.config.repo_path)
as_of = months.as_of(keys[1])
labels = tables.read("labels_snapshots", as_of)
entities = pd.DataFrame(
    {"user_id": labels["user_id"], "event_timestamp": labels["as_of"],
     "churn_label": labels["churn_label"]}
)
service = store.get_feature_service(FEATURE_SERVICE)
started = time.perf_counter()
joined = store.get_historical_features(entity_df=entities, features=service).to_df()
out["join_s"] = time.perf_counter() - started
out["rows"] = len(joined)
if explain:
    job = store.get_historical_features(entity_df=entities, features=service)
    with job._query_generator() as query, psycopg.connect(
        host=settings.postgres_host, port=settings.postgres_port, user=settings.postgres_user,
        dbname=settings.postgres_db,
    ) as conn:
        rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query).fetchone()[0]
    out["plan"] = rows[0]
print(json.dumps(out))
"""


def child(profile: str, data_dir: Path, seeds: Path, database: str | None, explain: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFLOW_")}
    env |= {"STREAMFLOW_PROFILE": profile, "STREAMFLOW_DATA_DIR": str(data_dir)}
    env |= {"STREAMFLOW_SEEDS_DIR": str(seeds)}
    if database:
        env["STREAMFLOW_POSTGRES_DB"] = database
    command = [str(REPO / ".venv/bin/python"), "-c", CHILD, str(seeds), ",".join(MONTHS)]
    done = subprocess.run(
        command + ["explain" if explain else "-"], env=env, cwd=REPO, capture_output=True
    )
    if done.returncode:
        sys.exit(f"{profile} failed:\n{done.stderr.decode()[-3000:]}")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def plan_summary(plan: dict) -> str:
    """The plan's total time, temp (spilled) blocks, and its slowest kinds of node."""
    by_kind: dict[str, float] = {}

    def walk(node: dict) -> float:
        children = sum(walk(c) for c in node.get("Plans", []))
        total = node["Actual Total Time"] * node.get("Actual Loops", 1)
        kind = re.sub(r" \(.*", "", node["Node Type"])
        by_kind[kind] = by_kind.get(kind, 0) + max(0.0, total - children)
        return total

    walk(plan["Plan"])
    temp = plan["Plan"].get("Temp Read Blocks", 0) + plan["Plan"].get("Temp Written Blocks", 0)
    slowest = sorted(by_kind.items(), key=lambda item: -item[1])[:4]
    kinds = ", ".join(f"{kind} {ms / 1000:.1f} s" for kind, ms in slowest)
    return f"{plan['Execution Time'] / 1000:.1f} s, {temp * 8 / 1024:,.0f} MB temp; {kinds}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--save", action="store_true", help="write bench/reports/pit_join.md")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="sf-bench-") as scratch,
        throwaway_databases("") as (database,),
    ):
        seeds = Path(scratch) / "seeds"
        subprocess.run(
            [REPO / ".venv/bin/streamflow", "generate", "--users", str(args.users)]
            + ["--months", str(len(MONTHS)), "--seed", "11", "--out", str(seeds)],
            check=True,
            capture_output=True,
        )
        local = child("local", Path(scratch) / "local", seeds, None, False)
        print(json.dumps({"local": local}), file=sys.stderr)
        postgres = child("postgres", Path(scratch) / "pg", seeds, database, True)
        print(json.dumps({"postgres": postgres["join_s"]}), file=sys.stderr)
        with psycopg.connect(dbname=database, autocommit=True, **POSTGRES) as conn:
            conn.execute("ANALYZE")
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET work_mem = '256MB'").format(sql.Identifier(database))
            )
        tuned = child("postgres", Path(scratch) / "pg", seeds, database, True)
        load = max(load, os.getloadavg()[0])
    lines = [
        "| offline store | join (get_historical_features + to_df) | × DuckDB | "
        "Feast's query under EXPLAIN ANALYZE |",
        "|---|---:|---:|---|",
        f"| DuckDB (local) | {local['join_s']:.1f} s | 1.0 | |",
        f"| PostgreSQL, as stored | {postgres['join_s']:.1f} s | "
        f"{postgres['join_s'] / local['join_s']:.1f} | {plan_summary(postgres['plan'])} |",
        f"| PostgreSQL, ANALYZEd, work_mem 256MB | {tuned['join_s']:.1f} s | "
        f"{tuned['join_s'] / local['join_s']:.1f} | {plan_summary(tuned['plan'])} |",
    ]
    report = "\n".join(lines)
    print(report)
    if args.save:
        command = " ".join(["bench/pit_join.py", *sys.argv[1:]])
        (REPO / "bench" / "reports" / "pit_join.md").write_text(
            f"# Point-in-time join: PostgreSQL against DuckDB\n\n`.venv/bin/python {command}`: "
            f"{args.users:,} users, 3 months stored, the second month's labelled users joined "
            f"with churn_model_v1. 2-core machine; highest 1-minute load average seen "
            f"{load:.1f}.\n\n{report}\n"
        )


if __name__ == "__main__":
    main()
