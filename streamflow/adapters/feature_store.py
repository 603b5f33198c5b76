"""The Feast side of StreamFlow: open a profile's store, apply the repo, write a month online."""

from __future__ import annotations

import contextlib
import os
import queue
import string
import sys
import tempfile
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from feast import FeatureStore, RepoConfig
from feast.repo_contents import RepoContents
from feast.repo_operations import extract_objects_for_apply_delete, parse_repo
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType

from streamflow.adapters.feast_layout import serialized_key
from streamflow.adapters.online_store import EncodedView, WriteStats
from streamflow.adapters.snapshots import DUCKDB_BOUNDS
from streamflow.domain.features import FEATURE_SERVICE, FEATURE_VIEWS, JOIN_KEY
from streamflow.settings import Settings

_VALUE_TYPES = {
    "Int64": ValueType.INT64,
    "Float32": ValueType.FLOAT,
    "Bool": ValueType.BOOL,
    "String": ValueType.STRING,
}


def open_store(settings: Settings) -> FeatureStore:
    """The profile's Feast store: its feature_store.yaml with `${VAR}`s filled from the settings."""
    return open_repo(
        settings.feature_store_yaml, settings.feature_repo, settings.feast_dir, settings.feast_env()
    )


def open_repo(
    config_file: Path, repo: Path, feast_dir: Path, variables: dict[str, str]
) -> FeatureStore:
    """A Feast store from its yaml, `${VAR}`s filled from `variables` (the `feast` CLI, given
    the same file, fills them from the environment)."""
    text = config_file.read_text()
    config = RepoConfig(**yaml.safe_load(string.Template(text).safe_substitute(variables)))
    config.repo_path = repo
    feast_dir.mkdir(parents=True, exist_ok=True)
    return FeatureStore(config=config)


@contextlib.contextmanager
def _inside(repo: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(repo)
    sys.path.insert(0, str(repo))
    try:
        yield
    finally:
        sys.path.remove(str(repo))
        os.chdir(previous)


def load_definitions(repo: Path) -> RepoContents:
    """Import the repo's definitions as `feast apply` does (it names modules from the cwd).

    Feast imports them by module name, so copies cached by an earlier call are dropped first:
    the data sources must be rebuilt from the current settings (e.g. another data dir).
    """
    with _inside(repo):
        for path in repo.glob("*.py"):
            sys.modules.pop(path.stem, None)
        return parse_repo(repo)


@dataclass(frozen=True)
class ApplySummary:
    applied: int
    deleted: int
    views: dict[str, list[str]]
    services: list[str]


def apply_definitions(store: FeatureStore, repo: Path) -> ApplySummary:
    """`feast apply` for the repo: register new or changed objects, delete removed ones."""
    contents = load_definitions(repo)
    registry = store.registry
    for project in contents.projects:
        registry.apply_project(project, commit=True)
    to_apply, to_delete, _, _ = extract_objects_for_apply_delete(store.project, registry, contents)
    store.apply(to_apply, objects_to_delete=to_delete, partial=False)
    return ApplySummary(
        applied=len(to_apply),
        deleted=len(to_delete),
        views={fv.name: [f.name for f in fv.features] for fv in contents.feature_views},
        services=[s.name for s in contents.feature_services],
    )


def _entity_keys(user_ids: np.ndarray, version: int) -> np.ndarray:
    return np.array(
        [serialized_key(uid, version) for uid in user_ids],
        dtype=object,
    )


def _encoded(values: pd.Series, dtype: str) -> np.ndarray:
    """Serialized ValueProtos of a column, by Feast's own converter applied to distinct values.

    Snapshot columns repeat few values (flags, counts, categories), so encoding each distinct
    value once and indexing by its code is much faster than a proto per row, and byte-identical.
    """
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    protos = python_values_to_proto_values(list(uniques), _VALUE_TYPES[dtype])
    # Code -1 (missing) indexes the last entry: an empty ValueProto, which Feast reads as None.
    table = np.array([p.SerializeToString() for p in protos] + [b""], dtype=object)
    return table[codes]


def materialize_month(
    store: FeatureStore,
    read_batches: Callable[[str], Iterator[pd.DataFrame]],
    as_of: datetime,
) -> dict[str, WriteStats]:
    """Write one month's snapshot rows into the online store, every view in one transaction.

    Reads nothing but the month's own rows (no scan of every month as `feast materialize` does),
    a chunk of each source table at a time (`read_batches(table)` yields its rows in chunks,
    best in user_id order), so that memory is bounded by the chunk, not by the month, and
    writes through the online store's guarded upsert, so older months never win; a crash or a
    lost connection leaves the month online whole or not at all. The Feast registry then
    records the materialized interval, as `feast materialize` would.
    """
    online = store.provider.online_store
    views = {spec.name: store.get_feature_view(spec.name) for spec in FEATURE_VIEWS}
    version = store.config.entity_key_serialization_version

    def encoded() -> Iterator[EncodedView]:
        # The views' tables side by side, a chunk of each at a time; a table that lacks some
        # users runs out of chunks first.
        chunks = zip_longest(*(read_batches(spec.source_table) for spec in FEATURE_VIEWS))
        for frames in chunks:
            users, keys = None, None
            for spec, df in zip(FEATURE_VIEWS, frames, strict=True):
                if df is None:
                    continue
                ids = df[JOIN_KEY].to_numpy()
                # The views of a month hold the same users: each key is serialized once.
                if users is None or not np.array_equal(ids, users):
                    users, keys = ids, _entity_keys(ids, version)
                yield EncodedView(
                    view=views[spec.name],
                    entity_keys=keys,
                    values={f.name: _encoded(df[f.name], f.dtype) for f in spec.features},
                )

    stats = online.write_encoded(store.config, read_ahead(encoded()), as_of)
    for view in views.values():
        store.registry.apply_materialization(
            view, store.project, as_of, as_of + timedelta(seconds=1), commit=True
        )
    return stats


def read_ahead(items: Generator[EncodedView]) -> Iterator[EncodedView]:
    """`items`, the next one read and encoded in a thread while the store writes this one.

    Reading a chunk and serializing its values is the client's work; the merge is the store's
    (PostgreSQL's server, Redis, SQLite's engine, which all release the GIL): side by side they
    use both cores instead of taking turns. One view's chunk is held ahead, no more.
    """
    ahead: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    with contextlib.suppress(queue.Full):
                        ahead.put(("item", item), timeout=0.1)
                        break
                if stop.is_set():
                    return
            ahead.put(("done", None))
        except BaseException as error:  # re-raised in the consumer, where the write fails
            ahead.put(("error", error))
        finally:
            items.close()  # its readers' cursors, also when the write stopped early

    producer = threading.Thread(target=produce, name="online-write-read-ahead", daemon=True)
    producer.start()
    try:
        while True:
            kind, value = ahead.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        # The write failed or stopped early: the producer gives up at its next hand-over.
        stop.set()
        with contextlib.suppress(queue.Empty):
            ahead.get_nowait()
        producer.join()


def historical_batches(
    store: FeatureStore, entities: pd.DataFrame, rows: int
) -> Iterator[pd.DataFrame]:
    """Feast's point-in-time join of `entities` with the feature service, in user_id order,
    `rows` at a time as pandas: the result is held as Arrow (a few dozen bytes a user), never
    as the month's pandas objects.

    Feast's file offline store joins in ibis' default DuckDB, which by default may take 80 % of
    the machine's memory: it is bounded here as the snapshot store's joins are, spilling to a
    temporary directory. (Its job cannot stream the result: ibis 12's `to_pyarrow_batches`
    calls a DuckDB method that DuckDB 2.0 no longer has.)
    """
    import ibis

    previous = ibis.options.default_backend
    with tempfile.TemporaryDirectory(prefix="streamflow-pit-") as spill:
        engine = ibis.duckdb.connect(**DUCKDB_BOUNDS, temp_directory=spill)
        ibis.options.default_backend = engine
        try:
            job = store.get_historical_features(
                entity_df=entities, features=store.get_feature_service(FEATURE_SERVICE)
            )
            joined = job.to_arrow().sort_by(JOIN_KEY)
        finally:
            ibis.options.default_backend = previous
            engine.disconnect()
    for batch in joined.to_batches(max_chunksize=rows):
        yield batch.to_pandas()


def read_online(store: FeatureStore, user_ids: list[str]) -> pd.DataFrame:
    """The online features of users through `churn_model_v1`; unknown users come back all null."""
    response = store.get_online_features(
        features=store.get_feature_service(FEATURE_SERVICE),
        entity_rows=[{JOIN_KEY: user_id} for user_id in user_ids],
    )
    return pd.DataFrame(response.to_dict())
