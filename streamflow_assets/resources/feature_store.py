"""The Feast feature store of the active profile."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dagster import ConfigurableResource

from streamflow.settings import get_settings

if TYPE_CHECKING:
    from feast import FeatureStore


class FeatureStoreResource(ConfigurableResource):
    """Opens the Feast store described by the profile's feature_store.yaml in `feature_repo`."""

    feature_repo: str

    def open(self) -> FeatureStore:
        # Feast is imported by the step that opens the store: the code location's processes,
        # which only serve its definitions, never need it.
        from streamflow.adapters.feature_store import open_store

        settings = get_settings().model_copy(update={"feature_repo": Path(self.feature_repo)})
        return open_store(settings)
