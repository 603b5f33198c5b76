"""Churn predictions for one user or a batch, from the online features and the served model."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from serving.dependencies import Scorer
from serving.errors import (
    BAD_BODY,
    NOT_READY,
    STALE,
    UNKNOWN_USER,
    batch_too_large,
    stale_features,
    unknown_user,
)
from serving.features import OnlineFeatureReader, OnlineFeatures, is_stale
from serving.model import DECISION_THRESHOLD, LoadedModel
from serving.schemas import (
    BatchPredictRequest,
    BatchPredictResponse,
    ModelRef,
    PredictRequest,
    PredictResponse,
)
from serving.state import ServingState
from streamflow_assets.core.features import model_inputs

# A body of one user id is under 100 bytes; anything much larger takes FastAPI's own path (and
# its body-size handling).
_DIRECT_BODY_LIMIT = 1024
_RESPONSE = TypeAdapter(PredictResponse)


class DirectPredictRoute(APIRoute):
    """`POST /predict`: a known user's answer straight from the body, anything else as declared.

    FastAPI's generic request handling (body decoding in Python, dependency resolution, the
    response validated again and serialized) costs more CPU than the feature read and the model
    together. A JSON body for a known user, with the model and store loaded, is answered here
    with pydantic's compiled JSON parsing and serialization of the same models (same bytes);
    404 and 409 raise as in the endpoint. An invalid body, another content type or a server not
    loaded goes through the endpoint as FastAPI handles it, so every error answer is unchanged.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        declared = super().get_route_handler()

        async def handler(request: Request) -> Response:
            state: ServingState = request.app.state.serving
            model, reader = state.models.current, state.features
            if model is not None and reader is not None and _small_json(request):
                try:
                    body = PredictRequest.model_validate_json(await request.body())
                except ValidationError:
                    pass  # FastAPI's own 422, from the endpoint's declaration
                else:
                    result = _predict_one(state, model, reader, body.user_id)
                    return Response(_RESPONSE.dump_json(result), media_type="application/json")
            return await declared(request)

        return handler


def _small_json(request: Request) -> bool:
    headers = request.headers
    length = headers.get("content-length", "")
    return (
        headers.get("content-type") == "application/json"
        and length.isdigit()
        and int(length) <= _DIRECT_BODY_LIMIT
    )


router = APIRouter(tags=["predict"])


def _score(
    state: ServingState, model: LoadedModel, features: OnlineFeatures, rows: Sequence[int]
) -> list[PredictResponse]:
    """Predictions for some rows of a read, in one model call; 409 first if strict and stale."""
    settings, metrics = state.settings, state.metrics
    max_age = settings.max_feature_age
    now = datetime.now(UTC)
    as_ofs = [features.as_of(i) for i in rows]
    stale = [is_stale(as_of, now, max_age) for as_of in as_ofs]
    if any(stale):
        if settings.strict_freshness:
            metrics.stale.labels("refused").inc(sum(stale))
            refused = [features.user_ids[i] for i, s in zip(rows, stale, strict=True) if s]
            raise stale_features(refused, min(as_ofs), max_age)
        metrics.stale.labels("flagged").inc(sum(stale))
    # The one conversion from raw features to model inputs, shared with training.
    probabilities = model.compiled.predict_proba(model_inputs(features.columns(rows)))
    ref = ModelRef(name=model.name, version=model.version, run_id=model.run_id)
    results = []
    # Validated construction runs in pydantic's compiled core: 4x cheaper than `model_construct`.
    for k, i in enumerate(rows):
        probability = float(probabilities[k])
        prediction = int(probability >= DECISION_THRESHOLD)
        metrics.predicted[prediction].inc()
        metrics.probability.observe(probability)
        results.append(
            PredictResponse(
                user_id=features.user_ids[i],
                prediction=prediction,
                probability=probability,
                features_used=features.row(i),
                features_as_of=as_ofs[k],
                stale=stale[k],
                model=ref,
            )
        )
    return results


def _predict_one(
    state: ServingState, model: LoadedModel, reader: OnlineFeatureReader, user_id: str
) -> PredictResponse:
    # A local online-store read takes tens of microseconds: less than a hop to the thread pool
    # and back, so it runs on the event loop.
    features = reader.read([user_id])
    missing = features.missing_features(0)
    if missing:
        state.metrics.unknown_users.inc()
        raise unknown_user(user_id, missing)
    (result,) = _score(state, model, features, [0])
    return result


async def predict(body: PredictRequest, scoring: Scorer) -> PredictResponse:
    """The churn prediction of one user, with the features it was made from."""
    return _predict_one(scoring.state, scoring.model, scoring.reader, body.user_id)


router.add_api_route(
    "/predict",
    predict,
    methods=["POST"],
    responses=BAD_BODY | UNKNOWN_USER | STALE | NOT_READY,
    route_class_override=DirectPredictRoute,
)


def _predict_batch(
    user_ids: list[str], state: ServingState, model: LoadedModel, reader: OnlineFeatureReader
) -> BatchPredictResponse:
    distinct = list(dict.fromkeys(user_ids))
    features = reader.read(distinct)
    known = [i for i in range(len(distinct)) if not features.missing_features(i)]
    by_id = {r.user_id: r for r in _score(state, model, features, known)} if known else {}
    unknown = [user_id for user_id in distinct if user_id not in by_id]
    state.metrics.unknown_users.inc(len(unknown))
    return BatchPredictResponse(
        results=[by_id[user_id] for user_id in user_ids if user_id in by_id],
        unknown_user_ids=unknown,
        model=ModelRef(name=model.name, version=model.version, run_id=model.run_id),
    )


@router.post("/predict/batch", responses=BAD_BODY | STALE | NOT_READY)
async def predict_batch(body: BatchPredictRequest, scoring: Scorer) -> BatchPredictResponse:
    """Predictions for up to `batch_max_users` users: one feature read, one model call."""
    limit = scoring.state.settings.batch_max_users
    if len(body.user_ids) > limit:
        raise batch_too_large(len(body.user_ids), limit)
    # A thousand users take tens of milliseconds: off the event loop, so single predictions
    # keep flowing meanwhile.
    return await run_in_threadpool(
        _predict_batch, body.user_ids, scoring.state, scoring.model, scoring.reader
    )
