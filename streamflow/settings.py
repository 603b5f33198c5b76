"""Every StreamFlow setting, read once from `STREAMFLOW_*` environment variables."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamflow.domain.promotion import CHAMPION_URI

Profile = Literal["local", "postgres", "cluster"]
AlertSink = Literal["jsonl", "webhook", "log"]
RetrainPolicy = Literal["monthly", "on_trigger"]
REPO_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    """Where StreamFlow keeps its state and which stores it uses.

    The `local` profile keeps every store under `data_dir`, so two data dirs never share state.
    """

    model_config = SettingsConfigDict(env_prefix="STREAMFLOW_", extra="ignore")

    profile: Profile = "local"
    data_dir: Path = Path("var")
    seeds_dir: Path = Path("data/seeds")
    feature_repo: Path = REPO_ROOT / "feature_repo"
    # MLflow tracking and registry; by default a SQLite file under the data dir.
    mlflow_tracking_uri: str | None = None
    # A candidate must beat the champion's AUC by this much to take its place, and score at
    # least the floor on the month's online features before promotion is even considered.
    promotion_margin: float = 0.01
    promotion_auc_floor: float = 0.6
    # Monitoring: `monthly` trains a candidate every month; `on_trigger` trains one only when a
    # month's drift share reaches `drift_share` (Evidently's dataset-drift default), the champion's
    # AUC drops by more than `decay_max_auc_drop` on the month's labels, the champion is older
    # than `retrain_max_age_months`, or there is no champion yet.
    retrain: RetrainPolicy = "monthly"
    drift_share: float = Field(default=0.5, gt=0, le=1)
    decay_max_auc_drop: float = 0.05
    retrain_max_age_months: int = Field(default=3, ge=0)
    # What a step holds of a month at once: the fit's stratified sample of at most
    # `train_max_rows` training rows, and `chunk_rows` rows read and scored at a time by the
    # held-out comparison, batch scoring and monitoring. At 1M users a fit on 400,000 rows ranks
    # the held-out month as the fit on all 750,000 does (AUC 0.8306 both: bench/reports/
    # train_cap.md); past the cap the fit's memory and time stop growing with the users.
    train_max_rows: int = Field(default=500_000, ge=1_000)
    chunk_rows: int = Field(default=200_000, ge=1_000)
    # The `postgres` profile: snapshot and training tables and Feast's offline store, online
    # store and registry in one database; MLflow is a tracking server (with its own database).
    postgres_host: str = "127.0.0.1"
    postgres_port: int = 5432
    postgres_user: str = "postgres"
    postgres_password: SecretStr = SecretStr("")
    postgres_db: str = "streamflow"
    # The `cluster` profile: the postgres profile's stores, Feast's online store in Redis, and
    # Dagster steps on dagster-celery workers fed through RabbitMQ (results in Redis).
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_db: int = 0
    # A read or write that gets no answer in this time fails (a down or cut Redis), not hangs.
    redis_timeout_seconds: float = 2.0
    celery_broker: str = "amqp://guest:guest@127.0.0.1:5672//"
    celery_backend: str | None = None
    # A worker's pool process that holds more than this after a step is replaced by a fresh one
    # (celery's worker_max_memory_per_child), so a worker returns to its baseline instead of
    # keeping what its last step read; under it, the process keeps its imports for the next step.
    celery_worker_max_memory_mb: int = Field(default=600, gt=0)

    @field_validator("data_dir", "seeds_dir", "feature_repo")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        # Feast and MLflow resolve relative paths against their own working dirs; pin them once.
        return path.expanduser().resolve()

    # Freshness: the previous month must be online by the deadline (cron, UTC); the checks run on
    # their own schedule (cron). A maximum age against the wall clock is off by default, because
    # historical seeds such as the real ones are years old.
    freshness_deadline_cron: str = "0 6 2 * *"
    freshness_schedule_cron: str = "0 * * * *"
    freshness_sample_size: int = 500
    freshness_stale_fraction_warn: float = 0.01
    freshness_max_age_days: float | None = None
    # Alerts go to a webhook when its URL is set (Slack-compatible), else to `alerts.jsonl` under
    # the data dir; `alert_sink` forces one (`jsonl`, `webhook` or `log`). Links point at the UI.
    alert_sink: AlertSink | None = None
    alert_webhook_url: SecretStr | None = None
    alert_webhook_timeout_seconds: float = 5.0
    alert_webhook_retries: int = 3
    alert_webhook_backoff_seconds: float = 1.0
    dagster_ui_url: str = "http://127.0.0.1:3000"
    # The MLflow UI that artifact links (the drift report) open in; by default the tracking server
    # when there is one. The local profile has none unless `make mlflow` serves its database.
    mlflow_ui_url: str | None = None

    @field_validator(
        "freshness_max_age_days", "alert_sink", "alert_webhook_url", "mlflow_ui_url", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Compose passes an unset `${VAR:-}` on as an empty string, which means "not set".
        return None if value == "" else value

    @property
    def alert_destination(self) -> AlertSink:
        if self.alert_sink:
            return self.alert_sink
        return "webhook" if self.alert_webhook_url else "jsonl"

    @property
    def alerts_path(self) -> Path:
        return self.data_dir / "alerts.jsonl"

    @property
    def dagster_home(self) -> Path:
        return self.data_dir / "dagster"

    @property
    def snapshots_dir(self) -> Path:
        return self.data_dir / "snapshots"

    @property
    def feast_dir(self) -> Path:
        return self.data_dir / "feast"

    @property
    def feature_store_yaml(self) -> Path:
        name = (
            "feature_store.yaml"
            if self.profile == "local"
            else f"feature_store.{self.profile}.yaml"
        )
        return self.feature_repo / name

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        if self.uses_postgres:
            return "http://127.0.0.1:5000"
        return f"sqlite:///{self.data_dir / 'mlflow' / 'mlflow.db'}"

    @property
    def mlflow_ui(self) -> str | None:
        if self.mlflow_ui_url:
            return self.mlflow_ui_url
        return self.tracking_uri if self.tracking_uri.startswith(("http://", "https://")) else None

    @property
    def mlflow_artifact_location(self) -> str | None:
        """Where a new experiment keeps its artifacts; None lets a tracking server decide.

        Without a server (a database URI) MLflow would default to `./mlruns` of the working dir.
        """
        if self.tracking_uri.startswith(("http://", "https://")):
            return None
        return (self.data_dir / "mlflow" / "artifacts").as_uri()

    @property
    def uses_postgres(self) -> bool:
        """Snapshots, Feast's offline store and registry in PostgreSQL (postgres and cluster)."""
        return self.profile in ("postgres", "cluster")

    @property
    def celery_results(self) -> str:
        """Where celery workers put each step's events for the run: Redis, unless set."""
        return self.celery_backend or f"redis://{self.redis_host}:{self.redis_port}/{self.redis_db}"

    def feast_env(self) -> dict[str, str]:
        """The variables `feature_store.yaml` refers to, so the `feast` CLI sees the same stores."""
        return {
            "STREAMFLOW_DATA_DIR": str(self.data_dir),
            "STREAMFLOW_POSTGRES_HOST": self.postgres_host,
            "STREAMFLOW_POSTGRES_PORT": str(self.postgres_port),
            "STREAMFLOW_POSTGRES_USER": self.postgres_user,
            "STREAMFLOW_POSTGRES_PASSWORD": self.postgres_password.get_secret_value(),
            "STREAMFLOW_POSTGRES_DB": self.postgres_db,
            "STREAMFLOW_REDIS_HOST": self.redis_host,
            "STREAMFLOW_REDIS_PORT": str(self.redis_port),
            "STREAMFLOW_REDIS_DB": str(self.redis_db),
            "STREAMFLOW_REDIS_TIMEOUT_SECONDS": str(self.redis_timeout_seconds),
        }


@lru_cache
def get_settings() -> Settings:
    return Settings()


class ServingSettings(Settings):
    """Everything `streamflow serve` reads, from the same `STREAMFLOW_*` variables as the rest.

    The stores (data dir, feature repo, MLflow tracking URI, profile) come from `Settings`, so the
    server reads exactly what the pipeline wrote.
    """

    model_config = SettingsConfigDict(env_prefix="STREAMFLOW_", extra="ignore")

    # `models:/<name>@<alias>` (the champion alias by default), `models:/<name>/<version>`, or a
    # legacy `models:/<name>/<stage>`.
    model_uri: str = CHAMPION_URI
    # Features whose event time is older than this (against the wall clock) are stale. Off by
    # default, as for the freshness checks: historical seeds such as the real ones are years old.
    max_feature_age_days: float | None = Field(default=None, gt=0)
    # Refuse (409) a prediction on stale features instead of flagging it `stale: true`.
    strict_freshness: bool = False
    # How often the registry is asked which version `model_uri` points at; 0 turns polling off.
    reload_interval_seconds: float = Field(default=30.0, ge=0)
    # A poll must not hang on an unreachable tracking server: MLflow's HTTP client would
    # otherwise retry with backoff for minutes.
    registry_timeout_seconds: int = Field(default=5, ge=1)
    registry_retries: int = Field(default=0, ge=0)
    batch_max_users: int = Field(default=1000, ge=1)
    # Request bodies over this many bytes get 413, counted while they stream in (a declared
    # Content-Length over it is refused before any of the body is read).
    max_body_bytes: int = Field(default=1 << 20, ge=0)
    serve_host: str = "127.0.0.1"
    serve_port: int = 8000
    # uvicorn's bounds on what clients can hold: past this many open connections or running
    # requests it answers 503 at once rather than letting them pile up; idle keep-alive
    # connections close after the timeout. Stalled clients hold only a socket each, so the
    # concurrency limit sits well above the connections a burst of slow clients opens.
    serve_limit_concurrency: int = Field(default=2048, ge=1)
    serve_backlog: int = Field(default=2048, ge=1)
    serve_timeout_keep_alive_seconds: int = Field(default=5, ge=1)
    # The page cache of the SQLite online store's connection (local profile): it holds the
    # indexes' upper levels and recently read users; 0 keeps SQLite's 2 MiB.
    serve_sqlite_cache_mib: int = Field(default=16, ge=0)
    # Off by default: the metrics count every request, and a log line per request costs about
    # as much as a prediction.
    serve_access_log: bool = False
    # The prediction log: every answer, written in batches off the request path to the profile's
    # store (local: data_dir/serving/predictions.sqlite; postgres, cluster: table
    # prediction_log). At most `prediction_log_queue_size` answers wait in memory (a full queue
    # drops and counts); every `prediction_log_flush_seconds` what is queued is written, in
    # transactions of at most `prediction_log_batch_size` answers. Rows older than the retention
    # are deleted (no retention: kept forever); the features themselves are kept only when asked.
    prediction_log: bool = True
    prediction_log_queue_size: int = Field(default=20_000, ge=1)
    prediction_log_batch_size: int = Field(default=2_000, ge=1)
    prediction_log_flush_seconds: float = Field(default=1.0, gt=0)
    prediction_log_retention_days: float | None = Field(default=90.0, gt=0)
    prediction_log_features: bool = False
    # A shadow challenger (e.g. `models:/streamflow_churn@challenger`) scored by the log's writer
    # on this share of requests, hot-reloaded like the served model; its answers only go to the
    # log, never to the client.
    shadow_model_uri: str | None = None
    shadow_fraction: float = Field(default=0.1, ge=0, le=1)

    @field_validator("prediction_log_retention_days", "shadow_model_uri", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def prediction_log_retention(self) -> timedelta | None:
        if self.prediction_log_retention_days is None:
            return None
        return timedelta(days=self.prediction_log_retention_days)

    @property
    def max_feature_age(self) -> timedelta | None:
        if self.max_feature_age_days is None:
            return None
        return timedelta(days=self.max_feature_age_days)


@lru_cache
def get_serving_settings() -> ServingSettings:
    return ServingSettings()
