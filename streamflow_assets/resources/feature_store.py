"""The Feast feature store of the active profile."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dagster import ConfigurableResource, EnvVar

from streamflow.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureStore

PASSWORD = "STREAMFLOW_POSTGRES_PASSWORD"


class FeatureStoreResource(ConfigurableResource):
    """Opens the Feast store of the profile: its feature_store yaml in `feature_repo`, the
    `${VAR}`s it names filled from `variables` (the password from the environment, by name)."""

    feature_repo: str
    config_file: str
    feast_dir: str
    variables: dict[str, str]
    postgres_password: str = ""

    @classmethod
    def of(cls, settings: Settings) -> FeatureStoreResource:
        variables = settings.feast_env()
        secret = variables.pop(PASSWORD)
        return cls(
            feature_repo=str(settings.feature_repo),
            config_file=str(settings.feature_store_yaml),
            feast_dir=str(settings.feast_dir),
            variables=variables,
            # Shown in the UI as the variable's name, never as its value.
            postgres_password=EnvVar(PASSWORD) if secret else "",
        )

    def open(self) -> FeatureStore:
        # Feast is imported by the step that opens the store: the code location's processes,
        # which only serve its definitions, never need it.
        from streamflow.adapters.feature_store import open_repo

        variables = self.variables | {PASSWORD: self.postgres_password}
        return open_repo(
            Path(self.config_file), Path(self.feature_repo), Path(self.feast_dir), variables
        )
