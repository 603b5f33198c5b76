"""The `streamflow pipeline` command, run as a real process against the real seeds.

Every month runs the whole monthly job (features, training, promotion), hence `slow`.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from streamflow.adapters.snapshots import ParquetSnapshotStore
from streamflow.domain import months
from streamflow.domain.seeds import TABLES
from streamflow_assets.definitions import defs
from streamflow_assets.jobs import MONTHLY_PIPELINE
from streamflow_assets.partitions import MONTHS
from tests.conftest import child_env

REPO_ROOT = Path(__file__).resolve().parents[2]
STREAMFLOW = REPO_ROOT / ".venv" / "bin" / "streamflow"
SUMMARY = re.compile(r"^(\d{4}-\d{2})\s+(ok|FAILED)\s.*\brun ([0-9a-f]{8})$")
PROGRESS = re.compile(r"^(\d{4}-\d{2})\s+(\d+\.\d)s\s+(\w+)$")


def streamflow(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run the CLI with STREAMFLOW_DATA_DIR set and no DAGSTER_HOME, beside the data dir."""
    env = child_env(STREAMFLOW_DATA_DIR=str(data_dir))
    return subprocess.run(
        [str(STREAMFLOW), *args],
        cwd=data_dir.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def streamflow_timed(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """`streamflow` as above, its stdout a pipe read line by line as it comes; the result also
    says when each line arrived (`arrivals`) and the process exited (`exited`), in monotonic
    seconds."""
    env = child_env(STREAMFLOW_DATA_DIR=str(data_dir))
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with (data_dir.parent / "stderr.txt").open("w+") as stderr:
        process = subprocess.Popen(
            [str(STREAMFLOW), *args],
            cwd=data_dir.parent,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        lines, arrivals = [], []
        for line in process.stdout:
            lines.append(line)
            arrivals.append(time.monotonic())
        process.wait(timeout=300)
        exited = time.monotonic()
        stderr.seek(0)
        completed = subprocess.CompletedProcess(
            process.args, process.returncode, "".join(lines), stderr.read()
        )
    completed.arrivals, completed.exited = arrivals, exited
    return completed


def recorded_runs(data_dir: Path) -> list:
    with DagsterInstance.from_config(str(data_dir / "dagster")) as instance:
        return list(instance.get_runs())


def summaries(stdout: str) -> list[re.Match[str]]:
    return [match for line in stdout.splitlines() if (match := SUMMARY.match(line.strip()))]


@pytest.fixture(scope="module")
def both_months(real_seeds: Path, tmp_path_factory: pytest.TempPathFactory):
    data_dir = tmp_path_factory.mktemp("cli") / "data"
    result = streamflow_timed(
        "pipeline",
        "--seeds",
        str(real_seeds),
        "--partitions",
        "2024-01..2024-02",
        data_dir=data_dir,
    )
    return data_dir, result


@pytest.mark.slow
def test_pipeline_runs_both_months_and_prints_one_line_each(both_months) -> None:
    _, result = both_months
    assert result.returncode == 0, result.stdout + result.stderr
    lines = summaries(result.stdout)
    assert [(m[1], m[2]) for m in lines] == [("2024-01", "ok"), ("2024-02", "ok")], result.stdout
    # MLflow warns once per logged model when it cannot find pip in the environment.
    assert "Failed to resolve installed pip version" not in result.stdout + result.stderr


@pytest.mark.slow
def test_pipeline_prints_each_asset_as_it_is_materialized_even_into_a_pipe(both_months) -> None:
    _, result = both_months
    lines = result.stdout.splitlines()
    arrivals, exited = result.arrivals, result.exited
    progress = [(i, match) for i, line in enumerate(lines) if (match := PROGRESS.match(line))]
    january = [
        i for i, line in enumerate(lines) if (m := SUMMARY.match(line)) and m[1] == "2024-01"
    ]
    (summary,) = january
    assets = [m[3] for i, m in progress if m[1] == "2024-01"]
    # One line for every asset of the monthly job, each once.
    job = defs.resolve_job_def(MONTHLY_PIPELINE)
    expected = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
    assert sorted(assets) == sorted(expected), result.stdout
    assert {"users_snapshots", "churn_model", "production_model"} <= set(assets)
    # Every January asset is on record before January's summary line; the seconds grow.
    assert all(i < summary for i, m in progress if m[1] == "2024-01")
    seconds = [float(m[2]) for _, m in progress if m[1] == "2024-01"]
    assert seconds == sorted(seconds)
    # Flushed as they happen: the first asset arrived long before January ended, and January's
    # summary long before the process exited (February still had its whole run to go).
    first = progress[0][0]
    assert arrivals[summary] - arrivals[first] > 5, result.stdout
    assert exited - arrivals[summary] > 10, result.stdout


@pytest.mark.slow
def test_pipeline_records_its_runs_in_the_data_dirs_instance(both_months) -> None:
    data_dir, result = both_months
    assert (data_dir / "dagster" / "dagster.yaml").is_file()
    runs = recorded_runs(data_dir)
    assert sorted(run.tags["dagster/partition"] for run in runs) == ["2024-01", "2024-02"]
    assert all(run.status == DagsterRunStatus.SUCCESS for run in runs)
    printed = {m[3] for m in summaries(result.stdout)}
    assert printed == {run.run_id[:8] for run in runs}
    # The UI's months: exactly the seeded ones, in month order.
    with DagsterInstance.from_config(str(data_dir / "dagster")) as instance:
        assert instance.get_dynamic_partitions(MONTHS) == ["2024-01", "2024-02"]


@pytest.mark.slow
def test_pipeline_stores_both_months_under_the_data_dir(both_months) -> None:
    data_dir, _ = both_months
    store = ParquetSnapshotStore(data_dir / "snapshots")
    for table in TABLES:
        assert store.as_ofs(table.snapshot) == [months.as_of("2024-01"), months.as_of("2024-02")]
        assert store.row_count(table.snapshot, months.as_of("2024-02")) == 7043


@pytest.fixture(scope="module")
def second_dir(tmp_path_factory: pytest.TempPathFactory):
    """Another data dir, asked for March, whose seeds folder is empty (so this run is quick)."""
    root = tmp_path_factory.mktemp("cli")
    (root / "seeds" / "month_002").mkdir(parents=True)
    data_dir = root / "data"
    result = streamflow(
        "pipeline", "--seeds", str(root / "seeds"), "--partitions", "2024-03", data_dir=data_dir
    )
    return data_dir, result


def test_a_month_missing_its_files_fails_its_run_naming_the_file(second_dir) -> None:
    data_dir, result = second_dir
    assert result.returncode == 1, result.stdout + result.stderr
    assert "users.csv" in result.stderr and "file is missing" in result.stderr, result.stderr
    assert [(m[1], m[2]) for m in summaries(result.stdout)] == [("2024-03", "FAILED")]
    (run,) = recorded_runs(data_dir)
    assert run.tags["dagster/partition"] == "2024-03"
    assert run.status == DagsterRunStatus.FAILURE


def test_a_month_without_seeds_exits_2_before_any_run_naming_its_folder(
    real_seeds: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    result = streamflow(
        "pipeline",
        "--seeds",
        str(real_seeds),
        "--partitions",
        "2024-02..2024-04",
        data_dir=data_dir,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("streamflow pipeline: no seeds for 2024-03"), result.stderr
    for folder in ("month_002", "month_003"):
        assert str(real_seeds / folder) in result.stderr
    assert not summaries(result.stdout)
    assert not (data_dir / "dagster").exists(), "no instance, no run"


@pytest.mark.slow
def test_two_data_dirs_do_not_share_state(both_months, second_dir) -> None:
    first, _ = both_months
    second, _ = second_dir
    first_runs = {run.run_id: run.tags["dagster/partition"] for run in recorded_runs(first)}
    second_runs = {run.run_id: run.tags["dagster/partition"] for run in recorded_runs(second)}
    assert sorted(first_runs.values()) == ["2024-01", "2024-02"]
    assert list(second_runs.values()) == ["2024-03"]
    assert not first_runs.keys() & second_runs.keys()
    for data_dir, stored in ((first, ["2024-01", "2024-02"]), (second, [])):
        store = ParquetSnapshotStore(data_dir / "snapshots")
        for table in TABLES:
            assert store.as_ofs(table.snapshot) == [months.as_of(key) for key in stored]


def test_an_empty_seeds_dir_exits_2_naming_it(tmp_path: Path) -> None:
    seeds = tmp_path / "empty_seeds"
    seeds.mkdir()
    result = streamflow("pipeline", "--seeds", str(seeds), data_dir=tmp_path / "data")
    assert result.returncode == 2
    assert str(seeds) in result.stderr


@pytest.mark.parametrize("text", ["2024-03..2024-01", "last-month"], ids=["reversed", "words"])
def test_a_bad_partition_range_exits_2_quoting_it(tmp_path: Path, text: str) -> None:
    result = streamflow("pipeline", "--partitions", text, data_dir=tmp_path / "data")
    assert result.returncode == 2
    assert "streamflow pipeline:" in result.stderr
    assert text.split("..")[0] in result.stderr


def test_help_lists_every_command_and_an_unknown_one_exits_2(capsys) -> None:
    from streamflow.ops.cli import main

    assert main(["--help"]) == 0
    shown = capsys.readouterr().out
    for command in ("generate", "pipeline", "freshness", "monitor", "serve", "celery-worker"):
        assert command in shown
    assert main(["pipeline", "--help"]) == 0
    assert "--partitions" in capsys.readouterr().out
    assert main(["no-such-command"]) == 2
    assert "no-such-command" in capsys.readouterr().err
