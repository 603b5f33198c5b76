"""The prediction log: every answer the API gave, stored where the profile keeps its data.

Local profile: one SQLite file under the data dir (WAL, so the monitoring assets read it while the
API writes). Postgres and cluster profiles: a `prediction_log` table in the profile's database.
The API appends batches from one background thread; readers take a month by the features' as_of.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import NamedTuple, Protocol

import pandas as pd
import psycopg
from psycopg import conninfo

from streamflow.settings import Settings

TABLE = "prediction_log"


class LoggedPrediction(NamedTuple):
    """One answered prediction (a batch request gives one per user, under one request id)."""

    request_id: str
    # Unix time (seconds): what the API takes per request at no cost; stored as the store's time.
    served_at: float
    user_id: str
    model_name: str
    model_version: str
    probability: float
    prediction: int
    features_as_of: datetime | None
    stale: bool
    # The shadow challenger's answer on the same features, when this request was sampled.
    shadow_version: str | None = None
    shadow_probability: float | None = None
    # The features as JSON, when the setting keeps them.
    features: str | None = None


COLUMNS = LoggedPrediction._fields


class PredictionLogUnavailable(Exception):
    """The store could not be reached or written: the batch is intact and can be written again."""


class PredictionLog(Protocol):
    def write(self, rows: Sequence[LoggedPrediction]) -> None:
        """Append rows in one transaction; PredictionLogUnavailable when the store is down."""

    def read(self, first_day: date, last_day: date) -> pd.DataFrame:
        """The rows whose features' as_of falls within the days (inclusive), in COLUMNS."""

    def purge(self, before: datetime) -> int:
        """Delete the rows served before `before`; how many."""


def encode_features(features: dict[str, object]) -> str:
    return json.dumps(features, separators=(",", ":"))


def _frame(records: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records, columns=list(COLUMNS))
    return frame.astype({"stale": bool, "prediction": "int64", "probability": "float64"})


class SqlitePredictionLog:
    """A SQLite file: `served_at` as Unix seconds, `features_as_of` as ISO-8601 UTC text (which
    sorts as the times do). No index on `features_as_of`: a month is read once a month, and every
    index costs each of the thousands of inserts a second."""

    _SCHEMA = f"""
        CREATE TABLE IF NOT EXISTS {TABLE} (
            request_id TEXT NOT NULL, served_at REAL NOT NULL, user_id TEXT NOT NULL,
            model_name TEXT NOT NULL, model_version TEXT NOT NULL, probability REAL NOT NULL,
            prediction INTEGER NOT NULL, features_as_of TEXT, stale INTEGER NOT NULL,
            shadow_version TEXT, shadow_probability REAL, features TEXT
        );
        CREATE INDEX IF NOT EXISTS {TABLE}_served_at ON {TABLE} (served_at);
    """

    def __init__(self, path: Path):
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=5)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(self._SCHEMA)
        except (sqlite3.Error, OSError) as error:
            raise PredictionLogUnavailable(f"prediction log {self.path}: {error}") from error
        return conn

    def write(self, rows: Sequence[LoggedPrediction]) -> None:
        placeholders = ", ".join("?" * len(COLUMNS))
        # A month's answers share a few feature times: each is formatted once.
        as_of_text = {t: t and t.isoformat() for t in {row.features_as_of for row in rows}}
        values = [(*row[:7], as_of_text[row.features_as_of], *row[8:]) for row in rows]
        conn = self._connect()
        try:
            with conn:
                conn.executemany(f"INSERT INTO {TABLE} VALUES ({placeholders})", values)
        except (sqlite3.OperationalError, OSError) as error:
            raise PredictionLogUnavailable(f"prediction log {self.path}: {error}") from error
        finally:
            conn.close()

    def read(self, first_day: date, last_day: date) -> pd.DataFrame:
        if not self.path.exists():
            return _frame([])
        conn = self._connect()
        try:
            records = conn.execute(
                f"SELECT {', '.join(COLUMNS)} FROM {TABLE} "
                "WHERE features_as_of >= ? AND features_as_of < date(?, '+1 day')",
                (first_day.isoformat(), last_day.isoformat()),
            ).fetchall()
        finally:
            conn.close()
        frame = _frame(records)
        frame["served_at"] = pd.to_datetime(frame["served_at"], unit="s", utc=True)
        as_of = frame["features_as_of"]
        frame["features_as_of"] = pd.to_datetime(as_of, utc=True, format="ISO8601")
        return frame

    def purge(self, before: datetime) -> int:
        conn = self._connect()
        try:
            with conn:
                cursor = conn.execute(
                    f"DELETE FROM {TABLE} WHERE served_at < ?",
                    (before.timestamp(),),
                )
            return cursor.rowcount
        except (sqlite3.OperationalError, OSError) as error:
            raise PredictionLogUnavailable(f"prediction log {self.path}: {error}") from error
        finally:
            conn.close()


class PostgresPredictionLog:
    """A table in the profile's PostgreSQL database, appended with COPY."""

    _SCHEMA = f"""
        CREATE TABLE IF NOT EXISTS {TABLE} (
            request_id text NOT NULL, served_at timestamptz NOT NULL, user_id text NOT NULL,
            model_name text NOT NULL, model_version text NOT NULL,
            probability double precision NOT NULL, prediction smallint NOT NULL,
            features_as_of timestamptz, stale boolean NOT NULL,
            shadow_version text, shadow_probability double precision, features jsonb
        );
        CREATE INDEX IF NOT EXISTS {TABLE}_features_as_of ON {TABLE} (features_as_of);
        CREATE INDEX IF NOT EXISTS {TABLE}_served_at ON {TABLE} (served_at);
    """

    def __init__(self, dsn: str, connect_timeout_seconds: int = 3):
        self.dsn = dsn
        self.connect_timeout_seconds = connect_timeout_seconds
        self._conn: psycopg.Connection | None = None
        self._schema_ready = False

    def _connection(self) -> psycopg.Connection:
        # One connection kept by the one writer thread, opened again after an outage.
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, connect_timeout=self.connect_timeout_seconds)
        if not self._schema_ready:
            with self._conn.transaction():
                self._conn.execute(self._SCHEMA)
            self._schema_ready = True
        return self._conn

    def _discard(self) -> None:
        # After an outage the table may be gone with its database: check it again on reconnect.
        if self._conn is not None:
            self._conn.close()
        self._conn, self._schema_ready = None, False

    def write(self, rows: Sequence[LoggedPrediction]) -> None:
        try:
            conn = self._connection()
            copy_sql = f"COPY {TABLE} ({', '.join(COLUMNS)}) FROM STDIN"
            with conn.transaction(), conn.cursor() as cursor, cursor.copy(copy_sql) as copy:
                for row in rows:
                    copy.write_row(row._replace(served_at=datetime.fromtimestamp(row[1], UTC)))
        except psycopg.OperationalError as error:
            self._discard()
            raise PredictionLogUnavailable(f"prediction log table {TABLE}: {error}") from error

    def read(self, first_day: date, last_day: date) -> pd.DataFrame:
        with psycopg.connect(self.dsn, connect_timeout=self.connect_timeout_seconds) as conn:
            exists = conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()[0]
            if exists is None:
                return _frame([])
            records = conn.execute(
                f"SELECT {', '.join(COLUMNS)} FROM {TABLE} "
                "WHERE features_as_of >= %s AND features_as_of < %s::date + 1",
                (first_day, last_day),
            ).fetchall()
        frame = _frame([tuple(r) for r in records])
        frame["features"] = frame["features"].map(
            lambda value: None if value is None else encode_features(value)
        )
        return frame

    def purge(self, before: datetime) -> int:
        try:
            conn = self._connection()
            with conn.transaction():
                return conn.execute(f"DELETE FROM {TABLE} WHERE served_at < %s", (before,)).rowcount
        except psycopg.OperationalError as error:
            self._discard()
            raise PredictionLogUnavailable(f"prediction log table {TABLE}: {error}") from error


def postgres_dsn(settings: Settings) -> str:
    return conninfo.make_conninfo(
        host=settings.postgres_host,
        port=settings.postgres_port,
        user=settings.postgres_user,
        password=settings.postgres_password.get_secret_value(),
        dbname=settings.postgres_db,
    )


def sqlite_log_path(settings: Settings) -> Path:
    return settings.data_dir / "serving" / "predictions.sqlite"


def open_prediction_log(settings: Settings) -> PredictionLog:
    """The profile's log: PostgreSQL for postgres and cluster, a SQLite file for local."""
    if settings.uses_postgres:
        return PostgresPredictionLog(postgres_dsn(settings))
    return SqlitePredictionLog(sqlite_log_path(settings))
