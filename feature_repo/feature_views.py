"""The four feature views of the churn model, built from the shared feature spec."""

from feast import FeatureView, Field
from feast.types import Bool, Float32, Int64, String

from streamflow.domain.features import FEATURE_TTL, FEATURE_VIEWS

from data_sources import sources
from entities import user

_TYPES = {"Int64": Int64, "Float32": Float32, "Bool": Bool, "String": String}


def _feature_view(spec) -> FeatureView:
    return FeatureView(
        name=spec.name,
        entities=[user],
        ttl=FEATURE_TTL,
        schema=[Field(name=f.name, dtype=_TYPES[f.dtype]) for f in spec.features],
        source=sources[spec.source_table],
        online=True,
        tags={"source_table": spec.source_table},
    )


views = {spec.name: _feature_view(spec) for spec in FEATURE_VIEWS}
subs_profile_fv = views["subs_profile"]
usage_agg_30d_fv = views["usage_agg_30d"]
payments_agg_90d_fv = views["payments_agg_90d"]
support_agg_90d_fv = views["support_agg_90d"]
