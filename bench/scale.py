"""Benchmark: `streamflow pipeline` over generated seeds of growing size, 3 months each.

For each size it generates the seeds (`streamflow generate`), runs `streamflow pipeline` on them in
a fresh data dir (local profile, the embedded default) and samples the RSS of the whole process
tree every 0.2 s. From the Dagster instance it reads each step's start and end, so each asset gets
its wall time summed over the months, its rows/s (users × months / seconds) and the peak RSS seen
while it ran (steps run one after another in the run's process). It also records the size of the
stored model (sklearn + ONNX) and the ratio of each size's cost to the smallest's.

    .venv/bin/python bench/scale.py --sizes 100000 300000 1000000 --save

Prints a markdown report; `--save` writes it to bench/reports/scale.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
STREAMFLOW = str(REPO / ".venv" / "bin" / "streamflow")
PYTHON = str(REPO / ".venv" / "bin" / "python")
REPORT = REPO / "bench" / "reports" / "scale.md"

# Reads every run's step windows from the instance; prints them as JSON.
STEP_READER = """
import json
from dagster import DagsterInstance
with DagsterInstance.get() as instance:
    runs = sorted(instance.get_run_records(), key=lambda r: r.create_timestamp)
    print(json.dumps([
        {"partition": r.dagster_run.tags.get("dagster/partition"),
         "steps": [[s.step_key, s.start_time, s.end_time]
                   for s in instance.get_run_step_stats(r.dagster_run.run_id)]}
        for r in runs
    ]))
"""


class TreeSampler(threading.Thread):
    """Samples the summed RSS of a process and all its descendants until stopped."""

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            rss = 0
            for process in processes:
                with contextlib.suppress(psutil.NoSuchProcess):
                    rss += process.memory_info().rss
            self.samples.append((time.time(), rss))
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()

    def peak(self, start: float = 0.0, end: float = float("inf")) -> int:
        return max((rss for t, rss in self.samples if start <= t <= end), default=0)


@dataclass
class SizeResult:
    users: int
    generate_s: float
    pipeline_s: float
    peak_rss: int
    months: list[str]
    asset_seconds: dict[str, float] = field(default_factory=dict)
    asset_peak_rss: dict[str, int] = field(default_factory=dict)
    month_seconds: dict[str, float] = field(default_factory=dict)
    model_sklearn_bytes: int = 0
    model_onnx_bytes: int = 0


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFLOW_")}
    env.update(
        STREAMFLOW_DATA_DIR=str(data_dir),
        DAGSTER_HOME=str(data_dir / "dagster"),
        PYTHONWARNINGS="ignore",
    )
    return env


def _newest_model_sizes(data_dir: Path) -> tuple[int, int]:
    """Bytes of the newest logged model's scikit-learn file and its ONNX twin."""
    artifacts = data_dir / "mlflow" / "artifacts"
    onnx = sorted(artifacts.rglob("model.onnx"), key=lambda p: p.stat().st_mtime)
    if not onnx:
        return 0, 0
    model_dir = onnx[-1].parent
    while model_dir != artifacts and not (model_dir / "MLmodel").is_file():
        model_dir = model_dir.parent
    sklearn = sum(p.stat().st_size for p in model_dir.glob("model.*") if p.name != "model.onnx")
    return sklearn, onnx[-1].stat().st_size


def run_size(users: int, months: int, work: Path) -> SizeResult:
    seeds, data_dir = work / f"seeds-{users}", work / f"data-{users}"
    shutil.rmtree(seeds, ignore_errors=True)
    shutil.rmtree(data_dir, ignore_errors=True)
    env = _env(data_dir)
    started = time.perf_counter()
    subprocess.run(
        [STREAMFLOW, "generate", "--users", str(users), "--months", str(months), "--seed", "42",
         "--out", str(seeds)],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    generate_s = time.perf_counter() - started

    started = time.perf_counter()
    process = subprocess.Popen(
        [STREAMFLOW, "pipeline", "--seeds", str(seeds)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    sampler = TreeSampler(process.pid)
    sampler.start()
    output, _ = process.communicate()
    sampler.stop()
    pipeline_s = time.perf_counter() - started
    print(output, file=sys.stderr)
    if process.returncode:
        raise SystemExit(f"pipeline at {users:,} users failed ({process.returncode})")

    runs = json.loads(
        subprocess.run(
            [PYTHON, "-c", STEP_READER], env=env, check=True, capture_output=True, text=True
        ).stdout
    )
    result = SizeResult(users, generate_s, pipeline_s, sampler.peak(), [])
    asset_seconds: dict[str, float] = defaultdict(float)
    asset_peak: dict[str, int] = defaultdict(int)
    for run in runs:
        result.months.append(run["partition"])
        starts = [s for _, s, _ in run["steps"]]
        ends = [e for _, _, e in run["steps"]]
        result.month_seconds[run["partition"]] = max(ends) - min(starts)
        for key, start, end in run["steps"]:
            asset_seconds[key] += end - start
            asset_peak[key] = max(asset_peak[key], sampler.peak(start, end))
    result.asset_seconds = dict(asset_seconds)
    result.asset_peak_rss = dict(asset_peak)
    result.model_sklearn_bytes, result.model_onnx_bytes = _newest_model_sizes(data_dir)
    return result


# The assets a reader looks for first; the checks are summed into one line.
ASSETS = [
    "monthly_snapshots",
    "feature_registry",
    "online_features",
    "training_dataset",
    "churn_model",
    "production_model",
    "batch_scores",
    "feature_drift",
    "model_performance",
]


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f}"


def report(results: list[SizeResult], months: int) -> str:
    base = results[0]
    cpu = platform.processor() or "unknown"
    with open("/proc/cpuinfo") as info:
        models = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    cpu = models[0] if models else cpu
    lines = [
        "# Scale: `streamflow pipeline` over generated seeds, 3 months each",
        "",
        f"Machine: {os.cpu_count()} cores ({cpu}), "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB; local profile (DuckDB offline store, "
        "SQLite online store, MLflow on SQLite); run "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average at the end "
        f"{os.getloadavg()[0]:.1f}. Command: `.venv/bin/python bench/scale.py --sizes "
        f"{' '.join(str(r.users) for r in results)} --save`.",
        "",
        "## Whole pipeline",
        "",
        "| users | months | generate s | pipeline wall s | peak RSS of the process tree MB "
        "| cost ÷ smallest | sklearn model MB | ONNX model MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.users:,} | {months} | {r.generate_s:.1f} | {r.pipeline_s:.0f} "
            f"| {_mb(r.peak_rss)} | {r.pipeline_s / base.pipeline_s:.2f}× "
            f"| {r.model_sklearn_bytes / 2**20:.2f} | {r.model_onnx_bytes / 2**20:.2f} |"
        )
    lines += [
        "",
        "## Per asset (summed over the months)",
        "",
        "Wall seconds, users × months per second, and the peak RSS of the process tree while the "
        "step ran.",
        "",
        "| asset | " + " | ".join(f"{r.users:,}: s / rows/s / peak MB" for r in results) + " |",
        "|---|" + "---:|" * len(results),
    ]
    for asset in [*ASSETS, "checks (all)"]:
        cells = []
        for r in results:
            if asset == "checks (all)":
                keys = [k for k in r.asset_seconds if k not in ASSETS]
            else:
                keys = [asset]
            seconds = sum(r.asset_seconds.get(k, 0.0) for k in keys)
            peak = max((r.asset_peak_rss.get(k, 0) for k in keys), default=0)
            rows = r.users * len(r.months) / seconds if seconds else 0
            cells.append(f"{seconds:.1f} / {rows:,.0f} / {_mb(peak)}")
        lines.append(f"| {asset} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Per month (wall seconds of the run's steps)",
        "",
        "| users | " + " | ".join(results[0].months) + " |",
        "|---:|" + "---:|" * len(results[0].months),
    ]
    for r in results:
        lines.append(
            f"| {r.users:,} | " + " | ".join(f"{r.month_seconds[m]:.0f}" for m in r.months) + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--months", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/streamflow-scale"))
    parser.add_argument("--save", action="store_true", help=f"write {REPORT}")
    parser.add_argument("--keep", action="store_true", help="keep the seeds and data dirs")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results = []
    for users in sorted(args.sizes):
        print(f"{users:,} users × {args.months} months ...", file=sys.stderr, flush=True)
        results.append(run_size(users, args.months, args.work))
        if not args.keep:
            for prefix in ("seeds", "data"):
                shutil.rmtree(args.work / f"{prefix}-{users}", ignore_errors=True)
    text = report(results, args.months)
    print(text)
    if args.save:
        REPORT.write_text(text)


if __name__ == "__main__":
    main()
