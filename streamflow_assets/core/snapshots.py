"""Monthly snapshot tables keyed (user_id, as_of): each month is replaced whole, or not at all."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

AS_OF = "as_of"


class SnapshotStore(Protocol):
    """Where snapshot and training tables live; one implementation per profile."""

    def write_month(self, as_of: datetime, frames: Mapping[str, pd.DataFrame]) -> None:
        """Replace the `as_of` partition of every given table; a failure leaves all as they were."""

    def read(self, table: str, as_of: datetime) -> pd.DataFrame:
        """One table's rows for one as_of; KeyError when that partition was never written."""

    def as_ofs(self, table: str) -> list[datetime]:
        """Every as_of stored for a table, oldest first."""

    def row_count(self, table: str, as_of: datetime) -> int | None:
        """Rows of one partition without reading it; None when it was never written."""


def with_as_of(df: pd.DataFrame, as_of: datetime) -> pd.DataFrame:
    """The stored form of a month's rows: the key column as_of (UTC) after user_id."""
    out = df.copy()
    out.insert(1, AS_OF, pd.Timestamp(as_of).tz_convert("UTC"))
    return out


class ParquetSnapshotStore:
    """Local profile: `<root>/<table>/<YYYY-MM-DD>.parquet`, a directory Feast's file source reads.

    A month is written in two phases: every table to a hidden temporary file (readers skip names
    starting with '.'), then each renamed over its partition (atomic on POSIX), the files it
    replaces kept aside until every rename succeeded, so that a failure puts them all back.
    """

    def __init__(self, root: Path):
        self.root = root

    def path(self, table: str, as_of: datetime) -> Path:
        return self.root / table / f"{as_of:%Y-%m-%d}.parquet"

    def write_month(self, as_of: datetime, frames: Mapping[str, pd.DataFrame]) -> None:
        staged = self._stage(as_of, frames)
        try:
            self._commit(staged)
        finally:
            for temp, _ in staged:
                temp.unlink(missing_ok=True)

    def _stage(
        self, as_of: datetime, frames: Mapping[str, pd.DataFrame]
    ) -> list[tuple[Path, Path]]:
        staged: list[tuple[Path, Path]] = []
        try:
            for table, df in frames.items():
                final = self.path(table, as_of)
                final.parent.mkdir(parents=True, exist_ok=True)
                temp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
                staged.append((temp, final))
                arrow = pa.Table.from_pandas(with_as_of(df, as_of), preserve_index=False)
                pq.write_table(arrow, temp)
                with open(temp, "rb") as handle:
                    os.fsync(handle.fileno())
        except BaseException:
            for temp, _ in staged:
                temp.unlink(missing_ok=True)
            raise
        return staged

    def _commit(self, staged: list[tuple[Path, Path]]) -> None:
        """Rename every staged file over its partition; on a failure, put the old files back."""
        done: list[tuple[Path, Path | None]] = []
        try:
            for temp, final in staged:
                backup = None
                if final.exists():
                    backup = final.with_name(f".{final.name}.{uuid.uuid4().hex}.bak")
                    os.replace(final, backup)
                done.append((final, backup))
                os.replace(temp, final)
        except BaseException:
            for final, backup in reversed(done):
                if backup is None:
                    final.unlink(missing_ok=True)
                else:
                    os.replace(backup, final)
            raise
        for _, backup in done:
            if backup is not None:
                backup.unlink()

    def read(self, table: str, as_of: datetime) -> pd.DataFrame:
        path = self.path(table, as_of)
        if not path.is_file():
            raise KeyError(f"{table} has no partition as_of {as_of:%Y-%m-%d} (no {path})")
        return pq.read_table(path).to_pandas()

    def row_count(self, table: str, as_of: datetime) -> int | None:
        path = self.path(table, as_of)
        return pq.read_metadata(path).num_rows if path.is_file() else None

    def as_ofs(self, table: str) -> list[datetime]:
        folder = self.root / table
        if not folder.is_dir():
            return []
        days = sorted(p.stem for p in folder.glob("[0-9]*.parquet"))
        return [datetime.fromisoformat(day).replace(tzinfo=UTC) for day in days]
