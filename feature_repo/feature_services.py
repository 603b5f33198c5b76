"""The versioned feature service the churn model is trained on and served from."""

from feast import FeatureService

from streamflow.domain.features import FEATURE_SERVICE

from feature_views import views

churn_model_v1 = FeatureService(
    name=FEATURE_SERVICE,
    features=list(views.values()),
    description="The 14 features of the churn model, version 1.",
    tags={"model": "streamflow_churn"},
)
