"""The API through TestClient (lifespan runs) over stores built by the real pipeline."""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import Request, Response
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient

from serving.app import create_app
from streamflow.adapters.registry import CHAMPION_ALIAS, MODEL_NAME
from streamflow.domain.features import FEATURE_NAMES, FEATURES
from tests.serving.conftest import KNOWN_USER, LATEST_AS_OF, latest_csv_row, serving_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(pipeline_data_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(serving_settings(pipeline_data_dir))) as client:
        yield client


@pytest.fixture(scope="module")
def production_version(pipeline_data_dir: Path) -> str:
    settings = serving_settings(pipeline_data_dir)
    registry = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    return str(registry.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS).version)


def csv_value(dtype: str, text: str) -> object:
    """A CSV cell as a response shows it: a Float32 feature as the shortest decimal of its
    float32 (29.85 stays 29.85; 24.21779534835315 is held as 24.217794)."""
    if text == "":
        return None
    return {
        "Int64": int,
        "Float32": lambda t: float(str(np.float32(t))),
        "Bool": {"True": True, "False": False}.__getitem__,
        "String": str,
    }[dtype](text)


def no_internet_user(seeds: Path) -> str:
    import csv

    with open(seeds / "month_001" / "subscriptions.csv", newline="") as source:
        return next(r["user_id"] for r in csv.DictReader(source) if r["plan_stream_tv"] == "")


def test_health_answers_ok(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_once_model_and_features_are_loaded(client: TestClient) -> None:
    response = client.get("/ready")
    assert response.status_code == 200, response.text


def test_predict_answers_the_contract_for_7590_vhveg(
    client: TestClient, production_version: str
) -> None:
    response = client.post("/predict", json={"user_id": KNOWN_USER})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user_id"] == KNOWN_USER
    assert body["prediction"] in (0, 1)
    assert body["prediction"] == int(body["probability"] >= 0.5)
    assert 0.0 <= body["probability"] <= 1.0
    assert set(body["features_used"]) == set(FEATURE_NAMES)
    assert body["features_as_of"].startswith(LATEST_AS_OF)
    assert body["stale"] is False
    assert body["model"]["name"] == MODEL_NAME
    assert body["model"]["version"] == production_version
    assert re.fullmatch(r"[0-9a-f]{32}", body["model"]["run_id"])


def test_features_used_are_7590_vhvegs_latest_csv_values(
    client: TestClient, real_seeds: Path
) -> None:
    row = latest_csv_row(real_seeds, KNOWN_USER)
    used = client.post("/predict", json={"user_id": KNOWN_USER}).json()["features_used"]
    expected = {f.name: csv_value(f.dtype, row[f.name]) for f in FEATURES}
    assert used == expected
    for feature in FEATURES:
        if feature.dtype == "Float32":
            # Exactly the float32 that Feast stores and the model reads.
            assert np.float32(used[feature.name]) == np.float32(row[feature.name])
        elif feature.dtype == "Int64":
            assert type(used[feature.name]) is int


def test_a_user_without_internet_service_is_known(client: TestClient, real_seeds: Path) -> None:
    user_id = no_internet_user(real_seeds)
    body = client.post("/predict", json={"user_id": user_id}).json()
    assert body["features_used"]["plan_stream_tv"] is None
    assert body["features_used"]["plan_stream_movies"] is None
    assert body["prediction"] in (0, 1)


def test_unknown_user_is_404_with_error_and_missing_features(client: TestClient) -> None:
    response = client.post("/predict", json={"user_id": "0000-NOBODY"})
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert "0000-NOBODY" in detail["error"]
    assert detail["missing_features"] == FEATURE_NAMES


@pytest.mark.parametrize(
    "body",
    [
        None,
        {},
        {"user": KNOWN_USER},
        {"user_id": 7590},
        {"user_id": ""},
        {"user_id": "x" * 65},
        {"user_id": "7590 VHVEG"},
        {"user_id": "7590-VHVEG;drop"},
        {"user_id": "ünïcode"},
        ["7590-VHVEG"],
    ],
)
def test_invalid_body_or_user_id_is_422(client: TestClient, body: object) -> None:
    response = client.post("/predict", json=body)
    assert response.status_code == 422, response.text


def test_a_64_character_user_id_is_valid_and_unknown(client: TestClient) -> None:
    response = client.post("/predict", json={"user_id": "A_-9" * 16})
    assert response.status_code == 404


def answer_as_declared(client: TestClient, body: str) -> httpx.Response:
    """/predict's answer to `body`, checked to be the declared endpoint's, byte for byte.

    `application/json` takes the direct path ahead of FastAPI's stack, `...; charset=utf-8`
    FastAPI's declared endpoint.
    """
    direct, declared = (
        client.post("/predict", content=body, headers={"content-type": content_type})
        for content_type in ("application/json", "application/json; charset=utf-8")
    )
    assert direct.status_code == declared.status_code, body
    assert direct.content == declared.content, body
    assert direct.headers["content-type"] == declared.headers["content-type"]
    return direct


def test_every_body_of_predict_gets_the_declared_endpoints_answer(client: TestClient) -> None:
    for body, status in (
        (f'{{"user_id": "{KNOWN_USER}"}}', 200),
        ('{"user_id": "0000-NOBODY"}', 404),
        ('{"user_id": 1}', 422),
        ('{"user_id": ', 422),
    ):
        assert answer_as_declared(client, body).status_code == status, body
    assert client.post("/predict", content=f'{{"user_id": "{KNOWN_USER}"}}').status_code == 422
    # Repeated headers: the first counts on either path.
    repeated = [("content-type", "text/plain"), ("content-type", "application/json")]
    body = f'{{"user_id": "{KNOWN_USER}"}}'
    assert client.post("/predict", content=body, headers=repeated).status_code == 422


def test_a_middleware_added_to_the_app_sees_every_predict(pipeline_data_dir: Path) -> None:
    """Authentication, CORS or tracing added to the app must not be skipped by the direct path."""
    app = create_app(serving_settings(pipeline_data_dir))
    assert app.predicts_directly

    @app.middleware("http")
    async def stamp(request: Request, call_next: Callable) -> Response:
        response = await call_next(request)
        response.headers["x-seen-by"] = "stamp"
        return response

    assert not app.predicts_directly
    with TestClient(app) as client:
        response = client.post("/predict", json={"user_id": KNOWN_USER})
    assert response.status_code == 200
    assert response.headers["x-seen-by"] == "stamp"


@pytest.mark.parametrize(("mib", "pragma"), [(16, -16 * 1024), (0, -2000)])
def test_the_online_stores_page_cache_is_the_setting(
    pipeline_data_dir: Path, mib: int, pragma: int
) -> None:
    settings = serving_settings(pipeline_data_dir, serve_sqlite_cache_mib=mib)
    with TestClient(create_app(settings)) as client:
        reader = client.app.state.serving.features
        connection = reader._online._get_conn(reader._config)
        assert connection.execute("PRAGMA cache_size").fetchone() == (pragma,)
        assert client.post("/predict", json={"user_id": KNOWN_USER}).status_code == 200


def test_a_small_body_over_a_lower_body_limit_is_413(pipeline_data_dir: Path) -> None:
    with TestClient(create_app(serving_settings(pipeline_data_dir, max_body_bytes=30))) as client:
        body, json = f'{{"user_id": "{KNOWN_USER}"}}', {"content-type": "application/json"}
        assert client.post("/predict", content=body.ljust(30), headers=json).status_code == 200
        response = client.post("/predict", content=body.ljust(31), headers=json)
        assert response.status_code == 413, response.text


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/predict", content=b'{"user_id": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


def test_features_of_a_user_with_event_times(client: TestClient, real_seeds: Path) -> None:
    response = client.get(f"/features/{KNOWN_USER}")
    assert response.status_code == 200
    body = response.json()
    row = latest_csv_row(real_seeds, KNOWN_USER)
    assert body["features"] == {f.name: csv_value(f.dtype, row[f.name]) for f in FEATURES}
    assert set(body["event_timestamps"]) == {
        "subs_profile",
        "usage_agg_30d",
        "payments_agg_90d",
        "support_agg_90d",
    }
    assert all(ts.startswith(LATEST_AS_OF) for ts in body["event_timestamps"].values())
    assert body["stale"] is False


def test_features_of_an_unknown_user_is_404(client: TestClient) -> None:
    response = client.get("/features/0000-NOBODY")
    assert response.status_code == 404
    assert response.json()["detail"]["missing_features"] == FEATURE_NAMES


def test_features_of_an_invalid_user_id_is_422(client: TestClient) -> None:
    assert client.get("/features/bad%20id").status_code == 422
    assert client.get(f"/features/{'x' * 65}").status_code == 422


def test_batch_results_equal_single_results(client: TestClient, latest_user_ids: list[str]) -> None:
    ids = latest_user_ids[:40] + ["0000-NOBODY", latest_user_ids[3], "1111-NOBODY"]
    response = client.post("/predict/batch", json={"user_ids": ids})
    assert response.status_code == 200
    body = response.json()
    assert body["unknown_user_ids"] == ["0000-NOBODY", "1111-NOBODY"]
    known = [user_id for user_id in ids if "NOBODY" not in user_id]
    assert [r["user_id"] for r in body["results"]] == known
    for result in body["results"]:
        single = client.post("/predict", json={"user_id": result["user_id"]}).json()
        assert result == single


def test_a_batch_of_1000_is_served_and_1001_is_422(
    client: TestClient, latest_user_ids: list[str]
) -> None:
    response = client.post("/predict/batch", json={"user_ids": latest_user_ids[:1000]})
    assert response.status_code == 200
    assert len(response.json()["results"]) == 1000
    too_many = client.post("/predict/batch", json={"user_ids": latest_user_ids[:1001]})
    assert too_many.status_code == 422
    (error,) = too_many.json()["detail"]
    assert error["loc"] == ["body", "user_ids"] and "1001" in error["msg"]


@pytest.mark.parametrize("body", [{"user_ids": []}, {"user_ids": ["bad id"]}, {"ids": ["x"]}])
def test_invalid_batch_is_422(client: TestClient, body: object) -> None:
    assert client.post("/predict/batch", json=body).status_code == 422


def test_model_describes_the_served_version(client: TestClient, production_version: str) -> None:
    response = client.get("/model")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == MODEL_NAME
    assert body["version"] == production_version
    assert "champion" in body["aliases"]
    assert body["as_of"] == LATEST_AS_OF
    assert body["partition"] == "2024-02"
    assert body["feature_service"] == "churn_model_v1"
    assert math.isfinite(body["metrics"]["val_auc"])
    assert body["loaded_since"]
    assert body["reload"]["registry_reachable"] is True
    assert body["reload"]["failed_version"] is None


def test_metrics_count_requests_by_route_never_by_user(
    client: TestClient, production_version: str
) -> None:
    client.post("/predict", json={"user_id": KNOWN_USER})
    client.get(f"/features/{KNOWN_USER}")
    client.post("/predict", json={"user_id": "0000-NOBODY"})
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert re.search(
        r'streamflow_http_requests_total\{method="POST",route="/predict",status="200"\} [1-9]',
        text,
    )
    assert 'route="/features/{user_id}"' in text
    assert re.search(r'streamflow_http_request_duration_seconds_bucket\{.*route="/predict"', text)
    assert re.search(r'streamflow_predictions_total\{prediction="[01]"\} [1-9]', text)
    assert re.search(r"streamflow_unknown_users_total [1-9]", text)
    assert 'streamflow_stale_features_total{action="flagged"}' in text
    assert f"streamflow_model_version {float(production_version)}" in text
    assert "streamflow_model_reloads_total" in text
    assert "streamflow_model_reload_failing 0.0" in text
    assert KNOWN_USER not in text and "NOBODY" not in text


def test_unmatched_paths_share_one_label(client: TestClient) -> None:
    assert client.get("/no/such/7590-VHVEG").status_code == 404
    text = client.get("/metrics").text
    assert 'route="unmatched"' in text
    assert "/no/such" not in text


def test_stale_features_are_flagged(pipeline_data_dir: Path) -> None:
    settings = serving_settings(pipeline_data_dir, max_feature_age_days=1)
    with TestClient(create_app(settings)) as client:
        response = client.post("/predict", json={"user_id": KNOWN_USER})
        assert response.status_code == 200
        assert response.json()["stale"] is True
        assert client.get(f"/features/{KNOWN_USER}").json()["stale"] is True
        batch = client.post("/predict/batch", json={"user_ids": [KNOWN_USER]}).json()
        assert batch["results"][0]["stale"] is True
        assert (
            'streamflow_stale_features_total{action="flagged"} 2.0' in client.get("/metrics").text
        )


def test_stale_features_are_409_in_strict_mode(pipeline_data_dir: Path) -> None:
    settings = serving_settings(pipeline_data_dir, max_feature_age_days=1, strict_freshness=True)
    with TestClient(create_app(settings)) as client:
        response = answer_as_declared(client, f'{{"user_id": "{KNOWN_USER}"}}')
        assert response.status_code == 409
        detail = response.json()["detail"]
        assert detail["user_ids"] == [KNOWN_USER]
        assert detail["features_as_of"].startswith(LATEST_AS_OF)
        assert detail["max_feature_age_seconds"] == 86400
        batch = client.post("/predict/batch", json={"user_ids": [KNOWN_USER, "0000-NOBODY"]})
        assert batch.status_code == 409
        # Unknown users are still 404, not 409: there is nothing to be stale.
        assert client.post("/predict", json={"user_id": "0000-NOBODY"}).status_code == 404
        assert (
            'streamflow_stale_features_total{action="refused"} 3.0' in client.get("/metrics").text
        )


def test_fresh_enough_features_are_not_stale_in_strict_mode(pipeline_data_dir: Path) -> None:
    settings = serving_settings(
        pipeline_data_dir, max_feature_age_days=365_000, strict_freshness=True
    )
    with TestClient(create_app(settings)) as client:
        response = client.post("/predict", json={"user_id": KNOWN_USER})
        assert response.status_code == 200
        assert response.json()["stale"] is False


def test_the_alias_uri_serves_the_aliased_version(
    pipeline_data_dir: Path, production_version: str
) -> None:
    settings = serving_settings(
        pipeline_data_dir, model_uri=f"models:/{MODEL_NAME}@{CHAMPION_ALIAS}"
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/model").json()["version"] == production_version
        response = client.post("/predict", json={"user_id": KNOWN_USER})
        assert response.json()["model"]["version"] == production_version


def test_no_model_is_503_with_the_reason_and_health_stays_200(pipeline_data_dir: Path) -> None:
    settings = serving_settings(pipeline_data_dir, model_uri="models:/no_such_model@champion")
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert "model not loaded" in ready.json()["detail"]
        assert "no_such_model" in ready.json()["detail"]
        predict = client.post("/predict", json={"user_id": KNOWN_USER})
        assert predict.status_code == 503
        assert "model not loaded" in predict.json()["detail"]
        batch = client.post("/predict/batch", json={"user_ids": [KNOWN_USER]})
        assert batch.status_code == 503
        assert client.get("/model").status_code == 503
        # The features do not need the model.
        assert client.get(f"/features/{KNOWN_USER}").status_code == 200


def test_no_stores_at_all_is_503_not_a_crash(tmp_path: Path) -> None:
    settings = serving_settings(tmp_path / "empty")
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert "feature store not available" in ready.json()["detail"]
        assert client.get(f"/features/{KNOWN_USER}").status_code == 503
        assert client.post("/predict", json={"user_id": KNOWN_USER}).status_code == 503


def test_a_failing_online_store_is_503_naming_it_and_recovers(data_dir_copy: Path) -> None:
    """The SQLite store really failing (a table gone under the open connection), then back."""
    online = sqlite3.connect(data_dir_copy / "feast" / "online.db")
    with TestClient(create_app(serving_settings(data_dir_copy))) as client:
        assert client.post("/predict", json={"user_id": KNOWN_USER}).status_code == 200
        online.execute("ALTER TABLE streamflow_usage_agg_30d RENAME TO away")
        online.commit()
        try:
            for answer in (
                answer_as_declared(client, f'{{"user_id": "{KNOWN_USER}"}}'),
                client.post("/predict/batch", json={"user_ids": [KNOWN_USER]}),
                client.get(f"/features/{KNOWN_USER}"),
                client.get("/ready"),
            ):
                assert answer.status_code == 503, answer.text
                detail = answer.json()["detail"]
                assert detail.startswith("online store MonotonicSqliteOnlineStore unavailable: ")
                assert "no such table" in detail
        finally:
            online.execute("ALTER TABLE away RENAME TO streamflow_usage_agg_30d")
            online.commit()
            online.close()
        assert client.post("/predict", json={"user_id": KNOWN_USER}).status_code == 200
        assert client.get("/ready").status_code == 200
