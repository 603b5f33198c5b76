"""The textbook /predict the original stack served: Feast SDK read + pyfunc model, per request.

The baseline of `bench/serve.py`: per request `FeatureStore.get_online_features` and the
scikit-learn Pipeline as logged, through `mlflow.pyfunc`, on a one-row DataFrame.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

import mlflow
import pandas as pd
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from streamflow.adapters.feature_store import open_store
from streamflow.domain.features import FEATURE_NAMES, FEATURE_REFS, to_model_frame
from streamflow.settings import get_serving_settings

state: dict[str, object] = {}


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_serving_settings()
    mlflow.set_tracking_uri(settings.tracking_uri)
    model = mlflow.pyfunc.load_model(settings.model_uri)
    state.update(store=open_store(settings), model=model)
    yield


app = FastAPI(lifespan=lifespan)


class PredictRequest(BaseModel):
    user_id: str


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
def predict(request: PredictRequest) -> dict[str, object]:
    store, model = state["store"], state["model"]
    online = store.get_online_features(
        features=FEATURE_REFS, entity_rows=[{"user_id": request.user_id}]
    ).to_dict()
    features = {name: online[name] for name in FEATURE_NAMES}
    if all(values[0] is None for values in features.values()):
        raise HTTPException(404, detail={"error": "unknown user", "user_id": request.user_id})
    probability = float(model.predict(to_model_frame(pd.DataFrame(features)))[0][1])
    return {
        "user_id": request.user_id,
        "prediction": int(probability >= 0.5),
        "probability": probability,
        "features_used": {name: values[0] for name, values in features.items()},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning")
