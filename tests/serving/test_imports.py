"""The API imports no Dagster and no scikit-learn: it starts fast and stays small."""

from __future__ import annotations

import subprocess
import sys

from tests.serving.conftest import REPO_ROOT, STREAMFLOW, clean_env

CHECK = """
import sys
import serving.app, serving.settings, streamflow_assets.cli
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
