"""Shared fixtures: the real seeds, settings per test, a tmp Dagster instance, real runs."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# Before anything imports `feast.metrics`: that module sets PROMETHEUS_MULTIPROCESS_DIR on import,
# and a prometheus_client imported after it keeps metric values in files keyed by metric name, so
# every API app a test creates would start from the counters of the apps before it. A server
# process imports prometheus_client (serving.metrics) before Feast's metrics too.
import prometheus_client  # noqa: F401, I001
import pytest

from streamflow.settings import Settings, get_settings

if TYPE_CHECKING:
    from dagster import DagsterInstance

    from streamflow.ops.pipeline import MonthOutcome

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_SEEDS = (Path(__file__).resolve().parents[1] / ".." / "shared" / "seeds").resolve()
REAL_MONTHS = ("month_000", "month_001")


# The slowest files (the --durations that .ci/run prints), started first: `make test` runs files
# on two xdist workers (`--dist loadfile`, in collection order), and the long ones started last
# would leave one worker idle at the end while the other finishes them.
SLOWEST_FIRST = (
    "tests/e2e/test_cluster.py",
    "tests/e2e/test_stack.py",
    "tests/test_pipeline_faults.py",
    "tests/e2e/test_demo.py",
    "tests/code_location/test_model.py",
    "tests/code_location/test_features.py",
    "tests/serving/test_outages.py",
    "tests/test_pipeline_outage.py",
    "tests/monitoring/test_monitoring_loop.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`SLOWEST_FIRST` before the rest; each file's tests keep their order (module fixtures)."""
    rank = {path: index for index, path in enumerate(SLOWEST_FIRST)}

    def file_rank(item: pytest.Item) -> int:
        path = Path(str(item.path)).relative_to(REPO_ROOT).as_posix()
        return rank.get(path, len(rank))

    items.sort(key=file_rank)


def child_env(**variables: str) -> dict[str, str]:
    """The environment of a child process: this one's without a developer's STREAMFLOW_* and
    DAGSTER_* and without the multiprocess directory `feast.metrics` set, plus `variables`."""
    inherited = ("STREAMFLOW_", "DAGSTER_", "PROMETHEUS_MULTIPROC")
    return {k: v for k, v in os.environ.items() if not k.startswith(inherited)} | variables


@pytest.fixture(scope="session")
def real_seeds() -> Path:
    """The real seeds (month_000 = 2024-01, month_001 = 2024-02), read only; skip when absent."""
    if not all((REAL_SEEDS / month).is_dir() for month in REAL_MONTHS):
        pytest.skip(f"real seeds not found at {REAL_SEEDS} (../shared/seeds beside the repo)")
    return REAL_SEEDS


@pytest.fixture
def settings_for(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Settings]]:
    """`settings_for(data_dir, seeds_dir, **extra_env)`: fresh Settings from STREAMFLOW_* vars.

    Every STREAMFLOW_* variable of the outer environment is removed first, so a developer's shell
    cannot leak into a test; extra keyword arguments become STREAMFLOW_<NAME> variables.
    """

    def make(data_dir: Path, seeds_dir: Path, **extra_env: object) -> Settings:
        for name in list(os.environ):
            if name.startswith("STREAMFLOW_"):
                monkeypatch.delenv(name)
        monkeypatch.setenv("STREAMFLOW_DATA_DIR", str(data_dir))
        monkeypatch.setenv("STREAMFLOW_SEEDS_DIR", str(seeds_dir))
        for name, value in extra_env.items():
            monkeypatch.setenv(f"STREAMFLOW_{name.upper()}", str(value))
        get_settings.cache_clear()
        return get_settings()

    yield make
    get_settings.cache_clear()


@pytest.fixture
def dagster_instance(tmp_path: Path) -> Iterator[DagsterInstance]:
    """A persistent sqlite Dagster instance in a tmp dir, so run and asset history is queryable."""
    from dagster import instance_for_test

    home = tmp_path / "dagster_home"
    home.mkdir()
    with instance_for_test(temp_dir=str(home)) as instance:
        yield instance


@pytest.fixture
def materialize(
    dagster_instance: DagsterInstance,
) -> Callable[..., list[MonthOutcome]]:
    """`materialize(settings, months, group=None)`: real Dagster runs of the monthly pipeline.

    Runs `run_months` on `build_definitions(settings)` in `dagster_instance`. With `group`, the
    monthly job is narrowed to that asset group (and the checks of its assets), so a test of
    ingestion does not also train a model; the assets, checks and resources are the same.
    """
    from streamflow.ops.pipeline import run_months
    from streamflow_assets.definitions import build_definitions

    def run(
        settings: Settings, months: Sequence[str], group: str | None = None
    ) -> list[MonthOutcome]:
        defs = build_definitions(settings)
        if group is not None:
            defs = _only_group(defs, group)
        return run_months(list(months), defs=defs, instance=dagster_instance)

    return run


def _only_group(defs, group: str):
    from dagster import AssetSelection, Definitions, define_asset_job

    from streamflow_assets.jobs import MONTHLY_PIPELINE

    job = define_asset_job(MONTHLY_PIPELINE, selection=AssetSelection.groups(group))
    return Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=[job],
        resources=defs.resources,
    )


@pytest.fixture
def copy_seeds(real_seeds: Path, tmp_path: Path) -> Callable[..., Path]:
    """`copy_seeds(*folders, rows=None, into=None)`: writable copies of real month folders.

    Copies into `tmp_path / "seeds"` (or `into`) and returns that seeds dir; `rows` keeps the
    header and the first `rows` lines of every CSV, byte for byte. The originals are never touched.
    """

    def copy(*folders: str, rows: int | None = None, into: Path | None = None) -> Path:
        target = into or tmp_path / "seeds"
        for folder in folders or REAL_MONTHS:
            destination = target / folder
            destination.mkdir(parents=True)
            for source in sorted((real_seeds / folder).glob("*.csv")):
                lines = source.read_bytes().splitlines(keepends=True)
                kept = lines if rows is None else lines[: rows + 1]
                # Fresh files rather than copies: the originals are read-only.
                (destination / source.name).write_bytes(b"".join(kept))
        return target

    return copy


@dataclass(frozen=True)
class EditedCell:
    """Where `edit_csv` changed a value: the CSV line (header = line 1) and the row's user_id."""

    line: int
    user_id: str
    old: str


@pytest.fixture
def edit_csv() -> Callable[..., EditedCell]:
    """`edit_csv(path, column, value, where=None)`: set one cell of a seed CSV, keeping the text.

    Edits the first row for which `where(row_as_dict)` holds (the first row when None). The seed
    format has no quoting, so every other byte of the file stays as it was.
    """

    def edit(
        path: Path,
        column: str,
        value: str,
        where: Callable[[dict[str, str]], bool] | None = None,
    ) -> EditedCell:
        lines = path.read_text().split("\n")
        header = lines[0].split(",")
        position = header.index(column)
        for number, line in enumerate(lines[1:], start=2):
            if not line:
                continue
            cells = line.split(",")
            if where is None or where(dict(zip(header, cells, strict=True))):
                old, cells[position] = cells[position], value
                lines[number - 1] = ",".join(cells)
                path.write_text("\n".join(lines))
                return EditedCell(number, cells[header.index("user_id")], old)
        raise LookupError(f"no row of {path} matches")

    return edit
