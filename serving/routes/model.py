"""Which model version serves, since when, and how the background reload is doing."""

from __future__ import annotations

from fastapi import APIRouter

from serving.dependencies import Model, State
from serving.errors import NOT_READY
from serving.model import ModelManager
from serving.schemas import ModelInfo, ReloadInfo, ShadowInfo
from serving.state import ServingState

router = APIRouter(tags=["model"])


@router.get("/model", responses=NOT_READY)
async def model_info(state: State, model: Model) -> ModelInfo:
    """The served version, its lineage and metrics; `reload` says whether a newer one failed;
    `shadow` is the challenger scored beside it, when one is set."""
    return ModelInfo(
        name=model.name,
        version=model.version,
        run_id=model.run_id,
        model_uri=state.settings.model_uri,
        stage=model.stage,
        aliases=list(model.aliases),
        as_of=model.tags.get("as_of"),
        partition=model.tags.get("partition"),
        feature_service=model.tags.get("feature_service"),
        metrics=model.metrics,
        tags=model.tags,
        source=model.source,
        loaded_since=model.loaded_at,
        reload=_reload(state, state.models),
        shadow=_shadow(state),
    )


def _reload(state: ServingState, models: ModelManager) -> ReloadInfo:
    status = models.status
    return ReloadInfo(
        interval_seconds=state.settings.reload_interval_seconds,
        registry_reachable=status.registry_reachable,
        last_poll_at=status.last_poll_at,
        last_error=status.last_error,
        failed_version=status.failed_version,
        reloads=status.reloads,
        failures=status.failures,
    )


def _shadow(state: ServingState) -> ShadowInfo | None:
    if state.shadow is None:
        return None
    # What the log's writer scores with: None once the challenger alias points at nothing.
    shadowed = state.prediction_log.shadow if state.prediction_log is not None else None
    return ShadowInfo(
        model_uri=state.shadow.uri.uri,
        fraction=state.settings.shadow_fraction,
        version=shadowed.version if shadowed else None,
        as_of=shadowed.tags.get("as_of") if shadowed else None,
        loaded_since=shadowed.loaded_at if shadowed else None,
        reload=_reload(state, state.shadow),
    )
