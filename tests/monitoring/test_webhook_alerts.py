"""Alerts to a webhook: a real HTTP receiver on loopback, up, flaky, down, then back."""

from __future__ import annotations

import time

import pytest
from dagster import DagsterInstance

from streamflow.adapters.alerts import Alert, post_json
from streamflow_assets.resources import build_resources
from streamflow_assets.resources.alerts import JsonlAlertSink, LogAlertSink, WebhookAlertSink
from tests.monitoring.conftest import Receiver, Sensor, free_port, run_freshness_checks

ALERT = Alert(
    state="failing",
    asset="online_features",
    check="online_store_freshness",
    partition="2024-02",
    lag_days=29.0,
    expected_as_of="2024-02-29",
    actual_as_of="2024-01-31",
    summary="the online store holds 2024-01-31, expected 2024-02-29 (29 days behind)",
    link="http://127.0.0.1:3000/assets/online_features",
)


def stale_settings(world, settings_for, url: str, **extra):
    return settings_for(
        world.data_dir,
        world.seeds_dir,
        alert_webhook_url=url,
        alert_webhook_retries=2,
        alert_webhook_backoff_seconds=0.05,
        **extra,
    )


def test_the_webhook_url_alone_selects_the_webhook_sink(
    settings_for, tmp_path, receiver: Receiver
) -> None:
    sink = build_resources(settings_for(tmp_path, tmp_path, alert_webhook_url=receiver.url))
    assert isinstance(sink["alerts"], WebhookAlertSink)
    jsonl = build_resources(settings_for(tmp_path, tmp_path))["alerts"]
    assert jsonl.path == str(tmp_path / "alerts.jsonl")
    # docker compose passes an unset `${STREAMFLOW_ALERT_WEBHOOK_URL:-}` on as "".
    unset = build_resources(settings_for(tmp_path, tmp_path, alert_webhook_url=""))["alerts"]
    assert isinstance(unset, JsonlAlertSink)
    assert isinstance(
        build_resources(settings_for(tmp_path, tmp_path, alert_sink="log"))["alerts"], LogAlertSink
    )
    with pytest.raises(ValueError, match="STREAMFLOW_ALERT_WEBHOOK_URL"):
        build_resources(settings_for(tmp_path, tmp_path, alert_sink="webhook"))


def test_a_stale_store_posts_one_slack_compatible_message(
    february_snapshots_only,
    world_copy,
    settings_for,
    dagster_instance: DagsterInstance,
    receiver: Receiver,
) -> None:
    world = world_copy(february_snapshots_only)
    settings = stale_settings(world, settings_for, receiver.url)
    assert not run_freshness_checks(settings, dagster_instance).passed
    sensor = Sensor(settings, dagster_instance)
    for _ in range(4):
        sensor.tick()
    (body,) = receiver.bodies
    assert set(body) == {"text", "blocks"}
    for fact in ("online_features", "2024-02", "29 days", ALERT.link, "2024-01-31"):
        assert fact in body["text"], fact
    assert any(ALERT.link in str(block) for block in body["blocks"])
    assert world.alerts == []


def test_a_receiver_down_is_retried_recorded_and_the_sensor_keeps_running(
    february_snapshots_only, world_copy, settings_for, dagster_instance: DagsterInstance
) -> None:
    world = world_copy(february_snapshots_only)
    port = free_port()
    down = Receiver(port=port)
    settings = stale_settings(world, settings_for, down.url)
    run_freshness_checks(settings, dagster_instance)
    sensor = Sensor(settings, dagster_instance)

    for _ in range(2):
        result = sensor.tick()
        assert "not delivered" in result.skip_reason.skip_message
    assert not sensor.failing, "undelivered news is kept to send again"
    failures = world.alerts
    assert [f["event"] for f in failures] == ["delivery_failed", "delivery_failed"]
    assert all(f["attempts"] == 3 and "ConnectError" in f["error"] for f in failures)
    assert failures[0]["alert"]["partition"] == "2024-02"
    assert down.url not in str(failures), "the webhook URL (its token) is never written down"

    down.start()
    try:
        for _ in range(3):
            sensor.tick()
        assert len(down.bodies) == 1 and "2024-02" in down.bodies[0]["text"]
        assert sensor.failing
        assert len(world.alerts) == 2
    finally:
        down.stop()


def test_5xx_answers_are_retried_with_backoff_until_delivered(receiver: Receiver) -> None:
    receiver.statuses = [503, 500]
    started = time.perf_counter()
    delivery = post_json(receiver.url, {"text": "hi"}, timeout=2, retries=3, backoff=0.1)
    assert delivery.delivered and delivery.attempts == 3
    assert len(receiver.bodies) == 3
    assert time.perf_counter() - started >= 0.1 + 0.2


def test_a_rejected_webhook_is_not_retried_and_is_recorded(receiver: Receiver, tmp_path) -> None:
    receiver.statuses = [404]
    sink = WebhookAlertSink(
        url=receiver.url, failure_log=str(tmp_path / "alerts.jsonl"), backoff_seconds=0.01
    )
    delivery = sink.send(ALERT)
    assert not delivery.delivered and delivery.attempts == 1
    assert delivery.error.startswith("HTTP 404")
    assert len(receiver.bodies) == 1
    assert '"delivery_failed"' in (tmp_path / "alerts.jsonl").read_text()
