"""`make demo` on a fresh data dir: a later month's candidate is promoted while the API serves,
the API hot-reloads it and /predict answers with it, and monitoring shows the drift."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from mlflow.tracking import MlflowClient

from streamflow.domain.promotion import CHAMPION_ALIAS, MODEL_NAME
from tests.conftest import child_env
from tests.profiles import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STREAMFLOW = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "streamflow"
# Three months of 7,043 users and the API's start: about 4 minutes here, on a busy machine more.
DEMO_TIMEOUT = 900
PREDICTED = re.compile(r"^POST /predict \S+: churn probability [\d.]+, answered by \S+ v(\d+)$")


def test_the_demo_promotes_the_last_month_and_the_running_api_serves_it(tmp_path: Path) -> None:
    port = free_port()
    env = child_env(
        STREAMFLOW_DATA_DIR=str(tmp_path / "var"), STREAMFLOW_SEEDS_DIR=str(tmp_path / "seeds")
    )
    demo = subprocess.Popen(
        [str(STREAMFLOW), "demo", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    deadline = time.monotonic() + DEMO_TIMEOUT
    try:
        for line in demo.stdout:
            lines.append(line.rstrip("\n"))
            if "Ctrl-C stops it" in line or time.monotonic() > deadline:
                break
        output = "\n".join(lines)
        assert "Ctrl-C stops it" in output, output
        served = [int(m[1]) for line in lines if (m := PREDICTED.match(line))]
        client = MlflowClient(f"sqlite:///{tmp_path / 'var' / 'mlflow' / 'mlflow.db'}")
        champion = int(client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS).version)
        # Before the last month the first version served; after it, the promoted one, hot-reloaded.
        assert served == [1, champion] and champion != 1, output
        assert re.search(rf"^2024-03  v{champion} promoted: ", output, re.MULTILINE), output
        assert re.search(r"^2024-02  v2 kept_out: .* does not beat the margin", output, re.M)
        assert re.search(r"^skips_7d\s.*\sYES$", output, re.MULTILINE), output
        # The API stays up after the story, still serving the champion.
        answer = httpx.post(f"http://127.0.0.1:{port}/predict", json={"user_id": "7590-VHVEG"})
        assert answer.json()["model"]["version"] == str(champion)
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()
    assert demo.returncode == 0
