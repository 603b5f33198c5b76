"""`streamflow freshness` as a real process: exit 0 fresh, 1 stale, 2 could not tell."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from streamflow.ops.cli import main
from tests.conftest import child_env

REPO_ROOT = Path(__file__).resolve().parents[2]
STREAMFLOW = REPO_ROOT / ".venv" / "bin" / "streamflow"


def start(data_dir: Path, seeds_dir: Path) -> subprocess.Popen[str]:
    env = child_env(STREAMFLOW_DATA_DIR=str(data_dir), STREAMFLOW_SEEDS_DIR=str(seeds_dir))
    return subprocess.Popen(
        [str(STREAMFLOW), "freshness"],
        cwd=data_dir.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def facts(stdout: str) -> dict[str, str]:
    return {
        name: value.strip()
        for name, _, value in (line.partition(" ") for line in stdout.splitlines())
    }


@pytest.fixture(scope="module")
def outcomes(january, february_snapshots_only, tmp_path_factory):
    """One process per exit code, run at once: each spends most of its time importing Feast."""
    root = tmp_path_factory.mktemp("cli")
    (root / "empty").mkdir()
    fresh = january.copy(root / "fresh")
    stale = february_snapshots_only.copy(root / "stale")
    processes = {
        "fresh": start(fresh.data_dir, fresh.seeds_dir),
        "stale": start(stale.data_dir, stale.seeds_dir),
        "no snapshots": start(root / "empty" / "data", root / "empty" / "seeds"),
    }
    results = {}
    for state, process in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        results[state] = (process.returncode, facts(stdout), stderr)
    return results


@pytest.mark.parametrize(
    ("state", "code", "status", "expected", "actual"),
    [
        ("fresh", 0, "FRESH", "2024-01-31", "2024-01-31"),
        ("stale", 1, "STALE", "2024-02-29", "2024-01-31"),
        ("no snapshots", 2, "UNKNOWN", "-", "-"),
    ],
)
def test_exit_code_and_facts_in_each_state(
    outcomes, state: str, code: int, status: str, expected: str, actual: str
) -> None:
    returncode, printed, stderr = outcomes[state]
    assert returncode == code, (printed, stderr)
    assert (printed["status"], printed["expected_as_of"], printed["actual_as_of"]) == (
        status,
        expected,
        actual,
    )
    for name in ("lag_days", "stale_fraction", "missing_users", "reasons"):
        assert name in printed


def test_a_stale_store_prints_its_lag(outcomes) -> None:
    _, printed, _ = outcomes["stale"]
    assert printed["lag_days"] == "29.0"
    assert printed["expected_partition"] == "2024-02"
    assert "29 days behind" in printed["reasons"]


@pytest.mark.parametrize(
    ("world", "code", "status"),
    [("february", 0, "FRESH"), ("february_snapshots_only", 2, "UNKNOWN")],
    ids=["fresh again", "registry missing"],
)
def test_more_states_in_process(
    request, world: str, code: int, status: str, world_copy, settings_for, capsys
) -> None:
    copy = world_copy(request.getfixturevalue(world))
    if status == "UNKNOWN":
        shutil.rmtree(copy.data_dir / "feast")
    settings_for(copy.data_dir, copy.seeds_dir)
    assert main(["freshness"]) == code
    assert facts(capsys.readouterr().out)["status"] == status
