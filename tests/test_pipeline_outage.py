"""PostgreSQL gone in the middle of a pipeline (postgres profile): the run fails naming the
connection, nothing of the month is half-written, and the re-run after recovery succeeds.

The stores (snapshots, training set, Feast's online store and registry) reach the machine's
PostgreSQL through a proxy of this test's own, which is cut while the month's features are being
written online; the shared server itself is never touched. The Dagster instance keeps its own
direct connection, so the failure is recorded as such; MLflow, not under test here, tracks to a
SQLite file (an `mlflow server` takes minutes to start on a loaded two-core machine).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import psycopg
import pytest
from dagster import DagsterInstance, DagsterRunStatus
from psycopg import sql

from streamflow.domain import months
from streamflow.domain.features import FEATURE_VIEWS
from streamflow.domain.seeds import TABLES
from streamflow.ops.dagster_home import dagster_postgres_env
from streamflow.settings import Settings
from tests.faults import Pipeline, start_pipeline, wait_until
from tests.profiles import POSTGRES, throwaway_databases
from tests.tcp_proxy import tcp_proxy

pytestmark = [pytest.mark.faults, pytest.mark.postgres, pytest.mark.slow]

USERS = 7043
JANUARY = "2024-01"
ONLINE_TABLES = [f"streamflow_{view.name}" for view in FEATURE_VIEWS]
MONTH_TABLES = [t.snapshot for t in TABLES] + ["training_dataset"]


def month_rows(db: psycopg.Connection, as_of) -> dict[str, int]:
    """Rows of the month per snapshot/training table, and users online per feature view (0 where
    the table does not exist yet)."""
    existing = {
        name
        for (name,) in db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    }
    counts = {}
    for table in MONTH_TABLES:
        query = sql.SQL("SELECT count(*) FROM {} WHERE as_of = %s").format(sql.Identifier(table))
        counts[table] = db.execute(query, (as_of,)).fetchone()[0] if table in existing else 0
    for table in ONLINE_TABLES:
        query = sql.SQL("SELECT count(DISTINCT entity_key) FROM {} WHERE event_ts = %s").format(
            sql.Identifier(table)
        )
        counts[table] = db.execute(query, (as_of,)).fetchone()[0] if table in existing else 0
    return counts


def second_view_being_written(watch: psycopg.Connection, database: str) -> bool:
    """The online write has merged its first feature view and moved on to the next one.

    With one transaction per view, the first view would be committed by now: a cut here is the
    one that would leave the month half online.
    """
    statements = [
        query
        for (query,) in watch.execute(
            "SELECT query FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )
    ]
    return any(
        f'"{table}"' in query and query.startswith(("CREATE TEMP TABLE", "INSERT INTO"))
        for query in statements
        for table in ONLINE_TABLES[1:]
    )


def test_postgres_cut_mid_online_write_fails_the_run_naming_it_and_the_rerun_succeeds(
    real_seeds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    as_of = months.as_of(JANUARY)
    with (
        throwaway_databases("", "_dagster") as (stores, dagster_db),
        tcp_proxy("127.0.0.1", POSTGRES["port"]) as proxy,
        psycopg.connect(dbname=stores, autocommit=True, **POSTGRES) as db,
    ):
        direct = Settings(postgres_db=dagster_db, postgres_port=POSTGRES["port"])
        env = dagster_postgres_env(direct, database=dagster_db) | {
            "STREAMFLOW_PROFILE": "postgres",
            "STREAMFLOW_POSTGRES_PORT": str(proxy.port),
            "STREAMFLOW_POSTGRES_DB": stores,
            "STREAMFLOW_MLFLOW_TRACKING_URI": f"sqlite:///{data_dir / 'mlflow.db'}",
        }
        args = ("--seeds", str(real_seeds), "--partitions", JANUARY)

        cut_off: Pipeline = start_pipeline(data_dir, *args, **env)
        wait_until(lambda: second_view_being_written(db, stores), cut_off, "online write")
        proxy.cut()
        cut_at = time.monotonic()
        code, stdout, stderr = cut_off.finish()
        failed_in = time.monotonic() - cut_at

        assert code == 1, stdout + stderr
        assert re.search(rf"^{JANUARY}\s+FAILED\s", stdout, re.MULTILINE), stdout
        (cause,) = [line for line in stderr.splitlines() if line.startswith(f"{JANUARY}: ")]
        assert "step online_features" in cause, stderr
        assert "OperationalError" in cause and "connection" in cause, cause
        assert failed_in < 120, f"the run took {failed_in:.0f}s to give up after the cut"
        # Ingestion had finished: the snapshots are whole; the online month is absent in every
        # view (its one transaction never committed), and so is the training set (not written).
        after_cut = month_rows(db, as_of)
        assert {after_cut[t.snapshot] for t in TABLES} == {USERS}, after_cut
        assert {after_cut[t] for t in ONLINE_TABLES} == {0}, after_cut
        assert after_cut["training_dataset"] == 0, after_cut

        proxy.restore()
        code, stdout, stderr = start_pipeline(data_dir, *args, **env).finish()
        assert code == 0, stdout + stderr
        assert re.search(rf"^{JANUARY}\s+ok\s", stdout, re.MULTILINE), stdout
        assert set(month_rows(db, as_of).values()) == {USERS}

        # The instance (read with the variables its dagster.yaml names) recorded both runs.
        for name, value in env.items():
            if name.startswith("DAGSTER_"):
                monkeypatch.setenv(name, value)
        with DagsterInstance.from_config(str(data_dir / "dagster")) as instance:
            runs = sorted(instance.get_run_records(), key=lambda r: r.create_timestamp)
            statuses = [r.dagster_run.status for r in runs]
            assert statuses == [DagsterRunStatus.FAILURE, DagsterRunStatus.SUCCESS]
