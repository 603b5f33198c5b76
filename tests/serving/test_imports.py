"""The API imports no Dagster and no scikit-learn: it starts fast and stays small."""

from __future__ import annotations

import subprocess
import sys

from tests.serving.conftest import REPO_ROOT, STREAMFLOW, clean_env

CHECK = """
import sys
import serving.app, streamflow.settings, streamflow.ops.cli
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"dagster", "sklearn", "skl2onnx", "skops"})
assert not heavy, f"serving imported {heavy}"
"""


def test_serving_imports_neither_dagster_nor_scikit_learn(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK],
        cwd=REPO_ROOT,
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr


def test_streamflow_serve_takes_host_and_port(tmp_path) -> None:
    result = subprocess.run(
        [str(STREAMFLOW), "serve", "--help"],
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "--host" in result.stdout and "--port" in result.stdout


METRICS_IN_MEMORY = """
import os
import serving.app
import feast  # sets PROMETHEUS_MULTIPROC_DIR (a temp dir) when it is unset
from serving.metrics import ServingMetrics

metrics = ServingMetrics()
metrics.request_done("/predict", "POST", "200", 0.001)
metrics.probability.observe(0.3)
shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
files = sorted(os.listdir(shared)) if shared and os.path.isdir(shared) else []
assert not files, f"metrics written to {shared}: {files}"
"""


def test_metrics_stay_in_memory_though_feast_sets_a_multiprocess_dir(tmp_path) -> None:
    """Feast's import switches prometheus_client to file-backed values (its multiprocess mode)
    for every metric created afterwards, unless prometheus_client was imported before it."""
    env = {k: v for k, v in clean_env(tmp_path).items() if "MULTIPROC" not in k}
    result = subprocess.run(
        [sys.executable, "-c", METRICS_IN_MEMORY],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
