"""Snapshot stores: exact round trips, and a month is replaced whole or not at all."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg import conninfo

from streamflow.adapters import snapshots
from streamflow.adapters.snapshots import (
    AS_OF,
    ParquetSnapshotStore,
    PostgresSnapshotStore,
    with_as_of,
)
from streamflow.domain import months
from streamflow.domain.seeds import read_month
from tests.profiles import POSTGRES, throwaway_databases

JANUARY = months.as_of("2024-01")
FEBRUARY = months.as_of("2024-02")
MARCH = months.as_of("2024-03")


def month_frames(version: int = 0) -> dict[str, pd.DataFrame]:
    """Six small tables with every stored dtype; `version` changes values (not shapes)."""
    ids = ["a", "b", "c"]
    return {
        "users_snapshots": pd.DataFrame(
            {
                "user_id": ids,
                "signup_date": [date(2022, 1, 1), date(2023, 2, 28), date(2024, 2, 29)],
                "user_gender": ["Female", "Male", "Female"],
                "user_is_senior": [True, False, version % 2 == 0],
            }
        ),
        "subscriptions_profile_snapshots": pd.DataFrame(
            {
                "user_id": ids,
                "months_active": pd.Series([1, 72, 3 + version], dtype="int64"),
                "plan_stream_tv": pd.array([True, None, False], dtype="boolean"),
                "plan_stream_movies": pd.array([None, None, True], dtype="boolean"),
                "monthly_fee": [29.85, 18.95, 0.1 + version],
                "net_service": ["DSL", "No", "Fiber optic"],
            }
        ),
        "usage_agg_30d_snapshots": pd.DataFrame(
            {"user_id": ids, "watch_hours_30d": [24.483650766787413, 0.0, 1e-9 * (version + 1)]}
        ),
        "payments_agg_90d_snapshots": pd.DataFrame(
            {"user_id": ids, "failed_payments_90d": pd.Series([0, 1, version], dtype="int64")}
        ),
        "support_agg_90d_snapshots": pd.DataFrame(
            {"user_id": ids, "support_tickets_90d": pd.Series([version, 0, 5], dtype="int64")}
        ),
        "labels_snapshots": pd.DataFrame({"user_id": ids, "churn_label": [False, True, False]}),
    }


def files(root: Path) -> dict[str, bytes]:
    """Every file under the store, hidden temporaries included, with its bytes."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def assert_month_equals(store: ParquetSnapshotStore, as_of: datetime, frames: dict) -> None:
    for table, df in frames.items():
        pd.testing.assert_frame_equal(store.read(table, as_of), with_as_of(df, as_of))


@pytest.fixture
def store(tmp_path: Path) -> ParquetSnapshotStore:
    return ParquetSnapshotStore(tmp_path / "snapshots")


def test_round_trip_adds_as_of_and_keeps_every_dtype(store: ParquetSnapshotStore) -> None:
    frames = month_frames()
    store.write_month(FEBRUARY, frames)
    for table, df in frames.items():
        stored = store.read(table, FEBRUARY)
        assert list(stored.columns) == ["user_id", AS_OF, *df.columns[1:]]
        assert (stored[AS_OF] == pd.Timestamp("2024-02-29", tz="UTC")).all()
        assert str(stored[AS_OF].dt.tz) == "UTC"
        pd.testing.assert_frame_equal(stored.drop(columns=AS_OF), df, check_exact=True)
    subscriptions = store.read("subscriptions_profile_snapshots", FEBRUARY)
    assert str(subscriptions["plan_stream_tv"].dtype) == "boolean"
    assert subscriptions["plan_stream_tv"].isna().tolist() == [False, True, False]
    assert subscriptions["plan_stream_movies"].isna().sum() == 2


def test_round_trip_of_a_real_month_slice(copy_seeds: Callable[..., Path], tmp_path) -> None:
    frames = read_month(copy_seeds("month_001", rows=200) / "month_001")
    store = ParquetSnapshotStore(tmp_path / "snapshots")
    store.write_month(FEBRUARY, frames)
    assert_month_equals(store, FEBRUARY, frames)


def test_writing_leaves_the_callers_frames_alone(store: ParquetSnapshotStore) -> None:
    frames = month_frames()
    store.write_month(JANUARY, frames)
    for table, df in month_frames().items():
        pd.testing.assert_frame_equal(frames[table], df)


def test_writing_the_same_month_twice_changes_nothing(store: ParquetSnapshotStore) -> None:
    store.write_month(JANUARY, month_frames())
    first = files(store.root)
    store.write_month(JANUARY, month_frames())
    assert files(store.root).keys() == first.keys()
    assert_month_equals(store, JANUARY, month_frames())


def test_rewriting_a_month_replaces_it_and_leaves_other_months_untouched(
    store: ParquetSnapshotStore,
) -> None:
    store.write_month(JANUARY, month_frames(0))
    store.write_month(FEBRUARY, month_frames(1))
    store.write_month(MARCH, month_frames(2))
    before = files(store.root)
    store.write_month(FEBRUARY, month_frames(7))
    after = files(store.root)
    assert after.keys() == before.keys()
    changed = {name for name in after if after[name] != before[name]}
    assert changed and all("2024-02-29" in name for name in changed)
    assert_month_equals(store, FEBRUARY, month_frames(7))
    assert_month_equals(store, JANUARY, month_frames(0))
    assert_month_equals(store, MARCH, month_frames(2))


def test_a_commit_failure_leaves_every_partition_as_it_was(
    store: ParquetSnapshotStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.write_month(JANUARY, month_frames(0))
    store.write_month(FEBRUARY, month_frames(1))
    before = files(store.root)
    staged_files: list[str] = []

    def fail_after_staging(staged: list[tuple[Path, Path]]) -> None:
        staged_files.extend(str(temp) for temp, _ in staged if temp.is_file())
        raise OSError("injected: the disk failed before the first rename")

    monkeypatch.setattr(store, "_commit", fail_after_staging)
    with pytest.raises(OSError, match="injected"):
        store.write_month(JANUARY, month_frames(5))
    assert len(staged_files) == 6, "every table was staged before the failure"
    assert files(store.root) == before, "no partition changed and no temporary file is left"
    assert_month_equals(store, JANUARY, month_frames(0))
    assert_month_equals(store, FEBRUARY, month_frames(1))


@pytest.mark.parametrize("month_existed", [True, False], ids=["rewrite", "new-month"])
def test_a_failure_halfway_through_the_renames_leaves_the_month_as_it_was(
    store: ParquetSnapshotStore, monkeypatch: pytest.MonkeyPatch, month_existed: bool
) -> None:
    store.write_month(JANUARY, month_frames(0))
    if month_existed:
        store.write_month(FEBRUARY, month_frames(1))
    before = files(store.root)
    replace = snapshots.os.replace
    renamed: list[str] = []

    def third_rename_fails(source, target) -> None:
        # Only the renames of staged files into place count; anything else goes through.
        if str(source).endswith(".tmp"):
            if len(renamed) == 2:
                raise OSError("injected: the disk failed at the third rename")
            renamed.append(str(target))
        replace(source, target)

    monkeypatch.setattr(snapshots.os, "replace", third_rename_fails)
    with pytest.raises(OSError, match="injected"):
        store.write_month(FEBRUARY, month_frames(5))
    monkeypatch.undo()
    assert len(renamed) == 2, "two tables were in place when the failure came"
    assert files(store.root) == before, "every partition as before, no temporary or backup left"
    assert_month_equals(store, JANUARY, month_frames(0))
    if month_existed:
        assert_month_equals(store, FEBRUARY, month_frames(1))
    else:
        assert all(store.row_count(table, FEBRUARY) is None for table in month_frames())


def test_a_staging_failure_on_the_third_table_leaves_everything_unchanged(
    store: ParquetSnapshotStore,
) -> None:
    store.write_month(JANUARY, month_frames(0))
    before = files(store.root)
    broken = month_frames(3)
    # A column pyarrow cannot convert: numbers and text mixed in one object column.
    broken["usage_agg_30d_snapshots"]["watch_hours_30d"] = pd.Series([1.0, "many", 2.0])
    assert list(broken).index("usage_agg_30d_snapshots") == 2
    with pytest.raises(pa.ArrowException):
        store.write_month(JANUARY, broken)
    assert files(store.root) == before
    assert_month_equals(store, JANUARY, month_frames(0))


def test_a_staging_failure_in_a_new_month_writes_nothing(store: ParquetSnapshotStore) -> None:
    store.write_month(JANUARY, month_frames(0))
    before = files(store.root)
    broken = month_frames(1)
    broken["usage_agg_30d_snapshots"]["watch_hours_30d"] = pd.Series([1.0, "many", 2.0])
    with pytest.raises(pa.ArrowException):
        store.write_month(FEBRUARY, broken)
    assert files(store.root) == before
    for table in broken:
        assert store.as_ofs(table) == [JANUARY]
        assert store.row_count(table, FEBRUARY) is None


def test_row_count(store: ParquetSnapshotStore) -> None:
    frames = month_frames()
    frames["labels_snapshots"] = frames["labels_snapshots"].head(2)
    store.write_month(JANUARY, frames)
    assert store.row_count("users_snapshots", JANUARY) == 3
    assert store.row_count("labels_snapshots", JANUARY) == 2
    assert store.row_count("users_snapshots", FEBRUARY) is None
    assert store.row_count("no_such_table", JANUARY) is None


def test_as_ofs_oldest_first_ignoring_temporaries(store: ParquetSnapshotStore) -> None:
    for as_of in (MARCH, JANUARY, FEBRUARY):
        store.write_month(as_of, {"labels_snapshots": month_frames()["labels_snapshots"]})
    folder = store.root / "labels_snapshots"
    (folder / ".2024-04-30.parquet.0123abcd.tmp").write_bytes(b"half written")
    assert store.as_ofs("labels_snapshots") == [JANUARY, FEBRUARY, MARCH]
    assert all(
        moment.tzinfo is not None and moment.utcoffset().total_seconds() == 0
        for moment in store.as_ofs("labels_snapshots")
    )
    assert store.as_ofs("users_snapshots") == []
    assert store.as_ofs("labels_snapshots")[0] == datetime(2024, 1, 31, tzinfo=UTC)


def test_writing_one_table_leaves_the_other_tables_of_the_month(
    store: ParquetSnapshotStore,
) -> None:
    store.write_month(JANUARY, month_frames(0))
    store.write_month(JANUARY, {"labels_snapshots": month_frames(1)["labels_snapshots"].head(1)})
    assert store.row_count("labels_snapshots", JANUARY) == 1
    assert_month_equals(
        store,
        JANUARY,
        {t: df for t, df in month_frames(0).items() if t != "labels_snapshots"},
    )


def test_reading_a_missing_partition_names_table_and_date(store: ParquetSnapshotStore) -> None:
    store.write_month(JANUARY, month_frames())
    with pytest.raises(KeyError, match="users_snapshots") as raised:
        store.read("users_snapshots", FEBRUARY)
    assert "2024-02-29" in str(raised.value)


def test_a_stream_of_tables_that_fails_midway_writes_nothing(store: ParquetSnapshotStore) -> None:
    store.write_month(JANUARY, month_frames(0))
    before = files(store.root)

    def tables():
        frames = month_frames(4)
        yield "users_snapshots", frames["users_snapshots"]
        yield "labels_snapshots", frames["labels_snapshots"]
        raise ValueError("the third table is invalid")

    with pytest.raises(ValueError, match="third table"):
        store.write_month(JANUARY, tables())
    assert files(store.root) == before
    assert_month_equals(store, JANUARY, month_frames(0))


def in_chunks(df: pd.DataFrame, rows: int) -> Iterator[pd.DataFrame]:
    """A table handed over as a generator of chunks, as a step that never holds it whole does."""
    for start in range(0, len(df), rows):
        yield df.iloc[start : start + rows].reset_index(drop=True)


def test_a_table_given_in_chunks_reads_back_as_the_whole(store: ParquetSnapshotStore) -> None:
    frames = month_frames()
    store.write_month(FEBRUARY, {table: in_chunks(df, 2) for table, df in frames.items()})
    assert_month_equals(store, FEBRUARY, frames)
    path = store.path("subscriptions_profile_snapshots", FEBRUARY)
    assert pq.ParquetFile(path).num_row_groups == 2


def test_a_chunk_that_does_not_fit_the_first_fails_and_writes_nothing(
    store: ParquetSnapshotStore,
) -> None:
    store.write_month(JANUARY, month_frames(0))
    before = files(store.root)
    scores = pd.DataFrame({"user_id": ["a"], "probability": [0.5]})
    broken = pd.DataFrame({"user_id": ["b"], "probability": ["high"]})
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError), match="probability|float|double"):
        store.write_month(JANUARY, {"batch_scores": iter([scores, broken])})
    assert files(store.root) == before


def mismatch_case(store) -> dict[str, int]:
    """A copy of the month's subscriptions with one fee changed and one empty flag filled, and
    a user the month lacks: counted per column, the extra user not compared."""
    frames = month_frames()
    store.write_month(FEBRUARY, frames)
    copy = frames["subscriptions_profile_snapshots"].copy()
    copy.loc[1, "monthly_fee"] += 1.0
    copy["plan_stream_movies"] = pd.array([None, True, True], dtype="boolean")
    extra = copy.iloc[[0]].assign(user_id="z", monthly_fee=-1.0)
    store.write_month(FEBRUARY, {"copy": pd.concat([copy, extra], ignore_index=True)})
    columns = ["months_active", "plan_stream_tv", "plan_stream_movies", "monthly_fee"]
    return store.mismatches("copy", {"subscriptions_profile_snapshots": columns}, FEBRUARY)


def test_mismatches_are_counted_per_column_by_the_engine(store: ParquetSnapshotStore) -> None:
    assert mismatch_case(store) == {"plan_stream_movies": 1, "monthly_fee": 1}


# PostgreSQL: the same round trips through a real server, rows streamed in bounded chunks.


@pytest.fixture
def pg_store() -> Iterator[PostgresSnapshotStore]:
    """A store in a throwaway database whose sessions speak +05:30: timestamps come back in
    UTC whatever the server's time zone."""
    with throwaway_databases("") as (name,):
        dsn = conninfo.make_conninfo(dbname=name, **POSTGRES)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE \"{name}\" SET TimeZone = 'Asia/Kolkata'")
        yield PostgresSnapshotStore(dsn)


def by_user(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("user_id", ignore_index=True)


def pg_rows(store: PostgresSnapshotStore, query: str) -> list[tuple]:
    with psycopg.connect(store.dsn) as conn:
        return conn.execute(query).fetchall()


@pytest.mark.postgres
def test_postgres_round_trip_keeps_every_dtype_and_value(pg_store: PostgresSnapshotStore) -> None:
    frames = month_frames()
    # NULL and empty text are different values, and so are the nullable integers' gaps.
    frames["users_snapshots"]["user_gender"] = ["", None, "Male"]
    frames["payments_agg_90d_snapshots"]["failed_payments_90d"] = pd.array(
        [None, 1, 2], dtype="Int64"
    )
    pg_store.write_month(FEBRUARY, frames)
    for table, df in frames.items():
        pd.testing.assert_frame_equal(
            pg_store.read(table, FEBRUARY), with_as_of(df, FEBRUARY), check_exact=True
        )
    assert pg_store.read("users_snapshots", FEBRUARY)["user_gender"].tolist() == ["", None, "Male"]


@pytest.mark.postgres
def test_postgres_round_trip_of_a_real_month_slice_and_exact_floats(
    pg_store: PostgresSnapshotStore, copy_seeds: Callable[..., Path]
) -> None:
    frames = read_month(copy_seeds("month_001", rows=300) / "month_001")
    rng = np.random.default_rng(7)
    usage = frames["usage_agg_30d_snapshots"]
    # Floats over the whole exponent range, each to the last bit.
    usage["watch_hours_30d"] = rng.standard_normal(len(usage)) * 10.0 ** rng.integers(
        -300, 300, len(usage)
    )
    pg_store.write_month(FEBRUARY, frames)
    for table, df in frames.items():
        # Postgres reads in user_id order.
        pd.testing.assert_frame_equal(
            by_user(pg_store.read(table, FEBRUARY)),
            by_user(with_as_of(df, FEBRUARY)),
            check_exact=True,
        )


@pytest.mark.postgres
def test_postgres_writes_a_table_in_bounded_copy_chunks(
    pg_store: PostgresSnapshotStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots, "COPY_CHUNK_ROWS", 25_000)
    sent: list[int] = []
    write = psycopg.Copy.write

    def counting_write(copy, buffer) -> None:
        sent.append(bytes(buffer).count(b"\n"))
        write(copy, buffer)

    monkeypatch.setattr(psycopg.Copy, "write", counting_write)
    # Over a megabyte of CSV: the read, too, takes it in several pieces.
    ids = [f"user-{i:06d}" for i in range(60_000)]
    rows = pd.DataFrame({"user_id": ids, "failed_payments_90d": np.arange(60_000, dtype=np.int64)})
    pg_store.write_month(JANUARY, {"payments_agg_90d_snapshots": rows})
    assert sent == [25_000, 25_000, 10_000]
    monkeypatch.undo()
    pd.testing.assert_frame_equal(
        pg_store.read("payments_agg_90d_snapshots", JANUARY), with_as_of(rows, JANUARY)
    )


@pytest.mark.postgres
def test_postgres_a_table_given_in_chunks_reads_back_as_the_whole(
    pg_store: PostgresSnapshotStore,
) -> None:
    frames = month_frames()
    pg_store.write_month(FEBRUARY, {table: in_chunks(df, 2) for table, df in frames.items()})
    for table, df in frames.items():
        stored = by_user(pg_store.read(table, FEBRUARY))
        pd.testing.assert_frame_equal(stored, with_as_of(df, FEBRUARY), check_exact=True)


@pytest.mark.postgres
def test_postgres_mismatches_are_counted_per_column_by_the_engine(
    pg_store: PostgresSnapshotStore,
) -> None:
    assert mismatch_case(pg_store) == {"plan_stream_movies": 1, "monthly_fee": 1}


@pytest.mark.postgres
def test_postgres_rewriting_a_month_replaces_it_and_leaves_other_months(
    pg_store: PostgresSnapshotStore,
) -> None:
    pg_store.write_month(JANUARY, month_frames(0))
    pg_store.write_month(FEBRUARY, month_frames(1))
    pg_store.write_month(FEBRUARY, month_frames(7))
    for table in month_frames():
        assert pg_store.as_ofs(table) == [JANUARY, FEBRUARY]
        for as_of, version in ((JANUARY, 0), (FEBRUARY, 7)):
            expected = with_as_of(month_frames(version)[table], as_of)
            pd.testing.assert_frame_equal(pg_store.read(table, as_of), expected)


def partitions(store: PostgresSnapshotStore, table: str) -> list[tuple[str, str]]:
    """(partition, bound) of `table`, by name."""
    return pg_rows(
        store,
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        f"JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = '{table}'::regclass "
        "ORDER BY 1",
    )


@pytest.mark.postgres
def test_postgres_keeps_a_partition_per_month_and_a_rewrite_leaves_no_dead_rows(
    pg_store: PostgresSnapshotStore,
) -> None:
    """A month is its own partition: rewriting it swaps in a new one instead of deleting rows,
    so the table does not grow with re-runs."""
    pg_store.write_month(JANUARY, month_frames(0))
    pg_store.write_month(FEBRUARY, month_frames(1))
    assert [name for name, _ in partitions(pg_store, "usage_agg_30d_snapshots")] == [
        "usage_agg_30d_snapshots_20240131",
        "usage_agg_30d_snapshots_20240229",
    ]
    pg_store.write_month(FEBRUARY, month_frames(7))
    assert len(partitions(pg_store, "usage_agg_30d_snapshots")) == 2
    assert pg_rows(
        pg_store,
        "SELECT sum(n_dead_tup) FROM pg_stat_user_tables WHERE relname LIKE 'usage_agg_30d%'",
    ) == [(0,)]
    expected = with_as_of(month_frames(7)["usage_agg_30d_snapshots"], FEBRUARY)
    pd.testing.assert_frame_equal(pg_store.read("usage_agg_30d_snapshots", FEBRUARY), expected)


@pytest.mark.postgres
def test_postgres_a_table_from_before_partitions_keeps_its_months_as_the_default_partition(
    pg_store: PostgresSnapshotStore,
) -> None:
    """A table an earlier version wrote (every month in one table) keeps its rows: it becomes
    the default partition, and a month rewritten moves out of it into a partition of its own."""
    frames = month_frames(0)
    with psycopg.connect(pg_store.dsn) as conn:
        conn.execute(
            "CREATE TABLE usage_agg_30d_snapshots (user_id text NOT NULL, as_of timestamptz "
            "NOT NULL, watch_hours_30d double precision, PRIMARY KEY (user_id, as_of))"
        )
        for as_of in (JANUARY, FEBRUARY):
            rows = with_as_of(frames["usage_agg_30d_snapshots"], as_of)
            with conn.cursor().copy(
                snapshots.copy_from_csv("usage_agg_30d_snapshots", list(rows.columns))
            ) as copy:
                copy.write(snapshots.copy_csv(rows))
    pg_store.write_month(FEBRUARY, month_frames(7))
    (february, bound), legacy = partitions(pg_store, "usage_agg_30d_snapshots")
    assert (february, legacy) == (
        "usage_agg_30d_snapshots_20240229",
        ("usage_agg_30d_snapshots_before_partitions", "DEFAULT"),
    )
    assert bound.startswith("FOR VALUES IN")
    assert pg_store.as_ofs("usage_agg_30d_snapshots") == [JANUARY, FEBRUARY]
    for as_of, version in ((JANUARY, 0), (FEBRUARY, 7)):
        expected = with_as_of(month_frames(version)["usage_agg_30d_snapshots"], as_of)
        pd.testing.assert_frame_equal(pg_store.read("usage_agg_30d_snapshots", as_of), expected)


@pytest.mark.postgres
def test_postgres_a_stream_of_tables_that_fails_midway_writes_nothing(
    pg_store: PostgresSnapshotStore,
) -> None:
    pg_store.write_month(JANUARY, month_frames(0))

    def tables():
        frames = month_frames(4)
        yield "users_snapshots", frames["users_snapshots"]
        yield "labels_snapshots", frames["labels_snapshots"]
        raise ValueError("the third table is invalid")

    with pytest.raises(ValueError, match="third table"):
        pg_store.write_month(JANUARY, tables())
    for table, df in month_frames(0).items():
        pd.testing.assert_frame_equal(pg_store.read(table, JANUARY), with_as_of(df, JANUARY))


@pytest.mark.postgres
def test_postgres_refuses_a_table_whose_columns_would_change_the_rows(
    pg_store: PostgresSnapshotStore,
) -> None:
    """A table made elsewhere (an older schema) would coerce the rows: the month is refused,
    naming the table and both column lists, and nothing of it is written."""
    pg_store.write_month(JANUARY, month_frames(0))
    with psycopg.connect(pg_store.dsn) as conn:
        conn.execute(
            "ALTER TABLE payments_agg_90d_snapshots "
            "ALTER COLUMN failed_payments_90d TYPE double precision"
        )
    with pytest.raises(TypeError, match="payments_agg_90d_snapshots") as raised:
        pg_store.write_month(FEBRUARY, month_frames(1))
    assert "failed_payments_90d double precision" in str(raised.value)
    assert "failed_payments_90d bigint NOT NULL" in str(raised.value)
    for table in month_frames():
        assert pg_store.as_ofs(table) == [JANUARY]
    assert pg_rows(pg_store, "SELECT count(*) FROM users_snapshots") == [(3,)]


@pytest.mark.postgres
def test_postgres_reading_a_missing_partition_names_table_and_date(
    pg_store: PostgresSnapshotStore,
) -> None:
    pg_store.write_month(JANUARY, month_frames())
    for table in ("users_snapshots", "no_such_table"):
        with pytest.raises(KeyError, match=table) as raised:
            pg_store.read(table, FEBRUARY)
        assert "2024-02-29" in str(raised.value)
    assert pg_store.row_count("users_snapshots", JANUARY) == 3
    assert pg_store.row_count("users_snapshots", FEBRUARY) is None
