"""What the running API holds: settings, metrics, the feature reader and the model manager."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from serving.metrics import ServingMetrics
from serving.model import ModelManager, ModelUri, describe
from serving.online_features import OnlineFeatureReader, OnlineStoreUnavailable
from streamflow.adapters.feature_store import open_store
from streamflow.settings import ServingSettings

log = logging.getLogger(__name__)

# A user id no store holds: reading it opens the online store's connection and tables.
_PROBE_USER = "streamflow-readiness-probe"


@dataclass
class ServingState:
    """Loaded in `lifespan`, refreshed by the background poll, read by every request."""

    settings: ServingSettings
    metrics: ServingMetrics
    models: ModelManager
    features: OnlineFeatureReader | None = None
    features_error: str | None = "feature store not opened yet"

    @classmethod
    def create(cls, settings: ServingSettings, metrics: ServingMetrics) -> ServingState:
        # MLflow's HTTP client reads its retry policy from the environment; without a bound a
        # poll of a stopped tracking server retries with backoff for minutes.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(settings.registry_retries))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(settings.registry_timeout_seconds))
        client = MlflowClient(
            tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri
        )
        return cls(settings, metrics, ModelManager(ModelUri.parse(settings.model_uri), client))

    def open_features(self) -> None:
        try:
            reader = OnlineFeatureReader(
                open_store(self.settings), sqlite_cache_mib=self.settings.serve_sqlite_cache_mib
            )
            reader.read([_PROBE_USER])
        # Whatever keeps the store from opening (no registry yet, no online tables, a bad yaml)
        # must not keep the API from starting: /ready reports it and the next poll retries.
        except Exception as error:
            log.exception("feature store not available")
            self.features_error = describe(error)
            return
        self.features, self.features_error = reader, None

    def refresh(self) -> None:
        """Open the feature store if it is not yet, and poll the registry. Blocking."""
        if self.features is None:
            self.open_features()
        attempt = self.models.refresh()
        if attempt is not None:
            self.metrics.model_load_attempted(attempt)
        self.metrics.model_polled(self.models.current, self.models.status)

    @property
    def not_ready_reason(self) -> str | None:
        """Why the API cannot answer /predict from what it holds, or None."""
        reasons = []
        if self.models.current is None:
            reasons.append(f"model not loaded: {self.models.status.last_error or 'loading'}")
        if self.features is None:
            reasons.append(f"feature store not available: {self.features_error}")
        return "; ".join(reasons) or None

    def probe(self) -> str | None:
        """`not_ready_reason`, or else whether the online store answers a read right now."""
        reason = self.not_ready_reason
        if reason is None and self.features is not None:
            try:
                self.features.read([_PROBE_USER])
            except OnlineStoreUnavailable as error:
                return str(error)
        return reason
