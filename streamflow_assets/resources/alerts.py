"""Where alerts are delivered: a JSON-lines file, the Dagster log, or a webhook."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource, get_dagster_logger

from streamflow.adapters.alerts import (
    Alert,
    Delivery,
    MonitoringAlert,
    append_jsonl,
    post_json,
    slack_payload,
)


class AlertSinkResource(ConfigurableResource):
    """Delivers alerts; `build_resources` binds one implementation per deployment."""

    def send(self, alert: Alert | MonitoringAlert) -> Delivery:
        raise NotImplementedError


class JsonlAlertSink(AlertSinkResource):
    """Appends each alert as a JSON line: the local default, and easy to tail or ship."""

    path: str

    def send(self, alert: Alert | MonitoringAlert) -> Delivery:
        append_jsonl(Path(self.path), alert.record())
        return Delivery(True, 1, self.path)


class LogAlertSink(AlertSinkResource):
    """Writes each alert to the Dagster log (the sensor's log in the UI)."""

    def send(self, alert: Alert | MonitoringAlert) -> Delivery:
        log = get_dagster_logger()
        (log.error if alert.state in ("failing", "fired") else log.info)(alert.text)
        return Delivery(True, 1, "log")


class WebhookAlertSink(AlertSinkResource):
    """POSTs a Slack-compatible message; an alert it cannot deliver is recorded in `failure_log`."""

    url: str
    failure_log: str
    timeout_seconds: float = 5.0
    retries: int = 3
    backoff_seconds: float = 1.0

    def send(self, alert: Alert | MonitoringAlert) -> Delivery:
        delivery = post_json(
            self.url,
            slack_payload(alert),
            timeout=self.timeout_seconds,
            retries=self.retries,
            backoff=self.backoff_seconds,
        )
        # The URL is a secret (Slack's carries its token): name the webhook, never its URL.
        error = delivery.error.replace(self.url, "<webhook>") if delivery.error else None
        if not delivery.delivered:
            failure = {
                "event": "delivery_failed",
                "destination": "webhook",
                "attempts": delivery.attempts,
                "error": error,
                "alert": alert.record(),
            }
            append_jsonl(Path(self.failure_log), failure)
            get_dagster_logger().error(
                f"alert not delivered to the webhook after {delivery.attempts} attempts "
                f"({error}); recorded in {self.failure_log}"
            )
        return Delivery(delivery.delivered, delivery.attempts, "webhook", error)
