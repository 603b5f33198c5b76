"""The served model: which registry version a model URI means, loading it, swapping in new ones."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from mlflow.artifacts import download_artifacts
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from requests import RequestException

from streamflow.adapters.onnx_model import ONNX_FILE, CompiledModel
from streamflow.domain.features import FEATURE_NAMES, FEATURE_SERVICE, model_inputs

log = logging.getLogger(__name__)

# Where the training asset puts the compiled forest inside the logged model (`extra_files`).
ONNX_ARTIFACT = f"extra_files/{ONNX_FILE}"
# The threshold the registered validation metrics (f1, accuracy, precision, recall) are taken at.
DECISION_THRESHOLD = 0.5
# A registry outage shows up as one of these; anything else is a bug and is logged with its trace.
REGISTRY_ERRORS = (MlflowException, RequestException, OSError)


@dataclass(frozen=True)
class ModelUri:
    """A parsed `models:/` URI: a name and exactly one of stage, alias or version."""

    uri: str
    name: str
    stage: str | None = None
    alias: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, uri: str) -> ModelUri:
        prefix = "models:/"
        if not uri.startswith(prefix):
            raise ValueError(f"model URI {uri!r} is not a models:/ URI")
        path = uri[len(prefix) :]
        if "@" in path:
            name, alias = path.split("@", 1)
            if name and alias and "/" not in path:
                return cls(uri, name, alias=alias)
        else:
            name, _, suffix = path.partition("/")
            if name and suffix and "/" not in suffix:
                if suffix.isdigit():
                    return cls(uri, name, version=suffix)
                return cls(uri, name, stage=suffix)
        raise ValueError(
            f"model URI {uri!r} must be models:/<name>/<stage>, models:/<name>@<alias> "
            "or models:/<name>/<version>"
        )

    def resolve(self, client: MlflowClient) -> ModelVersion | None:
        """The version the URI points at right now, or None when it points at nothing."""
        try:
            if self.alias:
                version = client.get_registered_model(self.name).aliases.get(self.alias)
                return None if version is None else client.get_model_version(self.name, version)
            if self.version:
                return client.get_model_version(self.name, self.version)
            versions = client.get_latest_versions(self.name, stages=[self.stage])
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return versions[0] if versions else None


@dataclass(frozen=True)
class LoadedModel:
    """A compiled model version and what the API says about it; never changed once loaded."""

    compiled: CompiledModel
    name: str
    version: str
    run_id: str
    stage: str
    aliases: tuple[str, ...]
    tags: dict[str, str]
    metrics: dict[str, float]
    source: str
    loaded_at: datetime


def load_version(client: MlflowClient, version: ModelVersion) -> LoadedModel:
    """Download a version's ONNX twin only (not the pickled Pipeline) and check it can serve."""
    served_with = version.tags.get("feature_service")
    if served_with != FEATURE_SERVICE:
        raise ValueError(
            f"{version.name} v{version.version} was trained on feature service "
            f"{served_with!r}; this server reads {FEATURE_SERVICE!r}"
        )
    # Through this client's registry, not MLflow's global tracking URI.
    model_dir = client.get_model_version_download_uri(version.name, version.version)
    with tempfile.TemporaryDirectory(prefix="streamflow-model-") as scratch:
        onnx_path = download_artifacts(
            artifact_uri=f"{model_dir.rstrip('/')}/{ONNX_ARTIFACT}",
            dst_path=scratch,
            tracking_uri=client.tracking_uri,
        )
        compiled = CompiledModel(Path(onnx_path).read_bytes())
    # A user with every feature empty exercises every input: a model that does not take exactly
    # the shared features fails here, before it is swapped in, not on a request.
    (probability,) = compiled.predict_proba(model_inputs({name: [None] for name in FEATURE_NAMES}))
    if not 0.0 <= float(probability) <= 1.0 or np.isnan(probability):
        raise ValueError(f"{version.name} v{version.version} answers {probability} on a test row")
    full = client.get_model_version(version.name, version.version)
    run_metrics = client.get_run(full.run_id).data.metrics if full.run_id else {}
    return LoadedModel(
        compiled=compiled,
        name=full.name,
        version=str(full.version),
        run_id=full.run_id or "",
        stage=full.current_stage or "None",
        aliases=tuple(full.aliases or ()),
        tags=dict(full.tags),
        metrics=dict(run_metrics),
        source=full.source,
        loaded_at=datetime.now(UTC),
    )


@dataclass(frozen=True)
class ReloadStatus:
    """What the last poll of the registry found; replaced whole, so readers see one snapshot."""

    registry_reachable: bool | None = None
    last_poll_at: datetime | None = None
    last_error: str | None = None
    # The newest version the URI points at, when it failed to load and an older one serves.
    failed_version: str | None = None
    # The version the URI pointed at on the last poll that reached the registry (None: none).
    points_at: str | None = None
    reloads: int = 0
    failures: int = 0


@dataclass(frozen=True)
class LoadAttempt:
    version: str
    loaded: bool
    seconds: float


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:500]


@dataclass
class ModelManager:
    """Holds the serving model; `refresh` swaps in the version the URI points at when it changes.

    Requests read `current` once and use that object to the end, so a swap (one reference
    assignment) never mixes two versions in one response, and needs no lock.
    """

    uri: ModelUri
    client: MlflowClient
    current: LoadedModel | None = None
    status: ReloadStatus = field(default_factory=ReloadStatus)

    def refresh(self) -> LoadAttempt | None:
        """Ask the registry once; load and swap in a new version. Blocking: run it in a thread.

        Returns the load it attempted, if the URI pointed at a version other than the served one.
        """
        now = datetime.now(UTC)
        try:
            target = self.uri.resolve(self.client)
        except REGISTRY_ERRORS as error:
            log.warning("registry unreachable, serving what is loaded: %s", describe(error))
            self._set(registry_reachable=False, last_poll_at=now, last_error=describe(error))
            return None
        if target is None:
            self._set(
                registry_reachable=True,
                last_poll_at=now,
                last_error=f"{self.uri.uri} points at no version",
                points_at=None,
            )
            return None
        self._set(points_at=str(target.version))
        if self.current is not None and str(target.version) == self.current.version:
            self._set(
                registry_reachable=True, last_poll_at=now, last_error=None, failed_version=None
            )
            return None
        started = time.perf_counter()
        try:
            loaded = load_version(self.client, target)
        # Whatever breaks a load (download, a corrupt or foreign model, the registry going away
        # midway) must leave the serving model in place; it is reported on /model and /metrics.
        except Exception as error:
            if self.status.failed_version == str(target.version):
                log.warning("v%s still fails to load: %s", target.version, describe(error))
            else:
                log.exception("loading v%s failed, still serving the loaded model", target.version)
            self._set(
                registry_reachable=True,
                last_poll_at=now,
                last_error=f"loading v{target.version} failed: {describe(error)}",
                failed_version=str(target.version),
                failures=self.status.failures + 1,
            )
            return LoadAttempt(str(target.version), False, time.perf_counter() - started)
        previous, self.current = self.current, loaded
        log.info(
            "serving %s v%s (was %s)",
            loaded.name,
            loaded.version,
            f"v{previous.version}" if previous else "nothing",
        )
        self._set(
            registry_reachable=True,
            last_poll_at=now,
            last_error=None,
            failed_version=None,
            reloads=self.status.reloads + 1,
        )
        return LoadAttempt(loaded.version, True, time.perf_counter() - started)

    def _set(self, **changes: object) -> None:
        self.status = replace(self.status, **changes)
