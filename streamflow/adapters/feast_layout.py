"""How Feast (0.67.0) lays out and reaches its online stores: the one module that knows.

StreamFlow writes and reads the online stores directly where Feast's SDK is too slow for it (the
guarded month writes, /predict's one round trip), so it must agree with Feast byte for byte on
the entity key, a view's table, a feature's Redis hash field, and how a PostgreSQL connection is
opened from the store's config. Feast has no public API for these: the private helpers are used
here and only here, and the tests that compare our reads and writes with Feast's own catch a
change of layout on an upgrade.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from feast.infra.key_encoding_utils import serialize_entity_key

# Private, kept on purpose (Feast 0.67.0): the hash Feast's Redis store names a feature's field
# with, and the view name it prefixes (versioned); no public equivalent.
from feast.infra.online_stores.helpers import _mmh3, compute_table_id
from feast.infra.online_stores.redis import _versioned_fv_name

# Private, kept on purpose (Feast 0.67.0): the functions that open a connection with the store
# config's own settings (sslmode, keepalives, timeouts); Feast has no public ones.
from feast.infra.utils.postgres.connection_utils import _get_conn as connect
from feast.infra.utils.postgres.connection_utils import _get_conn_async as connect_async
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from streamflow.domain.features import JOIN_KEY

if TYPE_CHECKING:
    from feast.feature_view import FeatureView
    from feast.repo_config import RepoConfig

__all__ = [
    "connect",
    "connect_async",
    "entity_key",
    "quote_id",
    "redis_field",
    "redis_view_name",
    "serialized_key",
    "table_name",
]


def entity_key(user_id: str) -> EntityKeyProto:
    return EntityKeyProto(join_keys=[JOIN_KEY], entity_values=[ValueProto(string_val=user_id)])


def serialized_key(user_id: str, version: int) -> bytes:
    """A user's entity key as the stores hold it (the row key, the Redis key's prefix)."""
    return serialize_entity_key(entity_key(user_id), entity_key_serialization_version=version)


def table_name(config: RepoConfig, view: FeatureView) -> str:
    """A view's table in the SQL online stores (SQLite, PostgreSQL)."""
    return compute_table_id(
        config.project, view, config.registry.enable_online_feature_view_versioning
    )


def quote_id(identifier: str) -> str:
    """A SQL identifier in double quotes, embedded quotes doubled (as Feast's stores quote)."""
    return '"' + identifier.replace('"', '""') + '"'


def redis_view_name(config: RepoConfig, view: FeatureView) -> str:
    """The view's name in its Redis hash fields (`_ts:<name>`, the features' hashes)."""
    return _versioned_fv_name(view, config)


def redis_field(view_name: str, feature: str) -> bytes:
    """A feature's field in a user's Redis hash."""
    return _mmh3(f"{view_name}:{feature}")
