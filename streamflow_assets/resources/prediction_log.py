"""The prediction log the API writes, as the monitoring assets read it."""

from pathlib import Path

from dagster import ConfigurableResource

from streamflow.adapters.prediction_log import (
    PostgresPredictionLog,
    PredictionLog,
    SqlitePredictionLog,
)
from streamflow_assets.resources.storage import PostgresDatabase


class PredictionLogResource(ConfigurableResource):
    """Where the API logs its answers; subclasses bind one backend."""

    def log(self) -> PredictionLog:
        raise NotImplementedError


class SqlitePredictionLogs(PredictionLogResource):
    """Local profile: the SQLite file under the data dir."""

    path: str

    def log(self) -> PredictionLog:
        return SqlitePredictionLog(Path(self.path))


class PostgresPredictionLogs(PredictionLogResource, PostgresDatabase):
    """Postgres and cluster profiles: the `prediction_log` table of the profile's database."""

    def log(self) -> PredictionLog:
        return PostgresPredictionLog(self.dsn())
