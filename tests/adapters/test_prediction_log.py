"""The prediction log's stores: a SQLite file and a real PostgreSQL table, and their outages."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo, sql

from streamflow.adapters.prediction_log import (
    LoggedPrediction,
    PostgresPredictionLog,
    PredictionLog,
    PredictionLogUnavailable,
    SqlitePredictionLog,
)
from tests.profiles import POSTGRES, throwaway_databases

NOW = datetime(2026, 12, 8, 1, 0, tzinfo=UTC)
FEBRUARY = datetime(2024, 2, 29, tzinfo=UTC)
JANUARY = datetime(2024, 1, 31, tzinfo=UTC)


def logged(user_id: str, features_as_of: datetime, served_at: datetime = NOW, **changes):
    row = LoggedPrediction(
        request_id=f"r-{user_id}",
        served_at=served_at.timestamp(),
        user_id=user_id,
        model_name="streamflow_churn",
        model_version="2",
        probability=0.25,
        prediction=0,
        features_as_of=features_as_of,
        stale=False,
    )
    return row._replace(**changes)


@pytest.fixture
def sqlite_log(tmp_path: Path) -> SqlitePredictionLog:
    return SqlitePredictionLog(tmp_path / "serving" / "predictions.sqlite")


@pytest.fixture
def postgres_dsn() -> Iterator[str]:
    with throwaway_databases("_log") as (name,):
        yield conninfo.make_conninfo(dbname=name, **POSTGRES)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> PredictionLog:
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_log")
    return PostgresPredictionLog(request.getfixturevalue("postgres_dsn"))


def test_a_month_is_read_by_the_features_as_of(store: PredictionLog) -> None:
    shadowed = logged("b", FEBRUARY, shadow_version="3", shadow_probability=0.75)
    store.write([logged("a", JANUARY), shadowed, logged("c", FEBRUARY, features='{"x":1}')])
    february = store.read(date(2024, 2, 1), date(2024, 2, 29))
    assert sorted(february["user_id"]) == ["b", "c"]
    b = february.set_index("user_id").loc["b"]
    assert (b["shadow_version"], b["shadow_probability"]) == ("3", 0.75)
    assert b["features_as_of"] == FEBRUARY and b["served_at"] == NOW
    assert february.set_index("user_id").loc["c", "features"] == '{"x":1}'
    assert list(store.read(date(2024, 1, 1), date(2024, 1, 31))["user_id"]) == ["a"]
    assert store.read(date(2024, 3, 1), date(2024, 3, 31)).empty


def test_purge_deletes_rows_served_before_the_retention(store: PredictionLog) -> None:
    old = logged("old", FEBRUARY, served_at=NOW - timedelta(days=100))
    store.write([old, logged("new", FEBRUARY)])
    assert store.purge(NOW - timedelta(days=90)) == 1
    assert list(store.read(date(2024, 2, 1), date(2024, 2, 29))["user_id"]) == ["new"]


def test_sqlite_store_unavailable_then_back(sqlite_log: SqlitePredictionLog) -> None:
    # A directory where the file should be: SQLite cannot open it, as on a lost or full disk.
    sqlite_log.path.mkdir(parents=True)
    with pytest.raises(PredictionLogUnavailable, match="predictions.sqlite"):
        sqlite_log.write([logged("a", FEBRUARY)])
    shutil.rmtree(sqlite_log.path)
    sqlite_log.write([logged("a", FEBRUARY)])
    assert len(sqlite_log.read(date(2024, 2, 1), date(2024, 2, 29))) == 1


@pytest.mark.postgres
def test_postgres_store_unavailable_then_back(postgres_dsn: str) -> None:
    """The table's database dropped under a writer that holds a connection: the write fails as
    unavailable, and succeeds on the same object once the database is back."""
    store = PostgresPredictionLog(postgres_dsn)
    store.write([logged("a", FEBRUARY)])
    name = conninfo.conninfo_to_dict(postgres_dsn)["dbname"]
    with psycopg.connect(dbname="postgres", autocommit=True, **POSTGRES) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        with pytest.raises(PredictionLogUnavailable):
            store.write([logged("b", FEBRUARY)])
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    store.write([logged("b", FEBRUARY)])
    assert list(store.read(date(2024, 2, 1), date(2024, 2, 29))["user_id"]) == ["b"]
