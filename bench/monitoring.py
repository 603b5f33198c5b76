"""Benchmark: the three monitoring assets (batch_scores, feature_drift, model_performance).

Generates two months of synthetic seeds, runs both months through the whole monthly pipeline
(one process, one Dagster instance), and reads every step's time from the instance. The second
month is the one measured: its drift and decay are against the first month's model. Then each
monitoring asset runs again alone for that month in a fresh process, for its peak memory (the
process peak, and how much it grew over the imports). Prints a markdown report (and writes it to
bench/reports/monitoring.md with --save).

    .venv/bin/python bench/monitoring.py --users 100000 --save
"""

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

from scale import TreeSampler

REPO = Path(__file__).resolve().parents[1]
PYTHON = str(REPO / ".venv" / "bin" / "python")
STREAMFLOW = str(REPO / ".venv" / "bin" / "streamflow")
MONTHS = ["2024-01", "2024-02"]
MEASURED = MONTHS[-1]
MONITORING = ["batch_scores", "feature_drift", "model_performance"]

# Runs months (all assets, or a selection) in the instance under DAGSTER_HOME; prints JSON:
# each run's wall time, its steps' times, and this process's RSS after imports and at its peak.
RUNNER = """
import json, resource, sys, warnings
warnings.simplefilter("ignore")
from dagster import DagsterInstance
from streamflow.settings import get_settings
from streamflow_assets.definitions import build_definitions
from streamflow.ops.pipeline import run_months
months, assets = sys.argv[1].split(","), [a for a in sys.argv[2].split(",") if a]
defs = build_definitions(get_settings())
imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
runs = {}
with DagsterInstance.get() as instance:
    for month in months:
        (outcome,) = run_months([month], defs, instance, assets or None)
        if not outcome.success:
            sys.exit(f"{month} failed: {outcome.error}")
        stats = instance.get_run_step_stats(outcome.run_id)
        runs[month] = {"seconds": outcome.seconds,
                       "steps": {s.step_key: s.end_time - s.start_time for s in stats}}
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"runs": runs, "imported_mb": imported / 1024, "peak_mb": peak / 1024}))
"""


# The CPU seconds of Evidently's import in a fresh process, as the drift worker pays it.
EVIDENTLY_IMPORT = """
import time
started = time.process_time()
from streamflow.adapters.drift_worker import import_evidently
import_evidently()
print(time.process_time() - started)
"""


def run(command: list[str], env: dict[str, str]) -> tuple[str, int]:
    """A command's stdout, and the peak summed RSS of its process tree (the drift worker too)."""
    process = subprocess.Popen(
        command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    sampler = TreeSampler(process.pid)
    sampler.start()
    out, err = process.communicate()
    sampler.stop()
    if process.returncode:
        sys.exit(f"{' '.join(command[:3])} failed:\n{err[-3000:]}")
    return out, sampler.peak()


def runner(env: dict[str, str], months: list[str], assets: list[str]) -> dict:
    out, tree_peak = run([PYTHON, "-c", RUNNER, ",".join(months), ",".join(assets)], env)
    return json.loads(out.strip().splitlines()[-1]) | {"tree_peak_mb": tree_peak / 2**20}


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = subprocess.run(["free", "-g"], capture_output=True, text=True).stdout.strip()
    return f"`nproc` {os.cpu_count()}, CPU {cpu}\n\n```\n$ free -g\n{memory}\n```"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="streamflow-bench-monitoring-"))
    try:
        seeds, data = work / "seeds", work / "data"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMFLOW_", "DAGSTER_"))}
        env |= {
            "STREAMFLOW_DATA_DIR": str(data),
            "STREAMFLOW_SEEDS_DIR": str(seeds),
            "DAGSTER_HOME": str(work / "dagster"),
        }
        (work / "dagster").mkdir()
        shutil.copyfile(REPO / "dagster.yaml", work / "dagster" / "dagster.yaml")
        started = time.perf_counter()
        run([STREAMFLOW, "generate", "--users", str(args.users), "--months", "2"]
            + ["--seed", "42", "--out", str(seeds)], env)  # fmt: skip
        print(f"generated {args.users:,} users x 2 months in {time.perf_counter() - started:.0f}s")
        pipeline = runner(env, MONTHS, [])
        month = pipeline["runs"][MEASURED]
        print(f"pipeline: {json.dumps(pipeline['runs'])}")
        alone = {asset: runner(env, [MEASURED], [asset]) for asset in MONITORING}
        # What the drift worker does while the month's first steps run: import Evidently.
        imported, _ = run([PYTHON, "-c", EVIDENTLY_IMPORT], env)
        evidently_cpu = float(imported.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    steps = month["steps"]
    monitoring = sum(steps[a] for a in MONITORING)
    rest = month["seconds"] - monitoring
    share = monitoring / rest

    def row(asset: str) -> str:
        solo = alone[asset]
        grew = solo["peak_mb"] - solo["imported_mb"]
        return (
            f"| `{asset}` | {steps[asset]:.1f} | {solo['runs'][MEASURED]['steps'][asset]:.1f} "
            f"| {solo['peak_mb']:,.0f} | {grew:,.0f} | {solo['tree_peak_mb']:,.0f} |"
        )

    rows = "\n".join(row(asset) for asset in MONITORING)
    others = "\n".join(
        f"| `{step}` | {seconds:.1f} |"
        for step, seconds in sorted(steps.items(), key=lambda item: -item[1])
        if step not in MONITORING
    )
    verdict = "met" if share <= 0.30 else "MISSED"
    report = f"""# Monitoring assets at {args.users:,} users

`bench/monitoring.py --users {args.users}`: two generated months through the whole monthly
pipeline; month {MEASURED} measured (drift and decay against the {MONTHS[0]} champion, scores by
the champion after {MEASURED}'s decision). Then each monitoring asset alone, in a fresh process
(`feature_drift` alone waits for its worker's import of Evidently: nothing runs before it).

| asset | step in the pipeline s | alone s | process peak RSS MB | over imports MB | tree MB |
|---|---:|---:|---:|---:|---:|
{rows}

`tree MB`: the peak summed RSS of the process and its children (sampled every 0.2 s), the drift
worker included.

The month's run took {month["seconds"]:.1f} s, of which the three monitoring assets
{monitoring:.1f} s: they add **{share:.0%}** to the {rest:.1f} s the rest of the month takes
(target ≤ 30 %: {verdict}).

Not in those steps: Evidently's import, {evidently_cpu:.1f} s of CPU in a fresh process (the drift
worker, `adapters/drift_worker.py`, started with the run, pays it on the other core while the
month is ingested and trained).

The month's other steps:

| step | s |
|---|---:|
{others}

Machine (shared with other work; compare ratios within one run): {machine()}
"""
    print(report)
    if args.save:
        (REPO / "bench" / "reports" / "monitoring.md").write_text(report)


if __name__ == "__main__":
    main()
