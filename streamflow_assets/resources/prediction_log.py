"""The prediction log the API writes, as the monitoring assets read it."""

from pathlib import Path

from dagster import ConfigurableResource
from psycopg import conninfo

from streamflow.adapters.prediction_log import (
    PostgresPredictionLog,
    PredictionLog,
    SqlitePredictionLog,
)


class PredictionLogResource(ConfigurableResource):
    """Where the API logs its answers; subclasses bind one backend."""

    def log(self) -> PredictionLog:
        raise NotImplementedError


class SqlitePredictionLogs(PredictionLogResource):
    """Local profile: the SQLite file under the data dir."""

    path: str

    def log(self) -> PredictionLog:
        return SqlitePredictionLog(Path(self.path))


class PostgresPredictionLogs(PredictionLogResource):
    """Postgres and cluster profiles: the `prediction_log` table of the profile's database."""

    host: str
    port: int
    user: str
    # An EnvVar when set, so that the Dagster UI shows the variable's name, not the secret.
    password: str
    database: str

    def log(self) -> PredictionLog:
        return PostgresPredictionLog(
            conninfo.make_conninfo(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self.password,
                dbname=self.database,
            )
        )
