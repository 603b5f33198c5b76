"""The postgres profile's point-in-time join (adapters/offline_store.py) on a real server and real
Feast: on the real seeds it returns what the local profile's DuckDB store returns, row for row,
including the TTL's edge, a user missing from a view, and a user in no view."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from streamflow.adapters.feature_store import apply_definitions, open_store
from streamflow.domain import months
from streamflow.domain.features import (
    FEATURE_NAMES,
    FEATURE_SERVICE,
    FEATURE_TTL,
    FEATURE_VIEWS,
    FEATURES,
    JOIN_KEY,
    LABEL,
    STORED_DTYPES,
    with_stored_dtypes,
)
from streamflow.domain.seeds import read_month
from streamflow.settings import get_settings
from streamflow_assets.resources import build_resources
from tests.profiles import throwaway_databases

pytestmark = pytest.mark.postgres

JANUARY, FEBRUARY = months.as_of("2024-01"), months.as_of("2024-02")
USAGE = next(view for view in FEATURE_VIEWS if view.source_table == "usage_agg_30d_snapshots")
PROFILE = next(view for view in FEATURE_VIEWS if view.source_table != USAGE.source_table)
USAGE_FEATURES = [feature.name for feature in USAGE.features]
PROFILE_FEATURES = [feature.name for feature in PROFILE.features]
# January's snapshot is exactly the TTL old here (still joined: both stores' bound is inclusive),
# and a second later too old.
AT_TTL, PAST_TTL = JANUARY + FEATURE_TTL, JANUARY + FEATURE_TTL + timedelta(seconds=1)
NOBODY = "0000-NOBODY"
TIMESTAMP = "event_timestamp"


@dataclass(frozen=True)
class Joined:
    duckdb: pd.DataFrame
    postgres: pd.DataFrame
    snapshots: dict  # as_of -> {table: rows}, as stored in both profiles
    absent: list[str]  # users left out of February's usage snapshot


@pytest.fixture(scope="module")
def joined(real_seeds: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Joined]:
    """Both real months stored by each profile (three users left out of February's usage view),
    and one entity frame joined by each profile's offline store."""
    snapshots = {
        as_of: read_month(real_seeds / folder)
        for as_of, folder in [(JANUARY, "month_000"), (FEBRUARY, "month_001")]
    }
    usage = snapshots[FEBRUARY][USAGE.source_table]
    absent = usage[JOIN_KEY].head(3).tolist()
    snapshots[FEBRUARY][USAGE.source_table] = usage.iloc[3:].reset_index(drop=True)
    labels = {as_of: tables["labels_snapshots"] for as_of, tables in snapshots.items()}
    later = labels[FEBRUARY][labels[FEBRUARY][JOIN_KEY].isin(absent)]
    entities = pd.concat(
        [
            *(
                pd.DataFrame({JOIN_KEY: rows[JOIN_KEY], TIMESTAMP: as_of, LABEL: rows[LABEL]})
                for as_of, rows in labels.items()
            ),
            *(
                pd.DataFrame({JOIN_KEY: later[JOIN_KEY], TIMESTAMP: at, LABEL: later[LABEL]})
                for at in (AT_TTL, PAST_TTL)
            ),
            pd.DataFrame({JOIN_KEY: [NOBODY], TIMESTAMP: [FEBRUARY], LABEL: [False]}),
        ],
        ignore_index=True,
    )
    results = {}
    with throwaway_databases("") as (database,), pytest.MonkeyPatch.context() as env:
        for name in [n for n in os.environ if n.startswith("STREAMFLOW_")]:
            env.delenv(name)
        env.setenv("STREAMFLOW_SEEDS_DIR", str(real_seeds))
        env.setenv("STREAMFLOW_POSTGRES_DB", database)
        for profile in ("local", "postgres"):
            env.setenv("STREAMFLOW_PROFILE", profile)
            env.setenv("STREAMFLOW_DATA_DIR", str(tmp_path_factory.mktemp(profile)))
            get_settings.cache_clear()
            settings = get_settings()
            tables = build_resources(settings)["snapshots"].store()
            for as_of, month in snapshots.items():
                tables.write_month(as_of, month)
            store = open_store(settings)
            apply_definitions(store, store.config.repo_path)
            service = store.get_feature_service(FEATURE_SERVICE)
            results[profile] = store.get_historical_features(
                entity_df=entities, features=service
            ).to_df()
        get_settings.cache_clear()
    yield Joined(results["local"], results["postgres"], snapshots, absent)
    get_settings.cache_clear()


def comparable(result: pd.DataFrame) -> pd.DataFrame:
    """A retrieval as training_dataset keeps it, in a stable order and the stored dtypes."""
    rows = result[[JOIN_KEY, TIMESTAMP, *FEATURE_NAMES, LABEL]].assign(
        **{TIMESTAMP: pd.to_datetime(result[TIMESTAMP], utc=True).astype("datetime64[ns, UTC]")}
    )
    return with_stored_dtypes(rows.sort_values([JOIN_KEY, TIMESTAMP], ignore_index=True))


def test_the_postgres_join_returns_what_duckdb_returns(joined: Joined) -> None:
    assert list(joined.postgres.columns) == list(joined.duckdb.columns)
    pd.testing.assert_frame_equal(
        comparable(joined.postgres), comparable(joined.duckdb), check_exact=True
    )


def features_at(joined: Joined, when, users: list[str], names: list[str]) -> pd.DataFrame:
    rows = comparable(joined.postgres)
    picked = rows[(rows[TIMESTAMP] == when) & rows[JOIN_KEY].isin(users)]
    return picked.set_index(JOIN_KEY).loc[users, names]


def stored(joined: Joined, as_of, table: str, users: list[str], names: list[str]):
    dtypes = {f.name: STORED_DTYPES[f.dtype] for f in FEATURES if f.name in names}
    return joined.snapshots[as_of][table].set_index(JOIN_KEY).loc[users, names].astype(dtypes)


def test_each_row_gets_the_newest_snapshot_at_or_before_it_within_the_ttl(joined: Joined) -> None:
    """What the equality above covers, held without DuckDB: a later month's row never joins, an
    older one within the TTL fills a missing month, and past the TTL nothing joins."""
    users = joined.snapshots[FEBRUARY][USAGE.source_table][JOIN_KEY].tolist()
    # Every user's February usage row differs from January's: a wrong pick cannot pass.
    later = stored(joined, FEBRUARY, USAGE.source_table, users, USAGE_FEATURES)
    earlier = stored(joined, JANUARY, USAGE.source_table, users, USAGE_FEATURES)
    assert (later != earlier).any(axis=1).all()
    for as_of, expected in [(JANUARY, earlier), (FEBRUARY, later)]:
        got = features_at(joined, as_of, users, USAGE_FEATURES)
        pd.testing.assert_frame_equal(got, expected, check_names=False)
    absent = joined.absent
    expected = stored(joined, JANUARY, USAGE.source_table, absent, USAGE_FEATURES)
    for when in (FEBRUARY, AT_TTL):
        got = features_at(joined, when, absent, USAGE_FEATURES)
        pd.testing.assert_frame_equal(got, expected, check_names=False)
    assert features_at(joined, PAST_TTL, absent, USAGE_FEATURES).isna().all().all()
    pd.testing.assert_frame_equal(
        features_at(joined, PAST_TTL, absent, PROFILE_FEATURES),
        stored(joined, FEBRUARY, PROFILE.source_table, absent, PROFILE_FEATURES),
        check_names=False,
    )
    assert features_at(joined, FEBRUARY, [NOBODY], FEATURE_NAMES).isna().all().all()
