"""The seed data contract: six CSVs per month, parsed strictly and validated with named errors."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from streamflow.domain.features import user_id_hashes

USER_ID_PATTERN = r"[A-Za-z0-9_-]{1,64}"
MAX_EXAMPLES = 5


class Kind(Enum):
    ID = "user id"
    DATE = "date (YYYY-MM-DD)"
    BOOL = "boolean (True/False)"
    NULLABLE_BOOL = "boolean (True/False, or empty)"
    INT = "integer"
    FLOAT = "number"
    CATEGORY = "category"


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    categories: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class SeedTable:
    """One CSV of a month folder and the snapshot table it becomes."""

    file: str
    snapshot: str
    columns: tuple[Column, ...]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def _id() -> Column:
    return Column("user_id", Kind.ID)


def _count(name: str, max: float | None = None) -> Column:
    return Column(name, Kind.INT, min=0, max=max)


def _amount(name: str) -> Column:
    return Column(name, Kind.FLOAT, min=0)


STREAM_FLAGS = ("plan_stream_tv", "plan_stream_movies")

TABLES: tuple[SeedTable, ...] = (
    SeedTable(
        "users.csv",
        "users_snapshots",
        (
            _id(),
            Column("signup_date", Kind.DATE),
            Column("user_gender", Kind.CATEGORY, ("Female", "Male")),
            Column("user_is_senior", Kind.BOOL),
            Column("has_family", Kind.BOOL),
            Column("has_dependents", Kind.BOOL),
        ),
    ),
    SeedTable(
        "subscriptions.csv",
        "subscriptions_profile_snapshots",
        (
            _id(),
            _count("months_active", max=100),
            Column("plan_stream_tv", Kind.NULLABLE_BOOL),
            Column("plan_stream_movies", Kind.NULLABLE_BOOL),
            Column("contract_type", Kind.CATEGORY, ("Month-to-month", "One year", "Two year")),
            Column("paperless_billing", Kind.BOOL),
            _amount("monthly_fee"),
            _amount("total_paid"),
            Column("net_service", Kind.CATEGORY, ("DSL", "Fiber optic", "No")),
        ),
    ),
    SeedTable(
        "usage_agg_30d.csv",
        "usage_agg_30d_snapshots",
        (
            _id(),
            _amount("watch_hours_30d"),
            _amount("avg_session_mins_7d"),
            _count("unique_devices_30d"),
            _count("skips_7d"),
            _count("rebuffer_events_7d"),
        ),
    ),
    SeedTable(
        "payments_agg_90d.csv",
        "payments_agg_90d_snapshots",
        (_id(), _count("failed_payments_90d")),
    ),
    SeedTable(
        "support_agg_90d.csv",
        "support_agg_90d_snapshots",
        (_id(), _count("support_tickets_90d"), _amount("ticket_avg_resolution_hrs_90d")),
    ),
    SeedTable("labels.csv", "labels_snapshots", (_id(), Column("churn_label", Kind.BOOL))),
)
TABLES_BY_SNAPSHOT: dict[str, SeedTable] = {t.snapshot: t for t in TABLES}
USERS = TABLES[0]


@dataclass(frozen=True)
class Problem:
    """One broken rule, with the file, the column and a few offending rows."""

    file: str
    column: str | None
    message: str
    examples: tuple[str, ...] = field(default=())

    def __str__(self) -> str:
        where = f"{self.file}, column {self.column}" if self.column else self.file
        shown = f" (e.g. {'; '.join(self.examples)})" if self.examples else ""
        return f"{where}: {self.message}{shown}"


class SeedError(ValueError):
    """A month's seeds break the data contract; nothing of that month is written."""

    def __init__(self, folder: Path, problems: list[Problem]):
        self.folder = folder
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid seeds in {folder}:\n{lines}")


def _examples(df: pd.DataFrame, mask: pd.Series, column: str) -> tuple[str, ...]:
    # CSV line numbers: header is line 1, the first row line 2.
    rows = df.loc[mask.to_numpy()].head(MAX_EXAMPLES)
    ids = rows["user_id"] if "user_id" in rows else pd.Series("?", index=rows.index)
    return tuple(
        f"line {index + 2} user_id={uid!r} {column}={value!r}"
        for index, uid, value in zip(rows.index, ids, rows[column], strict=True)
    )


# Column-wide tests in pyarrow's C++ kernels: pandas' str.fullmatch and object isin call Python per
# row, which made them most of a million-user month's ingestion time.
def _fullmatch(text: pd.Series, pattern: str) -> pd.Series:
    """Whether each value matches `pattern` whole (RE2: `$` is the end of the text, no newline)."""
    matched = pc.match_substring_regex(_arrow_text(text), f"^(?:{pattern})$")
    return pd.Series(matched.to_numpy(zero_copy_only=False), index=text.index)


def _isin(values: pd.Series, allowed) -> pd.Series:
    """Whether each value is one of the texts `allowed`; a missing value never is."""
    try:
        arrow = pa.array(values.to_numpy(dtype=object, na_value=None), type=pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Not all text (a stored snapshot written by something else): pandas compares any type.
        return values.isin(list(allowed))
    found = pc.is_in(arrow, value_set=pa.array(list(allowed), type=pa.string()))
    return pd.Series(found.fill_null(False).to_numpy(zero_copy_only=False), index=values.index)


def _arrow_text(text: pd.Series) -> pa.Array:
    return pa.array(text.to_numpy(dtype=object), type=pa.string())


def _parse_column(
    raw: pd.DataFrame, col: Column, file: str
) -> tuple[pd.Series | None, Problem | None]:
    text = raw[col.name]
    if col.kind is Kind.ID:
        bad = ~_fullmatch(text, USER_ID_PATTERN)
        message = f"user_id must be 1-64 letters, digits, '-' or '_' (pattern {USER_ID_PATTERN})"
        return text, (
            Problem(file, col.name, message, _examples(raw, bad, col.name)) if bad.any() else None
        )
    if col.kind is Kind.BOOL:
        bad = ~_isin(text, ["True", "False"])
        parsed = text == "True"
    elif col.kind is Kind.NULLABLE_BOOL:
        # Empty stays missing: coercing it to False (or True) would invent a plan the user lacks.
        bad = ~_isin(text, ["True", "False", ""])
        parsed = (text == "True").astype("boolean").mask(text == "")
    elif col.kind is Kind.INT:
        # ASCII digits only (\d admits any Unicode digit), and at most 18 so it fits int64.
        bad = ~_fullmatch(text, r"-?[0-9]{1,18}")
        parsed = text.where(~bad, "0").astype(np.int64)
    elif col.kind is Kind.FLOAT:
        trimmed = pc.utf8_trim_whitespace(_arrow_text(text)).to_numpy(zero_copy_only=False)
        valid = pd.to_numeric(text, errors="coerce").notna() & (trimmed == text.to_numpy())
        # pd.to_numeric is not correctly rounded (1 ulp off for some long decimals); numpy's
        # conversion of the text is, so stored values equal the CSV's to the last bit.
        parsed = text.where(valid, "nan").astype(np.float64)
        bad = ~np.isfinite(parsed)
    elif col.kind is Kind.DATE:
        # strptime would also take 2022-2-5: insist on the zero-padded form of the contract.
        shaped = _fullmatch(text, r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
        parsed = pd.to_datetime(text.where(shaped, ""), format="%Y-%m-%d", errors="coerce").dt.date
        bad = parsed.isna()
    else:
        return text, None
    if bad.any():
        return None, Problem(
            file, col.name, f"not a valid {col.kind.value}", _examples(raw, bad, col.name)
        )
    return parsed, None


def find_problems(table: SeedTable, df: pd.DataFrame, whole: bool = True) -> list[Problem]:
    """Rules on typed values: keys, ranges, categories, nullable flags. Also run on stored data.

    `whole=False` for a chunk of a table: the rules of a table as a whole (some rows, unique
    user_ids) are then the caller's."""
    problems: list[Problem] = []
    file = table.file
    if df.empty and whole:
        return [Problem(file, None, "no rows")]
    ids = df["user_id"]
    missing = ids.isna() | (ids.astype("string").str.len() == 0)
    if missing.any():
        problems.append(
            Problem(file, "user_id", "empty user_id", _examples(df, missing, "user_id"))
        )
    duplicated = ids.duplicated(keep=False) & ~missing
    if whole and duplicated.any():
        problems.append(
            Problem(file, "user_id", "duplicate user_id", _examples(df, duplicated, "user_id"))
        )
    for col in table.columns:
        values = df[col.name]
        if col.kind is Kind.CATEGORY:
            unknown = ~_isin(values, col.categories)
            if unknown.any():
                message = f"unknown category, expected one of {list(col.categories)}"
                problems.append(Problem(file, col.name, message, _examples(df, unknown, col.name)))
        if col.kind is Kind.BOOL and values.isna().any():
            problems.append(
                Problem(file, col.name, "empty boolean", _examples(df, values.isna(), col.name))
            )
        if col.min is not None and (low := values < col.min).any():
            problems.append(
                Problem(file, col.name, f"below {col.min:g}", _examples(df, low, col.name))
            )
        if col.max is not None and (high := values > col.max).any():
            problems.append(
                Problem(file, col.name, f"above {col.max:g}", _examples(df, high, col.name))
            )
    if "net_service" in df:
        # An empty stream flag means "no internet service", never "unknown": it must agree.
        has_net = df["net_service"] != "No"
        for flag in STREAM_FLAGS:
            wrong = df[flag].isna() == has_net
            if wrong.any():
                message = "must be empty exactly where net_service is 'No'"
                problems.append(Problem(file, flag, message, _examples(df, wrong, flag)))
    return problems


_STORED_DTYPES = {
    Kind.ID: "object",
    Kind.CATEGORY: "object",
    Kind.DATE: "object",
    Kind.BOOL: "bool",
    Kind.NULLABLE_BOOL: "boolean",
    Kind.INT: "int64",
    Kind.FLOAT: "float64",
}


def stored_problems(table: SeedTable, df: pd.DataFrame, whole: bool = True) -> list[Problem]:
    """Whether a stored snapshot (or a chunk of it, `whole=False`) still has the contract's
    columns, types and rules."""
    file = table.snapshot
    expected = table.column_names
    actual = [c for c in df.columns if c != "as_of"]
    if actual != expected:
        return [Problem(file, None, f"columns are {actual}, expected {expected}")]
    wrong = [
        Problem(file, c.name, f"stored as {df[c.name].dtype}, expected {_STORED_DTYPES[c.kind]}")
        for c in table.columns
        if str(df[c.name].dtype) != _STORED_DTYPES[c.kind]
    ]
    return wrong or find_problems(table, df, whole)


class KnownUsers:
    """The user_ids of a month's users table as sorted 64-bit hashes (8 bytes a user, not the
    ids' text), so that another table's ids are looked up chunk by chunk in a binary search."""

    def __init__(self, hashes: Iterable[np.ndarray] = ()):
        parts = list(hashes)
        self._sorted = np.sort(np.concatenate(parts)) if parts else np.empty(0, np.uint64)

    def known(self, ids: pd.Series) -> np.ndarray:
        """Whether each id is one of the users' (a 64-bit hash collision aside)."""
        wanted = user_id_hashes(ids)
        if not len(self._sorted):
            return np.zeros(len(wanted), dtype=bool)
        at = np.searchsorted(self._sorted, wanted).clip(max=len(self._sorted) - 1)
        return self._sorted[at] == wanted


def unknown_user_problems(table: SeedTable, df: pd.DataFrame, users: KnownUsers) -> list[Problem]:
    """Every user_id of a month's table must exist in its users table."""
    orphan = pd.Series(~users.known(df["user_id"]), index=df.index)
    if not orphan.any():
        return []
    message = f"user_id not in {USERS.file}"
    return [Problem(table.file, "user_id", message, _examples(df, orphan, "user_id"))]


class Findings:
    """The problems of one file, merged across its chunks: one per column and message, with the
    first MAX_EXAMPLES offending rows."""

    def __init__(self) -> None:
        self._found: dict[tuple[str, str | None, str], Problem] = {}

    def add(self, problems: Iterable[Problem]) -> None:
        for problem in problems:
            key = (problem.file, problem.column, problem.message)
            seen = self._found.setdefault(key, problem)
            if seen is not problem and len(seen.examples) < MAX_EXAMPLES:
                examples = (seen.examples + problem.examples)[:MAX_EXAMPLES]
                self._found[key] = replace(seen, examples=examples)

    def __bool__(self) -> bool:
        return bool(self._found)

    def list(self) -> list[Problem]:
        return list(self._found.values())


# Every cell as its text: nothing guessed missing, blank lines kept (and dropped by the parser).
_CSV_TEXT = {"keep_default_na": False, "na_filter": False, "skip_blank_lines": False}


def _header_problems(path: Path, table: SeedTable, file: str) -> list[Problem]:
    header = pd.read_csv(path, dtype=str, nrows=0, **_CSV_TEXT).columns
    expected = table.column_names
    return [Problem(file, c, "missing column") for c in expected if c not in header] + [
        Problem(file, c, "unexpected column") for c in header if c not in expected
    ]


def _parse_chunk(
    raw: pd.DataFrame, table: SeedTable, file: str
) -> tuple[pd.DataFrame | None, list[Problem]]:
    """Typed columns of a chunk of text rows, and every problem found in it."""
    typed: dict[str, pd.Series] = {}
    problems: list[Problem] = []
    for col in table.columns:
        series, problem = _parse_column(raw, col, file)
        if problem:
            problems.append(problem)
        else:
            typed[col.name] = series
    if problems:
        return None, problems
    df = pd.DataFrame(typed, columns=table.column_names)
    return df, find_problems(table, df, whole=False)


def _duplicate_problems(file: str, ids: list[pa.Array], lines: list[np.ndarray]) -> list[Problem]:
    """user_ids that appear twice or more anywhere in the file (every chunk's ids kept as Arrow
    text, a few bytes a user)."""
    if not ids:
        return []
    every = pa.chunked_array(ids, type=pa.string())
    counts = pc.value_counts(every)
    repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    if not len(repeated):
        return []
    mask = pc.is_in(every, value_set=repeated).to_numpy(zero_copy_only=False)
    at = np.flatnonzero(mask)[:MAX_EXAMPLES]
    rows = pd.DataFrame({"user_id": every.take(pa.array(at)).to_pylist()})
    rows.index = np.concatenate(lines)[at]
    examples = _examples(rows, pd.Series(True, index=rows.index), "user_id")
    return [Problem(file, "user_id", "duplicate user_id", examples)]


@dataclass
class _Month:
    """What reading a month's files shares: every problem so far and the users' ids."""

    folder: Path
    chunk_rows: int
    problems: list[Problem] = field(default_factory=list)
    users: KnownUsers | None = None
    # Whether a broken file raises SeedError (after the later files are read too).
    raises: bool = True

    def table_rows(self, table: SeedTable) -> Iterator[pd.DataFrame]:
        """The file's valid rows in chunks; once anything of the month is invalid, nothing more
        is yielded, but every row is still read so that the error names all that is wrong."""
        path = self.folder / table.file
        file = f"{path.parent.name}/{path.name}"
        found = Findings()
        ids: list[pa.Array] = []
        lines: list[np.ndarray] = []
        hashes: list[np.ndarray] = []
        rows = 0
        if not path.is_file():
            found.add([Problem(file, None, "file is missing")])
        elif path.stat().st_size == 0:
            found.add([Problem(file, None, "file is empty")])
        else:
            try:
                found.add(_header_problems(path, table, file))
                # Blank lines are read as empty rows and then dropped, so that the index of
                # every row that remains still gives its line in the file (index + 2).
                reader = pd.read_csv(path, dtype=str, chunksize=self.chunk_rows, **_CSV_TEXT)
                for raw in [] if found else reader:
                    raw = raw[~(raw == "").all(axis=1)]
                    df, problems = _parse_chunk(raw, table, file)
                    found.add(problems)
                    if df is None or df.empty:
                        continue
                    rows += len(df)
                    ids.append(_arrow_text(df["user_id"]))
                    lines.append(df.index.to_numpy())
                    if table is USERS:
                        hashes.append(user_id_hashes(df["user_id"]))
                    elif self.users is not None:
                        found.add(unknown_user_problems(table, df, self.users))
                    if not self.problems and not found:
                        yield df
            except pd.errors.EmptyDataError:
                found.add([Problem(file, None, "file is empty")])
            except (pd.errors.ParserError, UnicodeDecodeError) as error:
                found.add([Problem(file, None, f"not a readable CSV: {error}")])
            if not found and not rows:
                found.add([Problem(table.file, None, "no rows")])
        found.add(_duplicate_problems(table.file, ids, lines))
        if table is USERS and hashes:
            self.users = KnownUsers(hashes)
        self.problems.extend(found.list())
        if self.problems and self.raises:
            # Raised here, in the caller's loop over this table, rather than after the last
            # table: a store would otherwise be left with a table it was given no rows for.
            self.raises = False
            for later in TABLES[TABLES.index(table) + 1 :]:
                for _ in self.table_rows(later):
                    pass
            raise SeedError(self.folder, self.problems)


# Rows of a CSV parsed at a time when the caller does not say (`STREAMFLOW_CHUNK_ROWS` in a run).
DEFAULT_CHUNK_ROWS = 200_000


def iter_month(
    folder: Path, rows: int = DEFAULT_CHUNK_ROWS
) -> Iterator[tuple[str, Iterator[pd.DataFrame]]]:
    """Parse and validate the six CSVs of one month folder: (snapshot table, its valid rows in
    chunks of at most `rows`) for each, in order.

    A caller stores each chunk and lets it go: memory holds one chunk (and a few bytes a user:
    the ids that the uniqueness and known-user rules need), not the month. A table's chunks are
    read when the caller iterates them, before it asks for the next table (a table it skipped
    is still read). When a file breaks the contract, every later file is still read, and then
    SeedError, raised from the broken table's chunks, names every broken file, column and
    example rows; a caller that staged what it was given discards it then.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"no seeds folder for this month: looked for {folder}")
    month = _Month(folder, rows)
    for table in TABLES:
        chunks = month.table_rows(table)
        yield table.snapshot, chunks
        for _ in chunks:  # what the caller left unread
            pass


def parse_table(path: Path, table: SeedTable) -> tuple[pd.DataFrame | None, list[Problem]]:
    """One CSV (`path`, named as `table`'s file) read whole into typed columns, with every
    problem found but unknown users (which need the month's users table)."""
    month = _Month(path.parent, DEFAULT_CHUNK_ROWS, raises=False)
    chunks = list(month.table_rows(table))
    return (None, month.problems) if month.problems else (pd.concat(chunks), [])


def read_month(folder: Path) -> dict[str, pd.DataFrame]:
    """`iter_month` gathered: the six validated tables of a month, keyed by snapshot name."""
    tables = {}
    for name, chunks in iter_month(folder):
        tables[name] = pd.concat(list(chunks))
    return tables
