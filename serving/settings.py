"""The API's settings: the shared StreamFlow settings plus model, freshness and reload options."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from streamflow.adapters.registry import CHAMPION_URI
from streamflow.settings import Settings


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

    @property
    def max_feature_age(self) -> timedelta | None:
        if self.max_feature_age_days is None:
            return None
        return timedelta(days=self.max_feature_age_days)


@lru_cache
def get_serving_settings() -> ServingSettings:
    return ServingSettings()
