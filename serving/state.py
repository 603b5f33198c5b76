"""What the running API holds: settings, metrics, the feature reader and the model manager."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from serving.metrics import ServingMetrics
from serving.model import ModelManager, ModelUri, describe
from serving.online_features import OnlineFeatureReader, OnlineStoreUnavailable
from serving.prediction_log import PredictionLogger
from streamflow.adapters.feature_store import open_store
from streamflow.adapters.prediction_log import open_prediction_log
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
    prediction_log: PredictionLogger | None = None
    # The shadow challenger, when `shadow_model_uri` is set: polled with the served model.
    shadow: ModelManager | None = None

    @classmethod
    def create(cls, settings: ServingSettings, metrics: ServingMetrics) -> ServingState:
        # MLflow's HTTP client reads its retry policy from the environment; without a bound a
        # poll of a stopped tracking server retries with backoff for minutes.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(settings.registry_retries))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(settings.registry_timeout_seconds))
        client = MlflowClient(
            tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri
        )
        state = cls(settings, metrics, ModelManager(ModelUri.parse(settings.model_uri), client))
        if settings.shadow_model_uri:
            state.shadow = ModelManager(ModelUri.parse(settings.shadow_model_uri), client)
        if settings.prediction_log:
            state.prediction_log = PredictionLogger(
                open_prediction_log(settings),
                metrics,
                capacity=settings.prediction_log_queue_size,
                batch_size=settings.prediction_log_batch_size,
                flush_seconds=settings.prediction_log_flush_seconds,
                retention=settings.prediction_log_retention,
                keep_features=settings.prediction_log_features,
                shadow_fraction=settings.shadow_fraction if state.shadow is not None else 0.0,
            )
        return state

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
        if self.shadow is not None:
            self.shadow.refresh()
            if self.prediction_log is not None:
                # A challenger alias removed (its candidate promoted) ends the shadowing.
                pointed = self.shadow.status.points_at is not None
                self.prediction_log.shadow = self.shadow.current if pointed else None

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
