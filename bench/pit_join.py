"""Benchmark: Feast's point-in-time join (`get_historical_features`) on PostgreSQL against DuckDB.

Generates synthetic seeds, stores three months of snapshots per profile (local: Parquet read by
DuckDB; postgres: the snapshot tables), applies the Feast repo, then times the join of the
second month's labelled users with `churn_model_v1` as `training_dataset` does: on DuckDB (the
local profile), on the postgres profile's offline store (adapters/offline_store.py) as the tables
are stored and again after ANALYZE (statistics must not change its plan), and on Feast's own
PostgreSQL offline store (`--no-stock` skips it: minutes at 1M users). The postgres profile's
query also runs under EXPLAIN (ANALYZE, BUFFERS), summarized: where the time goes. `--save`
writes the run's section of bench/reports/pit_join.md (replacing one of the same size).

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
import threading
from pathlib import Path

import psycopg

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
from streamflow.domain import months
from streamflow.adapters.feature_store import apply_definitions, open_store
from streamflow.domain.features import FEATURE_SERVICE
from streamflow.domain.seeds import iter_month
from streamflow.settings import get_settings
from streamflow_assets.resources import build_resources
seeds, keys, store_kind = Path(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
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
if store_kind == "stock":
    # Feast's own PostgreSQL offline store on the same config (its config class is the parent).
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres import (
        PostgreSQLOfflineStore,
    )
    store._get_provider()._offline_store = PostgreSQLOfflineStore()
out["offline_store"] = type(store._get_provider().offline_store).__name__
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
if store_kind == "explain":
    job = store.get_historical_features(entity_df=entities, features=service)
    with job._query_generator() as query, psycopg.connect(
        host=settings.postgres_host, port=settings.postgres_port, user=settings.postgres_user,
        dbname=settings.postgres_db,
    ) as conn:
        rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query).fetchone()[0]
    out["plan"] = rows[0]
print(json.dumps(out))
"""


def child(profile: str, data_dir: Path, seeds: Path, database: str | None, kind: str) -> dict:
    """One join in a fresh process; `kind`: "-" (the profile's store), "explain" (and its query
    under EXPLAIN ANALYZE) or "stock" (Feast's PostgreSQL offline store)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFLOW_")}
    env |= {"STREAMFLOW_PROFILE": profile, "STREAMFLOW_DATA_DIR": str(data_dir)}
    env |= {"STREAMFLOW_SEEDS_DIR": str(seeds)}
    if database:
        env["STREAMFLOW_POSTGRES_DB"] = database
    command = [str(REPO / ".venv/bin/python"), "-c", CHILD, str(seeds), ",".join(MONTHS)]
    done = subprocess.run(command + [kind], env=env, cwd=REPO, capture_output=True)
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


def sample_load(loads: list[float], stop: threading.Event) -> None:
    """The 1-minute load average every 5 s until `stop`: the machine is shared."""
    while True:
        loads.append(os.getloadavg()[0])
        if stop.wait(5):
            return


def save(users: int, section: str) -> None:
    """The run's section of the report, replacing an earlier one of the same size."""
    path = REPO / "bench" / "reports" / "pit_join.md"
    head, *sections = [part.strip("\n") for part in path.read_text().split("\n## ")]
    title = f"{users:,} users"
    kept = [s for s in sections if s.split("\n", 1)[0] != title]
    path.write_text("\n\n## ".join([head, *kept, f"{title}\n\n{section}"]) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--save", action="store_true", help="write bench/reports/pit_join.md")
    parser.add_argument("--no-stock", action="store_true", help="skip Feast's own store")
    args = parser.parse_args()
    loads: list[float] = []
    stop = threading.Event()
    threading.Thread(target=sample_load, args=(loads, stop), daemon=True).start()
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

        def postgres(kind: str) -> dict:
            out = child("postgres", Path(scratch) / "pg", seeds, database, kind)
            print(json.dumps({kind: out["join_s"], "store": out["offline_store"]}), file=sys.stderr)
            return out

        local = child("local", Path(scratch) / "local", seeds, None, "-")
        print(json.dumps({"local": local}), file=sys.stderr)
        ours = postgres("explain")
        stock = None if args.no_stock else postgres("stock")
        with psycopg.connect(dbname=database, autocommit=True, **POSTGRES) as conn:
            conn.execute("ANALYZE")
        analyzed = postgres("explain")
    stop.set()

    def row(label: str, run: dict) -> str:
        plan = plan_summary(run["plan"]) if "plan" in run else ""
        ratio = run["join_s"] / local["join_s"]
        return f"| {label} | {run['join_s']:.1f} s | {ratio:.2f} | {plan} |"

    lines = [
        "| offline store | join (get_historical_features + to_df) | × DuckDB | "
        "its query under EXPLAIN ANALYZE |",
        "|---|---:|---:|---|",
        row("DuckDB (local profile)", local),
        *([row(f"PostgreSQL, Feast's own {stock['offline_store']}", stock)] if stock else []),
        row(f"PostgreSQL, {ours['offline_store']}", ours),
        row(f"PostgreSQL, {analyzed['offline_store']}, tables ANALYZEd", analyzed),
    ]
    report = "\n".join(lines)
    print(report)
    if args.save:
        command = " ".join(["bench/pit_join.py", *sys.argv[1:]])
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        save(
            args.users,
            f"`.venv/bin/python {command}` at {commit}: {args.users:,} users, 3 months stored, "
            f"the second month's labelled users ({ours['rows']:,}) joined with churn_model_v1, "
            f"each join in a fresh process. 1-minute load average "
            f"{min(loads):.1f}–{max(loads):.1f} during the run (2 cores, shared).\n\n{report}\n",
        )


if __name__ == "__main__":
    main()
