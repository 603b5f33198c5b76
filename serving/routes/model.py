"""Which model version serves, since when, and how the background reload is doing."""

from __future__ import annotations

from fastapi import APIRouter

from serving.dependencies import Model, State
from serving.errors import NOT_READY
from serving.schemas import ModelInfo, ReloadInfo

router = APIRouter(tags=["model"])


@router.get("/model", responses=NOT_READY)
async def model_info(state: State, model: Model) -> ModelInfo:
    """The served version, its lineage and metrics; `reload` says whether a newer one failed."""
    status = state.models.status
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
        reload=ReloadInfo(
            interval_seconds=state.settings.reload_interval_seconds,
            registry_reachable=status.registry_reachable,
            last_poll_at=status.last_poll_at,
            last_error=status.last_error,
            failed_version=status.failed_version,
            reloads=status.reloads,
            failures=status.failures,
        ),
    )
