"""The Feast feature store of the active profile."""

from pathlib import Path

from dagster import ConfigurableResource
from feast import FeatureStore

from streamflow_assets.core.feature_store import open_store
from streamflow_assets.core.settings import get_settings


class FeatureStoreResource(ConfigurableResource):
    """Opens the Feast store described by the profile's feature_store.yaml in `feature_repo`."""

    feature_repo: str

    def open(self) -> FeatureStore:
        settings = get_settings().model_copy(update={"feature_repo": Path(self.feature_repo)})
        return open_store(settings)
