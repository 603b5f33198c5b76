"""Benchmark: the online_features asset against `feast materialize`, and training-set builds.

For each size, generates two months of synthetic seeds, ingests them, then (each in a fresh
process and a fresh online store, on the same snapshot files):
  - the `online_features` asset for the second month (its Dagster step time),
  - `feast materialize` over the same month through the same feature_store.yaml (wall time),
  - the `training_dataset` asset for the second month (step time, process peak RSS).
Prints a markdown table (and writes it to bench/reports/materialize.md with --save).

    .venv/bin/python bench/materialize.py --users 7043 1000000 --save
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = str(REPO / ".venv" / "bin" / "python")
MONTH, AS_OF = "2024-02", "2024-02-29T00:00:00"
FEATURES_PER_USER = 14

# Runs one selection of assets in a fresh process and prints the step durations as JSON.
STEP_RUNNER = """
import json, sys, warnings
warnings.simplefilter("ignore")
from dagster import instance_for_test
from streamflow.settings import get_settings
from streamflow_assets.definitions import build_definitions
from streamflow.ops.pipeline import run_months
months, assets = sys.argv[1].split(","), sys.argv[2].split(",")
with instance_for_test() as instance:
    outcomes = run_months(months, defs=build_definitions(get_settings()), instance=instance,
                          assets=assets)
    failed = [o.error for o in outcomes if not o.success]
    if failed:
        sys.exit(f"failed: {failed}")
    steps = {}
    for record in instance.get_run_records():
        for stat in instance.get_run_step_stats(record.dagster_run.run_id):
            steps[stat.step_key] = stat.end_time - stat.start_time
print(json.dumps(steps))
"""


def child(command: list[str], env: dict[str, str], cwd: Path = REPO) -> tuple[str, float, int]:
    """Run a process; its stdout, wall seconds and peak RSS in MB (that child alone)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # RUSAGE_CHILDREN keeps the maximum over all children so far: runs go from small to large.
    return done.stdout, wall, max(peak, before) // 1024


def environment(data_dir: Path, seeds: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFLOW_")}
    env |= {"STREAMFLOW_DATA_DIR": str(data_dir), "STREAMFLOW_SEEDS_DIR": str(seeds)}
    return env


def steps(env: dict[str, str], months: str, assets: str) -> tuple[dict[str, float], int]:
    out, _, peak = child([PYTHON, "-c", STEP_RUNNER, months, assets], env)
    return json.loads(out.strip().splitlines()[-1]), peak


def fresh_copy(source: Path, target: Path) -> None:
    """Same snapshot files, an empty Feast store."""
    shutil.copytree(source / "snapshots", target / "snapshots")
    (target / "feast").mkdir(parents=True)


def measure(users: int, scratch: Path) -> dict[str, float]:
    seeds, base = scratch / "seeds", scratch / "base"
    child(
        [
            str(REPO / ".venv/bin/streamflow"),
            "generate",
            "--users",
            str(users),
            "--months",
            "2",
            "--seed",
            "11",
            "--out",
            str(seeds),
        ],
        environment(base, seeds),
    )
    snapshots = ",".join(
        [
            "users_snapshots",
            "subscriptions_profile_snapshots",
            "usage_agg_30d_snapshots",
            "payments_agg_90d_snapshots",
            "support_agg_90d_snapshots",
            "labels_snapshots",
        ]
    )
    steps(environment(base, seeds), f"2024-01,{MONTH}", snapshots)

    asset_dir = scratch / "asset"
    fresh_copy(base, asset_dir)
    asset_steps, _ = steps(environment(asset_dir, seeds), MONTH, "feature_registry,online_features")

    cli_dir = scratch / "cli"
    fresh_copy(base, cli_dir)
    feast = [str(REPO / ".venv/bin/feast")]
    cli_env = environment(cli_dir, seeds)
    child(feast + ["apply"], cli_env, cwd=REPO / "feature_repo")
    _, cli_wall, _ = child(
        feast + ["materialize", AS_OF, "2024-02-29T00:00:01"], cli_env, cwd=REPO / "feature_repo"
    )
    _, startup, _ = child(feast + ["version"], cli_env, cwd=REPO / "feature_repo")

    training_steps, training_peak = steps(environment(asset_dir, seeds), MONTH, "training_dataset")
    rows = users  # users of the month, about the initial population
    return {
        "users": users,
        "asset_s": asset_steps["online_features"],
        "cli_s": cli_wall,
        "cli_startup_s": startup,
        "asset_rows_s": rows / asset_steps["online_features"],
        "cli_rows_s": rows / cli_wall,
        "training_s": training_steps["training_dataset"],
        "training_peak_mb": training_peak,
    }


def table(results: list[dict[str, float]]) -> str:
    lines = [
        "| users | online_features asset | `feast materialize` CLI (of which startup) "
        "| asset users/s (values/s) | CLI users/s | speed-up | training_dataset | "
        "training process peak RSS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['users']:,} | {r['asset_s']:.1f} s | {r['cli_s']:.1f} s "
            f"({r['cli_startup_s']:.1f} s) | {r['asset_rows_s']:,.0f} "
            f"({r['asset_rows_s'] * FEATURES_PER_USER:,.0f}) | {r['cli_rows_s']:,.0f} | "
            f"{r['cli_s'] / r['asset_s']:.1f}x | {r['training_s']:.1f} s | "
            f"{r['training_peak_mb']:,} MB |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[7043, 1_000_000])
    parser.add_argument("--save", action="store_true", help="write bench/reports/materialize.md")
    args = parser.parse_args()
    results = []
    for users in sorted(args.users):
        with tempfile.TemporaryDirectory(prefix="sf-bench-") as scratch:
            results.append(measure(users, Path(scratch)))
            print(json.dumps(results[-1]), file=sys.stderr)
    report = table(results)
    print(report)
    if args.save:
        out = REPO / "bench" / "reports" / "materialize.md"
        out.parent.mkdir(exist_ok=True)
        out.write_text(f"# Online materialization and training sets\n\n{report}\n")


if __name__ == "__main__":
    main()
