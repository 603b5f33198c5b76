"""Benchmark: what each bounded step holds of a month, before and after, at a given size.

Each step's data path (what it reads, the model work on it, what it keeps) runs alone in a fresh
process over a month of Parquet snapshots, once with the code of another checkout (`--before`,
e.g. `git worktree add /tmp/base 42d156b`) and once with this one, alternating so that both see
the same load; the figure is the process's peak RSS (ru_maxrss) and its growth over the imports.
Dagster, MLflow logging and Evidently's own run are left out: they cost the same before and after
(Evidently tests a fixed-size sample either way). Prints a markdown report (and writes it to
bench/reports/bounded_steps.md with --save).

    .venv/bin/streamflow generate --users 1000000 --months 1 --seed 42 --out SEEDS
    .venv/bin/python bench/bounded_steps.py --seeds SEEDS --before /tmp/base --save
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = str(REPO / ".venv" / "bin" / "python")
REPORT = REPO / "bench" / "reports" / "bounded_steps.md"

COMMON = """
import json, pickle, resource, sys, time, warnings
from pathlib import Path
warnings.simplefilter("ignore")
import numpy as np
from streamflow.domain import months
from streamflow.adapters.onnx_model import CompiledModel
from streamflow.domain.features import LABEL, model_inputs, to_model_frame
from streamflow.domain.model_monitoring import SNAPSHOT_TABLES
from streamflow.adapters.snapshots import ParquetSnapshotStore
from streamflow.domain.training import ModelParams
scratch = Path(sys.argv[1])
store, as_of = ParquetSnapshotStore(scratch / "snapshots"), months.as_of("2024-01")
params = ModelParams(max_iter=int(sys.argv[2]))
imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
"""
DONE = """
print(json.dumps({"seconds": time.perf_counter() - started, "imported_mb": imported / 1024,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

# Writes the month's training table (labels and features, as `training_dataset` holds them).
PREPARE = """
from streamflow.domain.model_monitoring import month_features
from streamflow.domain.seeds import read_month
tables = read_month(Path(sys.argv[3]) / "month_000")
store.write_month(as_of, tables)
features = month_features({t: tables[t] for t in SNAPSHOT_TABLES})
labels = tables["labels_snapshots"][["user_id", LABEL]]
store.write_month(as_of, {"training_dataset": labels.merge(features, on="user_id")})
"""

# Per step: (what it does, the old code's data path, the new code's). Both write the model and
# scores they make under the scratch dir, so later steps score with the same model.
STEPS = {
    "churn_model": (
        "read the training table, split, fit, ONNX and its check, held-out scores",
        """
from streamflow.domain.features import content_hash
from streamflow.domain.training import to_onnx, train
dataset = store.read("training_dataset", as_of).drop(columns=["as_of"])
content_hash(dataset)
trained = train(dataset, params)
onnx = to_onnx(trained.pipeline, trained.split.x_val)
""",
        """
from streamflow.adapters.onnx_model import CompiledModel
from streamflow.domain.training import labels_and_hash, train
chunks = lambda: store.read_batches("training_dataset", as_of, int(sys.argv[4]))
labels, _ = labels_and_hash(chunks())
trained = train(chunks, labels, params, int(sys.argv[5]), load_compiled=CompiledModel)
onnx = trained.onnx
(scratch / "model.onnx").write_bytes(onnx)
(scratch / "pipeline.pkl").write_bytes(pickle.dumps(trained.pipeline))
""",
    ),
    "production_model": (
        "the held-out split re-drawn, both versions scored on it",
        """
from streamflow.domain.training import split
pipeline = pickle.loads((scratch / "pipeline.pkl").read_bytes())
dataset = store.read("training_dataset", as_of).drop(columns=["as_of"])
held_out = split(dataset, params)
for _ in range(2):
    pipeline.predict_proba(held_out.x_val)
""",
        """
from streamflow.domain.training import month_labels, score_rows, split
pipeline = pickle.loads((scratch / "pipeline.pkl").read_bytes())
rows = int(sys.argv[4])
labels = month_labels(store.read_batches("training_dataset", as_of, rows, [LABEL]))
score_rows(store.read_batches("training_dataset", as_of, rows), split(labels, params).val,
           [lambda x: pipeline.predict_proba(x)[:, 1]] * 2)
""",
    ),
    "batch_scores": (
        "every user's features joined, scored, the scores table built",
        """
import pandas as pd
from streamflow.domain.model_monitoring import month_features
model = CompiledModel((scratch / "model.onnx").read_bytes())
features = month_features({t: store.read(t, as_of) for t in SNAPSHOT_TABLES})
p = model.predict_proba(model_inputs(features))
pd.DataFrame({"user_id": features["user_id"], "probability": p, "prediction": p >= 0.5,
              "model_version": "1"})
""",
        """
import pandas as pd
from streamflow.domain.features import FEATURE_COLUMNS
from streamflow.domain.model_monitoring import typed_chunks
model = CompiledModel((scratch / "model.onnx").read_bytes())
parts = []
for features in typed_chunks(store.join_batches(FEATURE_COLUMNS, as_of, int(sys.argv[4]))):
    p = model.predict_proba(model_inputs(features))
    parts.append(pd.DataFrame({"user_id": features["user_id"], "probability": p,
                               "prediction": p >= 0.5, "model_version": "1"}))
pd.concat(parts, ignore_index=True)
""",
    ),
    "feature_drift": (
        "two months' features (here the same month twice) sampled, the samples scored",
        """
from streamflow.domain.model_monitoring import drift_sample, month_features
model = CompiledModel((scratch / "model.onnx").read_bytes())
sides = [month_features({t: store.read(t, as_of) for t in SNAPSHOT_TABLES}) for _ in range(2)]
for side in map(drift_sample, sides):
    model.predict_proba(model_inputs(side))
""",
        """
from streamflow.domain.model_monitoring import FEATURE_COLUMNS, sample_chunks, typed_chunks
model = CompiledModel((scratch / "model.onnx").read_bytes())
for _ in range(2):
    side, _ = sample_chunks(
        typed_chunks(store.join_batches(FEATURE_COLUMNS, as_of, int(sys.argv[4]))))
    model.predict_proba(model_inputs(side))
""",
    ),
    "model_performance": (
        "the labelled users' features joined and scored",
        """
from streamflow.domain.model_monitoring import month_features
model = CompiledModel((scratch / "model.onnx").read_bytes())
labels = store.read("labels_snapshots", as_of)
features = month_features({t: store.read(t, as_of) for t in SNAPSHOT_TABLES})
labelled = labels[["user_id", LABEL]].merge(features, on="user_id")
model.predict_proba(model_inputs(labelled))
""",
        """
from streamflow.domain.features import FEATURE_COLUMNS
from streamflow.domain.model_monitoring import typed_chunks
model = CompiledModel((scratch / "model.onnx").read_bytes())
tables = {"labels_snapshots": [LABEL]} | FEATURE_COLUMNS
chunks = store.join_batches(tables, as_of, int(sys.argv[4]), require="labels_snapshots")
np.concatenate([model.predict_proba(model_inputs(c)) for c in typed_chunks(chunks)])
""",
    ),
}


def run(code: Path, body: str, argv: list[str]) -> dict:
    found = subprocess.run(
        [PYTHON, "-c", COMMON + body + DONE, *argv],
        cwd=code,
        env=os.environ | {"PYTHONPATH": str(code)},
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        raise RuntimeError(f"{code}: {found.stderr[-3000:]}")
    return json.loads(found.stdout.splitlines()[-1])


def report(args: argparse.Namespace, users: int, rows: list, load: str) -> str:
    lines = [
        f"# Bounded steps: {users:,} users",
        "",
        f"`bench/bounded_steps.py --seeds <streamflow generate --users {users:,} --months 1 "
        f"--seed 42> --before <checkout of {args.before_rev}> --max-iter {args.max_iter} "
        f"--chunk-rows {args.chunk_rows} --train-max-rows {args.train_max_rows}`, after = "
        f"{args.after_rev}: each step's data path alone in a fresh process over the month's "
        "Parquet snapshots, before and after alternating. `max_iter` "
        f"{args.max_iter} instead of 200 keeps the fits short: the fit's memory is its binned "
        f"rows and gradients, not its trees. {load}.",
        "",
        "| step | what runs | before s | after s | before peak MB (over imports) | "
        "after peak MB (over imports) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for step, what, before, after in rows:
        grow = [r["peak_mb"] - r["imported_mb"] for r in (before, after)]
        lines.append(
            f"| `{step}` | {what} | {before['seconds']:.1f} | {after['seconds']:.1f} | "
            f"{before['peak_mb']:,.0f} ({grow[0]:,.0f}) | "
            f"{after['peak_mb']:,.0f} ({grow[1]:,.0f}) |"
        )
    lines += ["", f"Machine: {platform.machine()}, {os.cpu_count()} cores.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=Path, required=True, help="generated seeds (month_000)")
    parser.add_argument("--before", type=Path, required=True, help="checkout of the old code")
    parser.add_argument("--after", type=Path, default=REPO, help="checkout of the new code")
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--max-iter", type=int, default=50)
    parser.add_argument("--chunk-rows", type=int, default=200_000)
    parser.add_argument("--train-max-rows", type=int, default=2_000_000)
    parser.add_argument(
        "--scratch", type=Path, help="a scratch dir of an earlier run, reused as it is"
    )
    parser.add_argument("--save", action="store_true", help=f"write {REPORT.relative_to(REPO)}")
    args = parser.parse_args()
    args.before_rev, args.after_rev = (
        subprocess.run(
            ["git", "-C", str(code), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for code in (args.before, args.after)
    )
    load = f"Load average {os.getloadavg()[0]:.1f} at the start"
    rows = []
    with tempfile.TemporaryDirectory(prefix="bounded-steps-") as temporary:
        scratch = str(args.scratch or temporary)
        argv = [scratch, str(args.max_iter), str(args.seeds), str(args.chunk_rows)]
        argv.append(str(args.train_max_rows))
        if args.scratch is None:
            run(args.after, PREPARE, argv)
        import pyarrow.parquet as pq

        users = pq.read_metadata(
            Path(scratch) / "snapshots" / "labels_snapshots" / "2024-01-31.parquet"
        ).num_rows
        for step in args.steps.split(","):
            what, old, new = STEPS[step]
            after = run(args.after, new, argv)
            before = run(args.before, old, argv)
            rows.append((step, what, before, after))
            print(json.dumps({"step": step, "before": before, "after": after}), file=sys.stderr)
    load += f", {os.getloadavg()[0]:.1f} at the end"
    text = report(args, users, rows, load)
    print(text)
    if args.save:
        REPORT.write_text(text)


if __name__ == "__main__":
    main()
