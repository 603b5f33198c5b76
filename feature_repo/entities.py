"""The entity every StreamFlow feature describes: a subscriber, joined on `user_id`."""

from feast import Entity, ValueType

from streamflow.domain.features import ENTITY, JOIN_KEY

user = Entity(
    name=ENTITY,
    join_keys=[JOIN_KEY],
    value_type=ValueType.STRING,
    description="A subscriber of the streaming service.",
)
