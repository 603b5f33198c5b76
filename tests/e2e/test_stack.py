"""The native stack end to end: a backfill through Dagster's GraphQL API, /predict, and the UI."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from playwright.sync_api import Page, expect

from streamflow.ops.stack import CODE_SERVER, Supervisor, create_databases, drop_databases
from streamflow.settings import Settings
from tests.conftest import child_env
from tests.e2e.browser import CHROMIUM, chromium
from tests.profiles import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "streamflow.json"
MONTHS = ["2024-01", "2024-02"]
KNOWN_USER = "7590-VHVEG"
# A backfill of both real months runs about twenty steps per month on two cores.
BACKFILL_TIMEOUT = 1500
TERMINAL = {"COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED", "COMPLETED"}

LAUNCH_BACKFILL = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on UnauthorizedError { message }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
    ... on RunConflict { message }
    ... on ConflictingExecutionParamsError { message }
    ... on NoModeProvidedError { message }
    ... on InvalidSubsetError { message }
  }
}
"""
BACKFILL_STATUS = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status error { message } runs(limit: 100) { runId status } }
    ... on PythonError { message }
  }
}
"""
ASSETS = """
{
  assetNodes {
    assetKey { path }
    isPartitioned
    partitionStats { numMaterialized numFailed }
  }
}
"""
OFFERED = """
{ assetNodes { assetKey { path } isPartitioned partitionKeys } }
"""
RUN_FAILURES = """
query Failures($id: ID!) {
  runOrError(runId: $id) {
    ... on Run {
      eventConnection(afterCursor: null) {
        events {
          __typename
          ... on ExecutionStepFailureEvent { stepKey error { message } }
          ... on RunFailureEvent { message }
        }
      }
    }
  }
}
"""


@dataclass(frozen=True)
class NativeStack:
    """The processes `python -m streamflow.ops.stack up` started for this module."""

    env: dict[str, str]
    data_dir: Path
    dagster_url: str
    api_url: str

    def stack(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """`make stack` / `make stack-down` as a user runs them, in this module's environment."""
        return subprocess.run(
            [str(PYTHON), "-m", "streamflow.ops.stack", *args],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def graphql(self, query: str, **variables: object) -> dict:
        response = httpx.post(
            f"{self.dagster_url}/graphql",
            json={"query": query, "variables": variables},
            timeout=120,
        )
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.name} (last lines)\n" + "\n".join(log.read_text().splitlines()[-30:])
            for log in sorted((self.data_dir / "stack").glob("*.log"))
        )


def _group_alive(pgid: int) -> bool:
    """Whether a process is left in the process group (supervisord gives each service one)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def native_stack(
    real_seeds: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NativeStack]:
    """MLflow, the Dagster webserver and daemon of the postgres profile on free loopback ports,
    over throwaway databases on the machine's PostgreSQL (dropped afterwards), with the real
    seeds; stopped by `stack down`, which must leave nothing it started and nothing else."""
    data_dir = tmp_path_factory.mktemp("e2e") / "data"
    stem = f"streamflow_e2e_{uuid.uuid4().hex[:10]}"
    databases = {role: f"{stem}_{role}" for role in ("streamflow", "mlflow", "dagster")}
    ports = {name: free_port() for name in ("mlflow", "dagster", "code", "api")}
    env = child_env(
        **{
            "STREAMFLOW_PROFILE": "postgres",
            "STREAMFLOW_DATA_DIR": str(data_dir),
            "STREAMFLOW_SEEDS_DIR": str(real_seeds),
            "STREAMFLOW_POSTGRES_HOST": "127.0.0.1",
            "STREAMFLOW_POSTGRES_PORT": "5432",
            "STREAMFLOW_POSTGRES_USER": "postgres",
            "STREAMFLOW_POSTGRES_DB": databases["streamflow"],
            "STREAMFLOW_STACK_MLFLOW_DB": databases["mlflow"],
            "STREAMFLOW_STACK_DAGSTER_DB": databases["dagster"],
            "STREAMFLOW_STACK_MLFLOW_PORT": str(ports["mlflow"]),
            "STREAMFLOW_STACK_DAGSTER_PORT": str(ports["dagster"]),
            "STREAMFLOW_STACK_CODE_SERVER_PORT": str(ports["code"]),
            "STREAMFLOW_STACK_API_PORT": str(ports["api"]),
            "STREAMFLOW_STACK_MLFLOW_WORKERS": "1",
            "STREAMFLOW_STACK_START_TIMEOUT_SECONDS": "420",
        }
    )
    server = Settings(postgres_host="127.0.0.1", postgres_port=5432, postgres_user="postgres")
    stack = NativeStack(
        env=env,
        data_dir=data_dir,
        dagster_url=f"http://127.0.0.1:{ports['dagster']}",
        api_url=f"http://127.0.0.1:{ports['api']}",
    )
    # Made here rather than by `stack up`, so that teardown knows exactly what to drop.
    create_databases(server, databases.values())
    # A process of the same user that `stack down` must leave alone.
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(3600)"], start_new_session=True
    )
    try:
        started = stack.stack("up", "mlflow", "dagster-webserver", "dagster-daemon")
        assert started.returncode == 0, started.stdout + started.stderr + stack.logs()
        yield stack
    finally:
        groups = Supervisor(data_dir / "stack").running()
        stopped = stack.stack("down", timeout=300)
        try:
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr
            assert set(groups) >= {"mlflow", "dagster-webserver", "dagster-daemon"}
            alive = [name for name, pgid in groups.items() if _group_alive(pgid)]
            assert not alive, f"still running after `stack down`: {alive}\n{stack.logs()}"
            assert Supervisor(data_dir / "stack").daemon_pid() is None
            assert bystander.poll() is None, "`stack down` stopped a process it did not start"
        finally:
            os.killpg(bystander.pid, signal.SIGKILL)
            bystander.wait()
            drop_databases(server, databases.values())


@pytest.fixture(scope="module")
def offered_months(native_stack: NativeStack) -> dict[str, list[str]]:
    """The months the UI offers per partitioned asset, once the daemon's `seed_months_sensor`
    (running by default; its first tick comes as the daemon starts) has found the seeds."""
    deadline = time.monotonic() + 180
    while True:
        nodes = native_stack.graphql(OFFERED)["assetNodes"]
        offered = {
            n["assetKey"]["path"][-1]: n["partitionKeys"] for n in nodes if n["isPartitioned"]
        }
        if any(offered.values()) or time.monotonic() > deadline:
            return offered
        time.sleep(2)


def test_the_ui_offers_exactly_the_seeded_months(
    native_stack: NativeStack, offered_months: dict[str, list[str]]
) -> None:
    assert len(offered_months) >= 12, offered_months
    assert all(keys == MONTHS for keys in offered_months.values()), (
        str(offered_months) + native_stack.logs()
    )


@pytest.fixture(scope="module")
def backfill(native_stack: NativeStack, offered_months: dict[str, list[str]]) -> dict:
    """Both real months of every asset, launched as the UI's "Materialize" does for a range of
    partitions (`launchPartitionBackfill`) and executed by the daemon; waits for the outcome."""
    nodes = native_stack.graphql(ASSETS)["assetNodes"]
    params = {
        "partitionNames": MONTHS,
        "assetSelection": [{"path": node["assetKey"]["path"]} for node in nodes],
        "title": "e2e: 2024-01..2024-02",
        # No run config: what the button launches, with the code location's default executor.
    }
    launched = native_stack.graphql(LAUNCH_BACKFILL, params=params)["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]
    deadline = time.monotonic() + BACKFILL_TIMEOUT
    started = time.monotonic()
    while True:
        state = native_stack.graphql(BACKFILL_STATUS, id=backfill_id)["partitionBackfillOrError"]
        if state.get("status") in TERMINAL or time.monotonic() > deadline:
            break
        time.sleep(5)
    state["id"] = backfill_id
    state["seconds"] = round(time.monotonic() - started)
    state["failures"] = [
        event
        for run in state.get("runs", [])
        if run["status"] != "SUCCESS"
        for event in native_stack.graphql(RUN_FAILURES, id=run["runId"])["runOrError"][
            "eventConnection"
        ]["events"]
        if event["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent")
    ]
    return state


def test_a_backfill_launched_like_the_ui_is_run_by_the_daemon_then_predict_answers(
    native_stack: NativeStack, backfill: dict
) -> None:
    assert backfill["status"] == "COMPLETED_SUCCESS", (
        json.dumps(backfill, indent=1) + native_stack.logs()
    )
    assert backfill["runs"] and all(run["status"] == "SUCCESS" for run in backfill["runs"])
    stats = {
        node["assetKey"]["path"][-1]: node["partitionStats"]
        for node in native_stack.graphql(ASSETS)["assetNodes"]
        if node["isPartitioned"]
    }
    assert {
        "online_features",
        "training_dataset",
        "churn_model",
        "production_model",
        "batch_scores",
        "feature_drift",
        "model_performance",
    } <= set(stats)
    assert all(s["numMaterialized"] == len(MONTHS) for s in stats.values()), stats

    started = native_stack.stack("up", "api")
    assert started.returncode == 0, started.stdout + started.stderr + native_stack.logs()
    with httpx.Client(base_url=native_stack.api_url, timeout=30) as api:
        assert api.get("/ready").status_code == 200, native_stack.logs()
        answer = api.post("/predict", json={"user_id": KNOWN_USER})
        assert answer.status_code == 200, answer.text
        assert answer.json()["user_id"] == KNOWN_USER
        assert answer.json()["model"]["version"] in {"1", "2"}
        assert api.post("/predict", json={"user_id": "no-such-user"}).status_code == 404
        metrics = api.get("/metrics").text
    # The Grafana dashboard charts these series: each must be one the API really exports.
    charted = set(re.findall(r"streamflow_[a-z_0-9]+", DASHBOARD.read_text()))
    # Sample names (`_bucket`, `_total`, …) and the families they belong to (`# TYPE` lines).
    exported = {
        line.split()[2] if line.startswith("# TYPE ") else line.split("{")[0].split(" ")[0]
        for line in metrics.splitlines()
        if line and (line.startswith("# TYPE ") or not line.startswith("#"))
    }
    assert charted <= exported, charted - exported


def test_the_webserver_the_daemon_and_their_runs_share_the_stacks_one_code_server(
    native_stack: NativeStack, backfill: dict
) -> None:
    """After a backfill the daemon ran: no code server but the supervised `dagster-code` one
    (the daemon used to start a fresh one every minute, the webserver one of its own)."""
    assert backfill["runs"], "the backfill test says why"
    running = Supervisor(native_stack.data_dir / "stack").running()
    code_tree = _tree(running[CODE_SERVER])
    everything = [process for pid in running.values() for process in _tree(pid)]
    servers = [p for p in everything if _is_code_server(p)]
    assert servers and set(servers) <= set(code_tree), [p.cmdline() for p in servers]
    assert not any(
        _is_code_server(p)
        for name in ("dagster-webserver", "dagster-daemon")
        for p in _tree(running[name])
    )


def test_the_tracking_server_is_one_process(native_stack: NativeStack) -> None:
    """`mlflow server` used to wait on its uvicorn child, a second full MLflow import (257 MB)."""
    running = Supervisor(native_stack.data_dir / "stack").running()
    tree = _tree(running["mlflow"])
    assert len(tree) == 1, [p.cmdline() for p in tree]
    assert "mlflow.server.fastapi_app:app" in tree[0].cmdline()
    port = native_stack.env["STREAMFLOW_STACK_MLFLOW_PORT"]
    assert httpx.get(f"http://127.0.0.1:{port}/health").text == "OK"


def _tree(pid: int) -> list[psutil.Process]:
    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


def _is_code_server(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.NoSuchProcess):
        command = " ".join(process.cmdline())
        return "api grpc" in command or "code-server start" in command
    return False


@pytest.mark.browser
def test_the_dagster_ui_shows_the_assets_and_their_materialized_partitions(
    native_stack: NativeStack, backfill: dict, tmp_path: Path
) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (`.ci/run` installs Debian's chromium)")
    assert backfill["status"] == "COMPLETED_SUCCESS", "the backfill test says why"
    ui = native_stack.dagster_url
    with chromium(tmp_path / "dagster-ui.png") as page:
        body = page.locator("body")
        page.goto(f"{ui}/asset-groups")
        for group in ("ingestion", "features", "training", "monitoring"):
            expect(body).to_contain_text(group, timeout=90_000)
        _screenshot(page, "lineage")
        page.goto(f"{ui}/locations/streamflow/asset-groups/features")
        for asset in ("feature_registry", "online_features", "training_dataset"):
            expect(body).to_contain_text(asset, timeout=90_000)
        _screenshot(page, "features-group")
        page.goto(f"{ui}/assets/online_features?view=partitions")
        expect(body).to_contain_text(f"Materialized ({len(MONTHS)})", timeout=90_000)
        _screenshot(page, "online-features-partitions")
        page.goto(f"{ui}/assets/online_features?view=checks")
        expect(body).to_contain_text("online_store_freshness", timeout=90_000)
        _screenshot(page, "online-features-checks")
        page.goto(f"{ui}/runs/b/{backfill['id']}")
        expect(body).to_contain_text(backfill["id"], timeout=90_000)
        _screenshot(page, "backfill")
        page.goto(f"{ui}/automation")
        for automation in ("freshness_alert_sensor", "new_seed_month_sensor"):
            expect(body).to_contain_text(automation, timeout=90_000)
        _screenshot(page, "automation")


def _screenshot(page: Page, name: str) -> None:
    """The page as the tutorial shows it, saved when STREAMFLOW_SCREENSHOTS_DIR is set (to
    docs/tutorial/img to refresh the tutorial's pictures: see docs/tutorial/ui.md)."""
    target = os.environ.get("STREAMFLOW_SCREENSHOTS_DIR")
    if target:
        page.wait_for_load_state("networkidle")
        # The UI's one-time "Join the Dagster community" dialog covers the page it opens over.
        skip = page.get_by_role("button", name="Skip", exact=True)
        if skip.is_visible():
            skip.click()
            expect(skip).to_be_hidden()
        page.screenshot(path=Path(target) / f"{name}.png")
