"""Loading the code location imports no ML library: the code server, the webserver's and the
daemon's view of it and every run's process hold only what serving the definitions needs; a step
imports MLflow, scikit-learn, onnxruntime, Evidently or skops when it runs (the idle stack's
memory, bench/reports/stack_memory.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import child_env

REPO_ROOT = Path(__file__).resolve().parents[2]
# Each of these adds tens to hundreds of MB to a process that imports it.
HEAVY = (
    "dagster_mlflow",
    "evidently",
    "feast",
    "mlflow",
    "onnxruntime",
    "sklearn",
    "skops",
    "skl2onnx",
)

LOAD = """
import json, sys
from streamflow_assets.definitions import defs
assert defs.resolve_job_def("monthly_pipeline") is not None
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_loading_the_definitions_imports_no_ml_library(tmp_path: Path) -> None:
    for profile in ("local", "cluster"):
        result = subprocess.run(
            [sys.executable, "-c", LOAD],
            cwd=REPO_ROOT,
            env=child_env(
                STREAMFLOW_PROFILE=profile,
                STREAMFLOW_DATA_DIR=str(tmp_path / profile),
                DAGSTER_HOME=str(tmp_path),
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        loaded = set(json.loads(result.stdout.splitlines()[-1]))
        assert not loaded & set(HEAVY), f"{profile}: {sorted(loaded & set(HEAVY))}"
