"""Two pipelines at once, and `kill -9` of a pipeline mid-write, mid-training and mid-promotion.

Real `streamflow pipeline` processes on the local profile over the real seeds; the phase to kill
in is read from what the process leaves observable (the online store's write journal, its run's
events in the Dagster instance, its run in MLflow, the promotion pool's claimed slot).
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus
from mlflow.tracking import MlflowClient

from streamflow.adapters.registry import ABANDONED, CHAMPION_ALIAS, MODEL_NAME, Registry
from streamflow.adapters.snapshots import ParquetSnapshotStore
from streamflow.domain import months
from streamflow.domain.features import FEATURE_VIEWS
from streamflow.domain.seeds import TABLES
from streamflow.ops.pipeline import PID_TAG, in_progress_runs
from streamflow_assets.promotion.assets import PROMOTION_POOL
from tests.faults import Pipeline, start_pipeline, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.slow]

USERS = 7043
JANUARY, FEBRUARY = "2024-01", "2024-02"


def instance_of(data_dir: Path) -> DagsterInstance:
    return DagsterInstance.from_config(str(data_dir / "dagster"))


def registry_of(data_dir: Path) -> Registry:
    return Registry(MlflowClient(f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}"))


def online_months(data_dir: Path) -> dict[str, tuple[int, set[int]]]:
    """Per feature view: users online, and the distinct event times they hold.

    Opening the file as a reader rolls back a write that a killed process left in its journal,
    as the next writer would.
    """
    with sqlite3.connect(data_dir / "feast" / "online.db") as db:
        found = {}
        for view in FEATURE_VIEWS:
            table = f"streamflow_{view.name}"
            (users,) = db.execute(f"SELECT count(DISTINCT entity_key) FROM {table}").fetchone()
            times = {t for (t,) in db.execute(f"SELECT DISTINCT event_ts FROM {table}")}
            found[view.name] = (users, times)
    return found


def snapshot_rows(data_dir: Path, partition: str) -> dict[str, int | None]:
    store = ParquetSnapshotStore(data_dir / "snapshots")
    tables = [t.snapshot for t in TABLES] + ["training_dataset"]
    return {table: store.row_count(table, months.as_of(partition)) for table in tables}


def step_started(instance: DagsterInstance, pipeline: Pipeline, step: str) -> bool:
    for run in in_progress_runs(instance, pipeline.pid):
        for record in instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.STEP_START
        ).records:
            if record.event_log_entry.step_key == step:
                return True
    return False


def released_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if "of dead pid" in line]


@pytest.fixture(scope="module")
def raced_january(real_seeds: Path, tmp_path_factory: pytest.TempPathFactory):
    """Two `streamflow pipeline` over January started at once, on one data dir."""
    data_dir = tmp_path_factory.mktemp("faults") / "data"
    args = ("--seeds", str(real_seeds), "--partitions", JANUARY)
    first, second = start_pipeline(data_dir, *args), start_pipeline(data_dir, *args)
    results = {p.pid: p.finish() for p in (first, second)}
    registry = registry_of(data_dir)
    versions = registry.client.search_model_versions(f"name = '{MODEL_NAME}'")
    with instance_of(data_dir) as instance:
        runs = list(instance.get_runs())
    return data_dir, results, versions, runs


def test_two_pipelines_at_once_one_finishes_the_other_is_refused_naming_it(raced_january) -> None:
    data_dir, results, versions, runs = raced_january
    codes = sorted(code for code, _, _ in results.values())
    assert codes == [0, 3], {pid: r for pid, r in results.items()}
    (winner,) = [pid for pid, (code, _, _) in results.items() if code == 0]
    (refused,) = [err for code, _, err in results.values() if code == 3]
    assert "another streamflow pipeline is running over the data dir" in refused
    assert f"(pid {winner}," in refused and "refused" in refused
    # One run, one candidate version, one champion: nothing of the refused process got through.
    assert [(r.tags["dagster/partition"], r.status) for r in runs] == [
        (JANUARY, DagsterRunStatus.SUCCESS)
    ]
    # The winner's run is named when it had started by the time the other asked.
    if named := re.search(rf"run ([0-9a-f]{{8}}) of {JANUARY}", refused):
        assert named[1] == runs[0].run_id[:8]
    assert [(v.tags["partition"], v.tags["promotion_decision"]) for v in versions] == [
        (JANUARY, "promoted")
    ]
    champion = registry_of(data_dir).client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS)
    assert champion.version == versions[0].version
    assert not (data_dir / "pipeline.lock").read_text().strip(), "the lock names no holder after"


def test_kill_9_mid_online_write_then_mid_training_then_mid_promotion_leaves_stores_consistent(
    raced_january, real_seeds: Path
) -> None:
    data_dir, _, _, _ = raced_january
    args = ("--seeds", str(real_seeds), "--partitions", FEBRUARY)
    served = online_months(data_dir)
    ((users, times),) = {(u, frozenset(t)) for u, t in served.values()}
    (january_ts,) = times
    assert users == USERS

    # 1. While February's features are written online: SQLite's rollback journal exists for
    # exactly as long as the write transaction is open.
    journal = data_dir / "feast" / "online.db-journal"
    with instance_of(data_dir) as instance:
        writing = start_pipeline(data_dir, *args)

        def online_write() -> bool:
            return journal.exists() and step_started(instance, writing, "online_features")

        wait_until(online_write, writing, "online write")
        writing.kill9()
    assert journal.exists(), "the kill landed after the write had committed"
    assert online_months(data_dir) == served, "a half-written month, or rows rolled back"
    assert set(snapshot_rows(data_dir, FEBRUARY).values()) <= {USERS, None}

    # 2. While the model trains: churn_model started, its MLflow run open.
    registry = registry_of(data_dir)
    with instance_of(data_dir) as instance:
        training = start_pipeline(data_dir, *args)

        def model_training() -> bool:
            return step_started(instance, training, "churn_model") and bool(
                registry.client.search_runs(
                    [registry.client.get_experiment_by_name("streamflow").experiment_id],
                    "attributes.status = 'RUNNING'",
                )
            )

        wait_until(model_training, training, "training")
        training.kill9()

        # 3. While production_model holds the promotion pool's one slot.
        def promotion_slot_held() -> bool:
            info = instance.event_log_storage.get_concurrency_info(PROMOTION_POOL)
            return bool(info.active_run_ids)

        promoting = start_pipeline(data_dir, *args)
        wait_until(promotion_slot_held, promoting, "promotion")
        promoting.kill9()
        assert instance.event_log_storage.get_concurrency_info(PROMOTION_POOL).active_run_ids

    # 4. The re-run frees the killed run's slot at once and says so, then succeeds.
    code, stdout, stderr = start_pipeline(data_dir, *args).finish()
    assert code == 0, stdout + stderr
    (freed,) = released_lines(stdout)
    assert f"dead pid {promoting.pid}: marked failed; pool slots freed: {PROMOTION_POOL}" in freed
    assert re.search(rf"^{FEBRUARY}\s+ok\s", stdout, re.MULTILINE), stdout
    # The training run's cleanup was printed by the run after it (3), which was then killed.
    promoting_out = promoting.stdout.read_text()
    assert f"of dead pid {writing.pid}: marked failed" in training.stdout.read_text()
    assert f"of dead pid {training.pid}: marked failed; pool slots freed: none" in promoting_out
    assert "ended as KILLED" in promoting_out

    with instance_of(data_dir) as instance:
        assert not in_progress_runs(instance)
        assert not instance.event_log_storage.get_concurrency_info(PROMOTION_POOL).active_run_ids
        february = [r for r in instance.get_runs() if r.tags["dagster/partition"] == FEBRUARY]
        assert sorted(r.status.value for r in february) == ["FAILURE"] * 3 + ["SUCCESS"]
        (last,) = [r for r in february if r.status == DagsterRunStatus.SUCCESS]
        (promoting_run,) = [r for r in february if r.tags[PID_TAG] == str(promoting.pid)]
        blocked = [
            e.message
            for e in instance.all_logs(last.run_id)
            if "blocked by limit" in (e.message or "")
        ]
        assert not blocked, blocked

    # Every store consistent: both months' snapshots whole, every user online at February (the
    # newer month), one live candidate per month, the champion from the run that succeeded.
    for partition in (JANUARY, FEBRUARY):
        assert set(snapshot_rows(data_dir, partition).values()) == {USERS}
    online = online_months(data_dir)
    ((users, times),) = {(u, frozenset(t)) for u, t in online.values()}
    (february_ts,) = times
    assert users == USERS and february_ts > january_ts
    client = registry.client
    versions = client.search_model_versions(f"name = '{MODEL_NAME}'")
    live = {}
    for version in versions:
        if version.tags.get("promotion_decision") != ABANDONED:
            assert version.tags["partition"] not in live, "two live candidates for one month"
            live[version.tags["partition"]] = version
    abandoned = [v for v in versions if v.tags.get("promotion_decision") == ABANDONED]
    assert [v.tags["dagster_run_id"] for v in abandoned] == [promoting_run.run_id]
    assert f"{MODEL_NAME} v{abandoned[0].version} tagged {ABANDONED}" in stdout
    assert live[FEBRUARY].tags["dagster_run_id"] == last.run_id
    assert live[FEBRUARY].tags["promotion_decision"] in {"promoted", "kept_out"}
    # The champion is January's or February's live candidate (the rule decides which), never
    # a version of a killed run.
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS)
    assert champion.version == registry.champion().version
    assert champion.version in {live[JANUARY].version, live[FEBRUARY].version}
    with instance_of(data_dir) as instance:
        champion_run = instance.get_run_by_id(champion.tags["dagster_run_id"])
        assert champion_run.status == DagsterRunStatus.SUCCESS
    assert client.get_run(champion.run_id).info.status == "FINISHED"
    experiment = client.get_experiment_by_name("streamflow").experiment_id
    assert not client.search_runs([experiment], "attributes.status = 'RUNNING'")
