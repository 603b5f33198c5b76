"""The same freshness check and alerts on the postgres profile, against the real server."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from dagster import AssetCheckSeverity, instance_for_test

from streamflow.adapters.alerts import read_jsonl
from streamflow.settings import Settings, get_settings
from tests.monitoring.conftest import (
    ONLINE_MONTH,
    SNAPSHOTS_ONLY,
    Sensor,
    run_assets,
    run_freshness_checks,
)
from tests.profiles import POSTGRES, throwaway_databases

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def postgres(
    real_seeds: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, Path]]:
    """The postgres profile on a throwaway database; seeds start with January only."""
    root = tmp_path_factory.mktemp("freshness-postgres")
    seeds = root / "seeds"
    shutil.copytree(real_seeds / "month_000", seeds / "month_000")
    with throwaway_databases("") as (database,), pytest.MonkeyPatch.context() as env:
        for name in [n for n in os.environ if n.startswith("STREAMFLOW_")]:
            env.delenv(name)
        env.setenv("STREAMFLOW_PROFILE", "postgres")
        env.setenv("STREAMFLOW_POSTGRES_DB", database)
        env.setenv("STREAMFLOW_DATA_DIR", str(root / "data"))
        env.setenv("STREAMFLOW_SEEDS_DIR", str(seeds))
        get_settings.cache_clear()
        try:
            yield get_settings(), real_seeds
        finally:
            get_settings.cache_clear()


def online_tables(settings: Settings) -> list[str]:
    with psycopg.connect(dbname=settings.postgres_db, **POSTGRES) as db:
        rows = db.execute(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE 'streamflow\\_%'"
        ).fetchall()
    return [name for (name,) in rows]


def test_stale_then_fresh_then_dropped_on_postgres(postgres) -> None:
    settings, real_seeds = postgres
    with instance_for_test() as instance:
        run_assets(settings, instance, "2024-01", ONLINE_MONTH)
        sensor = Sensor(settings, instance)
        assert run_freshness_checks(settings, instance).passed
        sensor.tick()

        shutil.copytree(real_seeds / "month_001", settings.seeds_dir / "month_001")
        run_assets(settings, instance, "2024-02", SNAPSHOTS_ONLY)
        evaluation = run_freshness_checks(settings, instance)
        assert not evaluation.passed and evaluation.severity == AssetCheckSeverity.ERROR
        facts = {name: value.value for name, value in evaluation.metadata.items()}
        assert (facts["expected_as_of"], facts["actual_as_of"], facts["lag_days"]) == (
            "2024-02-29",
            "2024-01-31",
            29.0,
        )
        sensor.tick()
        sensor.tick()

        run_assets(settings, instance, "2024-02", ONLINE_MONTH)
        sensor.tick()
        assert run_freshness_checks(settings, instance).passed

        tables = online_tables(settings)
        assert len(tables) == 4, tables
        with psycopg.connect(dbname=settings.postgres_db, autocommit=True, **POSTGRES) as db:
            for table in tables:
                db.execute(f'DROP TABLE "{table}"')
        evaluation = run_freshness_checks(settings, instance)
        assert not evaluation.passed
        assert "has no tables" in evaluation.metadata["reasons"].value
        sensor.tick()

    alerts = [(a["state"], a["partition"]) for a in read_jsonl(settings.alerts_path)]
    assert alerts == [("failing", "2024-02"), ("recovered", "2024-02"), ("failing", "2024-02")]
