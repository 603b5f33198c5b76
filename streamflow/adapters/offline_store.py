"""Feast's PostgreSQL offline store with a point-in-time join PostgreSQL runs in one pass.

Feast's own query (Feast 0.67.0) joins each view's snapshots inside the TTL with every entity row
on a text key (`user_id || timestamp`), materializes that, sorts it for `ROW_NUMBER()`, joins it
back and then joins the views on the text key: 80.9 s against DuckDB's 25.0 s at 100k users,
908 MB spilled, and with statistics a 5k-user join turned into nested loops over its CTEs (2.3 s
-> 113 s; bench/reports/pit_join.md). It also inserts the entity frame row by row and builds the
result in Python a value at a time.

Here each entity row looks up, per view, the newest snapshot row at or before its timestamp and
not older than the TTL (both bounds inclusive, as Feast's stores have them): a `LATERAL` subquery
`ORDER BY timestamp DESC LIMIT 1` that the snapshot tables' primary key (user_id, as_of) answers
with one backward index probe. A `LATERAL ... LIMIT 1` can only run as a nested loop over that
probe, so the plan does not depend on statistics. The entity frame goes in by `COPY` and the
result comes out by `COPY`, parsed by pyarrow. Entity frames given as SQL, and retrieval without
an entity frame, keep Feast's own query.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
from feast.feature_view import FeatureView
from feast.infra.offline_stores import offline_utils
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres import (
    PostgreSQLOfflineStore,
    PostgreSQLOfflineStoreConfig,
    PostgreSQLRetrievalJob,
)
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import RepoConfig
from psycopg import Connection, sql

from streamflow.adapters.feast_layout import connect

# The snapshot store's own COPY codecs, so that a column reads back here as it does there.
from streamflow.adapters.snapshots import (
    ARROW_TYPES,
    COPY_CHUNK_ROWS,
    CopyStream,
    column_spec,
    copy_csv,
    copy_from_csv,
    parse_csv,
)


class LateralJoinPostgreSQLOfflineStoreConfig(PostgreSQLOfflineStoreConfig):
    type: Literal["streamflow.adapters.offline_store.LateralJoinPostgreSQLOfflineStore"] = (  # type: ignore[assignment]
        "streamflow.adapters.offline_store.LateralJoinPostgreSQLOfflineStore"
    )


class LateralJoinPostgreSQLOfflineStore(PostgreSQLOfflineStore):
    """Feast's PostgreSQL offline store, its entity-frame point-in-time join one index probe per
    entity row and view."""

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: pd.DataFrame | str | None,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
        **kwargs: Any,
    ) -> RetrievalJob:
        if not isinstance(entity_df, pd.DataFrame):
            return PostgreSQLOfflineStore.get_historical_features(
                config,
                feature_views,
                feature_refs,
                entity_df,
                registry,
                project,
                full_feature_names,
                filter_by_created_timestamp,
                **kwargs,
            )
        schema = dict(zip(entity_df.columns, entity_df.dtypes, strict=True))
        timestamp = offline_utils.infer_event_timestamp_from_entity_df(schema)
        keys = offline_utils.get_expected_join_keys(project, feature_views, registry)
        offline_utils.assert_expected_columns_in_entity_df(schema, keys, timestamp)
        # Feast reads a naive entity timestamp as UTC; the table stores it as timestamptz.
        entities = entity_df.assign(**{timestamp: pd.to_datetime(entity_df[timestamp], utc=True)})
        when = entities[timestamp]
        span = (when.min().to_pydatetime(), when.max().to_pydatetime())
        contexts = offline_utils.get_feature_view_query_context(
            feature_refs, feature_views, registry, project, span
        )

        @contextlib.contextmanager
        def query() -> Iterator[str]:
            table = offline_utils.get_temp_entity_table_name()
            _upload(config, entities, table)
            try:
                yield _lateral_join(
                    contexts,
                    table,
                    list(entities.columns),
                    timestamp,
                    full_feature_names,
                    filter_by_created_timestamp,
                )
            finally:
                with connect(config.offline_store) as conn:
                    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))

        return CopyRetrievalJob(
            query=query,
            config=config,
            full_feature_names=full_feature_names,
            on_demand_feature_views=OnDemandFeatureView.get_requested_odfvs(
                feature_refs, project, registry
            ),
            metadata=RetrievalMetadata(
                features=feature_refs,
                keys=[column for column in entities.columns if column != timestamp],
                min_event_timestamp=span[0],
                max_event_timestamp=span[1],
            ),
        )


class CopyRetrievalJob(PostgreSQLRetrievalJob):
    """Feast's PostgreSQL retrieval job, its result read by `COPY` instead of value by value."""

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        # `_query_generator` is the parent's (Feast 0.67.0): it uploads the entity frame for the
        # query's lifetime, as to_sql() and persist() use it too.
        with (
            self._query_generator() as query,
            connect(self.config.offline_store) as conn,
        ):
            conn.read_only = True
            columns = _result_columns(conn, query)
            copy_sql = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv)").format(sql.SQL(query))
            with conn.cursor().copy(copy_sql) as copy:
                stream = CopyStream(copy)
                if stream.at_end():
                    return pa.schema([(n, ARROW_TYPES[k]) for n, k, _ in columns]).empty_table()
                frame = parse_csv(stream, columns)
        # Without pandas' metadata, to_df() gives Feast's dtypes (e.g. bool, not pandas' boolean).
        return pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)


def _upload(config: RepoConfig, entities: pd.DataFrame, table: str) -> None:
    """The entity frame as an unlogged table (it lives for one query), sent by `COPY`."""
    columns = [(column, column_spec(entities[column])[0]) for column in entities.columns]
    with connect(config.offline_store) as conn:
        conn.execute(
            sql.SQL("CREATE UNLOGGED TABLE {} ({})").format(
                sql.Identifier(table),
                sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(column), sql.SQL(kind))
                    for column, kind in columns
                ),
            )
        )
        with conn.cursor().copy(copy_from_csv(table, list(entities.columns))) as copy:
            for start in range(0, len(entities), COPY_CHUNK_ROWS):
                copy.write(copy_csv(entities.iloc[start : start + COPY_CHUNK_ROWS]))


def _lateral_join(
    contexts: list[offline_utils.FeatureViewQueryContext],
    entity_table: str,
    entity_columns: list[str],
    timestamp: str,
    full_feature_names: bool,
    filter_by_created_timestamp: bool,
) -> str:
    """Every entity row with, per view, its newest row at or before the entity's timestamp and
    within the view's TTL (none: NULLs), the entity frame's columns first as Feast returns them."""
    entity = sql.Identifier("entity")
    at = _of(entity, timestamp)
    outputs = [_of(entity, column) for column in entity_columns]
    joins = []
    for index, view in enumerate(contexts):
        alias, row = sql.Identifier(f"view_{index}"), sql.Identifier("row")
        stamp = _of(row, view.timestamp_field)
        conditions = [sql.SQL("{} <= {}").format(stamp, at)]
        if view.ttl:
            conditions.append(
                sql.SQL("{} >= {} - make_interval(secs => {})").format(
                    stamp, at, sql.Literal(view.ttl)
                )
            )
        order = [sql.SQL("{} DESC").format(stamp)]
        if view.created_timestamp_column:
            created = _of(row, view.created_timestamp_column)
            order.append(sql.SQL("{} DESC").format(created))
            if filter_by_created_timestamp:
                conditions.append(sql.SQL("{} <= {}").format(created, at))
        # Feast's selections read "<source column> AS <entity frame column>".
        for selection in view.entity_selections:
            source, key = selection.split(" AS ")
            conditions.append(sql.SQL("{} = {}").format(_of(row, source), _of(entity, key)))
        selected = []
        for feature in view.features:
            shown = view.field_mapping.get(feature, feature)
            name = f"{view.name}__{shown}" if full_feature_names else shown
            selected.append(sql.SQL("{} AS {}").format(_of(row, feature), sql.Identifier(name)))
            outputs.append(_of(alias, name))
        joins.append(
            sql.SQL(
                "LEFT JOIN LATERAL (SELECT {} FROM {} AS {} WHERE {} ORDER BY {} LIMIT 1) AS {} "
                "ON TRUE"
            ).format(
                sql.SQL(", ").join(selected),
                sql.SQL(view.table_subquery),
                row,
                sql.SQL(" AND ").join(conditions),
                sql.SQL(", ").join(order),
                alias,
            )
        )
    query = sql.SQL("SELECT {} FROM {} AS {} {}").format(
        sql.SQL(", ").join(outputs),
        sql.Identifier(entity_table),
        entity,
        sql.SQL(" ").join(joins),
    )
    return query.as_string()


def _of(table: sql.Identifier, column: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(table, sql.Identifier(column))


def _result_columns(conn: Connection, query: str) -> list[tuple[str, str, bool]]:
    """(name, Postgres type, nullable) of the query's columns, from its description; a type the
    snapshot store's codec does not parse is refused rather than returned as text."""
    described = conn.execute(
        sql.SQL("SELECT * FROM ({}) AS result LIMIT 0").format(sql.SQL(query))
    ).description
    assert described is not None
    kinds = conn.execute(
        "SELECT format_type(oid, NULL) FROM unnest(%s::oid[]) WITH ORDINALITY AS t(oid, n) "
        "ORDER BY n",
        ([column.type_code for column in described],),
    ).fetchall()
    columns = [(column.name, kind, True) for column, (kind,) in zip(described, kinds, strict=True)]
    if unread := [f"{name} {kind}" for name, kind, _ in columns if kind not in ARROW_TYPES]:
        raise TypeError(f"no reader for the offline store's result columns: {', '.join(unread)}")
    return columns
