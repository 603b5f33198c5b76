"""Dagster resources; `build_resources` is the one place a profile picks its implementations."""

from dagster import ConfigurableResource

from streamflow_assets.core.settings import Settings
from streamflow_assets.resources.features import FeatureStoreResource
from streamflow_assets.resources.mlflow import MlflowTracking, ModelRegistryResource
from streamflow_assets.resources.seeds import SeedsResource
from streamflow_assets.resources.storage import ParquetSnapshots, SnapshotsResource

__all__ = [
    "FeatureStoreResource",
    "MlflowTracking",
    "ModelRegistryResource",
    "SeedsResource",
    "SnapshotsResource",
    "build_resources",
]


def build_resources(settings: Settings) -> dict[str, ConfigurableResource]:
    if settings.profile != "local":
        raise NotImplementedError(f"profile {settings.profile!r} is not available yet")
    return {
        "seeds": SeedsResource(seeds_dir=str(settings.seeds_dir)),
        "snapshots": ParquetSnapshots(root=str(settings.snapshots_dir)),
        "feature_store": FeatureStoreResource(feature_repo=str(settings.feature_repo)),
        "mlflow": MlflowTracking(
            tracking_uri=settings.tracking_uri,
            artifact_location=settings.mlflow_artifact_location,
        ),
        "model_registry": ModelRegistryResource(tracking_uri=settings.tracking_uri),
    }
