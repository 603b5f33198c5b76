"""The code location loads and validates, and the pure modules stay free of Dagster."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DefaultSensorStatus, Definitions

from streamflow.domain.seeds import TABLES
from tests.conftest import child_env

REPO_ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT_KEYS = {AssetKey(t.snapshot) for t in TABLES}


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = child_env(
        STREAMFLOW_DATA_DIR=str(tmp_path / "data"), DAGSTER_HOME=str(tmp_path / "dagster_home")
    )
    (tmp_path / "dagster_home").mkdir()
    return env


def test_the_code_location_loads() -> None:
    from streamflow_assets.definitions import defs

    Definitions.validate_loadable(defs)
    assert "monthly_pipeline" in {job.name for job in defs.resolve_all_job_defs()}
    graph = defs.resolve_asset_graph()
    assert set(graph.get_all_asset_keys()) >= SNAPSHOT_KEYS
    checks = {(key.asset_key, key.name) for key in graph.asset_check_keys}
    for table in TABLES:
        assert (AssetKey(table.snapshot), "contract") in checks
        assert (AssetKey(table.snapshot), "row_count_change") in checks
    assert defs.resolve_sensor_def("new_seed_month_sensor").job_name == "monthly_pipeline"
    # Running from the start: the UI offers a month as soon as its seeds land.
    registering = defs.resolve_sensor_def("seed_months_sensor")
    assert registering.default_status == DefaultSensorStatus.RUNNING


def test_every_partitioned_asset_offers_exactly_the_seeded_months(
    settings_for, tmp_path: Path, dagster_instance
) -> None:
    from streamflow_assets.definitions import build_definitions
    from streamflow_assets.partitions import add_seeded_months

    seeds = tmp_path / "seeds"
    # A gap (no month_002), and folders that are no month.
    for folder in ("month_000", "month_001", "month_003", "notes", "month_1"):
        (seeds / folder).mkdir(parents=True)
    defs = build_definitions(settings_for(tmp_path / "data", seeds))
    graph = defs.resolve_asset_graph()
    partitioned = [graph.get(key) for key in graph.get_all_asset_keys()]
    partitioned = [node for node in partitioned if node.partitions_def is not None]
    assert len(partitioned) == len(graph.get_all_asset_keys()) - 1  # all but feature_registry
    job = defs.resolve_job_def("monthly_pipeline")

    def offered() -> set[tuple[str, ...]]:
        definitions = [node.partitions_def for node in partitioned] + [job.partitions_def]
        return {
            tuple(d.get_partition_keys(dynamic_partitions_store=dagster_instance))
            for d in definitions
        }

    assert offered() == {()}, "no month is a partition before its seeds are found"
    assert add_seeded_months(dagster_instance, seeds) == ["2024-01", "2024-02", "2024-04"]
    assert offered() == {("2024-01", "2024-02", "2024-04")}
    assert add_seeded_months(dagster_instance, seeds) == []


def test_build_definitions_binds_resources_to_the_settings(settings_for, tmp_path: Path) -> None:
    from streamflow_assets.definitions import build_definitions

    settings = settings_for(tmp_path / "data", tmp_path / "seeds")
    defs = build_definitions(settings)
    assert Path(defs.resources["seeds"].seeds_dir) == tmp_path / "seeds"
    assert Path(defs.resources["snapshots"].root) == tmp_path / "data" / "snapshots"


def test_settings_paths_are_absolute_and_per_data_dir(
    settings_for, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = settings_for(Path("one"), Path("seeds"))
    assert settings.data_dir == tmp_path / "one"
    assert settings.seeds_dir == tmp_path / "seeds"
    other = settings_for(tmp_path / "two", tmp_path / "seeds")
    assert other.dagster_home != settings.dagster_home
    assert other.snapshots_dir != settings.snapshots_dir
    assert settings.dagster_home.is_relative_to(settings.data_dir)
    assert settings.snapshots_dir.is_relative_to(settings.data_dir)


def test_dagster_definitions_validate_exits_0(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "dagster"), "definitions", "validate"]
        + ["-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_layers_hold_and_the_domain_is_pure() -> None:
    """import-linter's contracts (pyproject.toml): ops over the code location and the API, over the
    adapters, settings and the domain; the domain imports no framework, store or network client."""
    result = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "lint-imports"), "--no-cache"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout, result.stdout


@pytest.mark.parametrize("config", ["dagster.yaml", "dagster.postgres.yaml"])
def test_both_instances_run_two_at_a_time_and_promote_one_at_a_time(config: str) -> None:
    settings = yaml.safe_load((REPO_ROOT / config).read_text())
    assert settings["concurrency"] == {
        "runs": {"max_concurrent_runs": 2},
        "pools": {"default_limit": 1},
    }
    # The daemon gives back the slot of a run that ended without freeing it.
    assert settings["run_monitoring"]["enabled"] is True
    assert settings["run_monitoring"]["free_slots_after_run_end_seconds"] == 60


def test_dagster_accepts_the_local_instance_config(tmp_path: Path) -> None:
    from dagster import DagsterInstance

    shutil.copy(REPO_ROOT / "dagster.yaml", tmp_path)
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        concurrency = instance.get_concurrency_config()
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 60
    assert concurrency.pool_config.default_pool_limit == 1
    assert concurrency.run_queue_config.max_concurrent_runs == 2


MONITORING_ASSETS = ("batch_scores", "feature_drift", "model_performance", "served_predictions")


def test_the_monitoring_assets_are_described_like_the_others() -> None:
    from streamflow_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    for name in MONITORING_ASSETS:
        node = graph.get(AssetKey(name))
        assert node.group_name == "monitoring"
        assert node.kinds, name
        assert node.description, name
        assert node.partitions_def is not None
    checks = {(key.asset_key.path[0], key.name) for key in graph.asset_check_keys}
    assert ("feature_drift", "drift_share_below_threshold") in checks
    assert defs.resolve_sensor_def("retraining_sensor").job_name == "retraining"


@pytest.mark.parametrize(
    ("policy", "trains"), [("monthly", True), ("on_trigger", False)], ids=["monthly", "on_trigger"]
)
def test_the_retrain_policy_chooses_what_the_monthly_pipeline_runs(
    settings_for, tmp_path: Path, policy: str, trains: bool
) -> None:
    from streamflow_assets.definitions import build_definitions

    defs = build_definitions(settings_for(tmp_path / "data", tmp_path / "seeds", retrain=policy))
    graph = defs.resolve_asset_graph()
    monthly = defs.resolve_job_def("monthly_pipeline").asset_layer.selected_asset_keys
    retrained = {AssetKey(n) for n in ("churn_model", "production_model", "batch_scores")}
    assert {AssetKey("feature_drift"), AssetKey("model_performance")} <= monthly
    assert (retrained <= monthly) is trains
    assert not trains or monthly == set(graph.get_all_asset_keys())
    assert defs.resolve_job_def("retraining").asset_layer.selected_asset_keys == retrained
