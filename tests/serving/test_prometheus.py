"""The metrics the dashboards use: a real Prometheus scrapes a running API; every dashboard's
metric names are ones /metrics exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from serving.app import create_app
from tests.serving.conftest import (
    KNOWN_USER,
    REPO_ROOT,
    STREAMFLOW,
    Child,
    clean_env,
    free_port,
    serving_settings,
)

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
DASHBOARDS = sorted((REPO_ROOT / "deploy" / "grafana").rglob("*.json"))
ALERT_RULES = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
METRIC_NAME = re.compile(r"\bstreamflow_[a-z0-9_]+")


def exported_names(exposition: str) -> set[str]:
    """Every series name in a /metrics page: families and their samples (_total, _bucket, …)."""
    names = set()
    for family in text_string_to_metric_families(exposition):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def test_every_dashboard_metric_is_exported(pipeline_data_dir: Path) -> None:
    assert DASHBOARDS, "no dashboards under deploy/grafana"
    with TestClient(create_app(serving_settings(pipeline_data_dir))) as client:
        assert client.post("/predict", json={"user_id": KNOWN_USER}).status_code == 200
        assert client.post("/predict", json={"user_id": "no-such-user"}).status_code == 404
        exported = exported_names(client.get("/metrics").text)
    assert "streamflow_prediction_probability_bucket" in exported
    assert "streamflow_model_info" in exported
    for dashboard in DASHBOARDS:
        used = set(METRIC_NAME.findall(dashboard.read_text()))
        assert used, f"{dashboard} charts no streamflow_ metric"
        assert used <= exported, f"{dashboard.name}: not exported: {sorted(used - exported)}"


def test_the_served_model_gauge_names_version_and_training_month(pipeline_data_dir: Path) -> None:
    with TestClient(create_app(serving_settings(pipeline_data_dir))) as client:
        model = client.get("/model").json()
        client.post("/predict", json={"user_id": KNOWN_USER})
        text = client.get("/metrics").text
    (info,) = [f for f in text_string_to_metric_families(text) if f.name == "streamflow_model_info"]
    served = {(s.labels["version"], s.labels["training_month"]) for s in info.samples if s.value}
    assert served == {(model["version"], model["partition"])}
    assert "streamflow_prediction_probability_count 1.0" in text


@pytest.mark.skipif(not Path(PROMTOOL).exists(), reason="Debian's prometheus not installed")
def test_the_alert_rules_are_valid_and_use_exported_metrics(pipeline_data_dir: Path) -> None:
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(ALERT_RULES)],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with TestClient(create_app(serving_settings(pipeline_data_dir))) as client:
        exported = exported_names(client.get("/metrics").text)
    used = set(METRIC_NAME.findall(ALERT_RULES.read_text()))
    assert "streamflow_prediction_log_dropped_total" in used
    assert used <= exported, f"not exported: {sorted(used - exported)}"


def _query(prometheus: str, expression: str) -> list[dict]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expression}, timeout=5)
    answer.raise_for_status()
    return answer.json()["data"]["result"]


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="Debian's prometheus not installed")
def test_prometheus_scrapes_the_running_api(pipeline_data_dir: Path, tmp_path: Path) -> None:
    api_port, prometheus_port = free_port(), free_port()
    # A prediction log that keeps one answer and never writes: the next ones are dropped.
    api = Child.start(
        [str(STREAMFLOW), "serve", "--host", "127.0.0.1", "--port", str(api_port)],
        clean_env(
            pipeline_data_dir, prediction_log_queue_size=1, prediction_log_flush_seconds=3600
        ),
        tmp_path / "api.log",
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERT_RULES)],
                "scrape_configs": [
                    {
                        "job_name": "streamflow-api",
                        "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}],
                    }
                ],
            }
        )
    )
    prometheus = Child.start(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}"]
        + [f"--web.listen-address=127.0.0.1:{prometheus_port}", "--storage.tsdb.retention.time=1h"],
        {"PATH": "/usr/bin:/bin"},
        tmp_path / "prometheus.log",
    )
    url = f"http://127.0.0.1:{prometheus_port}"
    try:
        api.wait_for(f"http://127.0.0.1:{api_port}/ready", status=200)
        prometheus.wait_for(f"{url}/-/ready", status=200, timeout=60)
        for _ in range(20):
            httpx.post(f"http://127.0.0.1:{api_port}/predict", json={"user_id": KNOWN_USER})
        wanted = {
            "requests": 'streamflow_http_requests_total{route="/predict"}',
            "latency": 'streamflow_http_request_duration_seconds_bucket{route="/predict"}',
            "probability": "streamflow_prediction_probability_count",
        }
        found: dict[str, list[dict]] = {}

        def complete() -> bool:
            requests = found.get("requests")
            return len(found) == len(wanted) and float(requests[0]["value"][1]) >= 20

        deadline = time.monotonic() + 60
        # Until a scrape has seen all 20 predictions (one may land between two scrapes).
        while not complete() and time.monotonic() < deadline:
            for name, expression in wanted.items():
                if result := _query(url, expression):
                    found[name] = result
            time.sleep(1)
        assert set(found) == set(wanted), prometheus.output()[-2000:]
        assert float(found["requests"][0]["value"][1]) >= 20
        assert {sample["metric"]["le"] for sample in found["latency"]} >= {"0.01", "+Inf"}

        def firing() -> set[str]:
            answer = httpx.get(f"{url}/api/v1/alerts", timeout=5).json()
            return {a["labels"]["alertname"] for a in answer["data"]["alerts"]}

        while "PredictionLogDropping" not in firing():
            assert time.monotonic() < deadline, f"no drop alert: {firing()}"
            time.sleep(1)
    finally:
        prometheus.stop()
        api.stop()
