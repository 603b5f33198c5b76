"""Alerts: what one says, its Slack-compatible payload, and the two ways to deliver it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import tenacity
from slack_sdk.models.blocks import MarkdownTextObject, SectionBlock

AlertState = Literal["failing", "recovered"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Alert:
    """A freshness check that started failing, or recovered: enough to act on without the UI."""

    state: AlertState
    asset: str
    check: str
    partition: str | None
    lag_days: float | None
    expected_as_of: str | None
    actual_as_of: str | None
    summary: str
    link: str
    time: str = field(default_factory=_now)

    @property
    def title(self) -> str:
        if self.state == "failing":
            return f"StreamFlow: {self.asset} is stale ({self.check} failed)"
        return f"StreamFlow: {self.asset} is fresh again ({self.check} passed)"

    @property
    def text(self) -> str:
        lag = "nothing held" if self.lag_days is None else f"{self.lag_days:g} days"
        return (
            f"{self.title}. Partition {self.partition or 'unknown'}: the online store holds "
            f"{self.actual_as_of or 'nothing'}, expected {self.expected_as_of or 'unknown'} "
            f"(lag {lag}). Why: {self.summary}. {self.link}"
        )

    def fields(self) -> dict[str, str]:
        return {
            "Asset": self.asset,
            "Partition": self.partition or "unknown",
            "Online store holds": self.actual_as_of or "nothing",
            "Expected": self.expected_as_of or "unknown",
            "Lag": "nothing held" if self.lag_days is None else f"{self.lag_days:g} days",
            "Check": self.check,
        }

    def record(self) -> dict[str, Any]:
        return {"event": "alert", **asdict(self), "text": self.text}


def slack_payload(alert: Alert | MonitoringAlert) -> dict[str, Any]:
    """An incoming-webhook message: `text` for notifications and clients without blocks; the
    blocks built (and checked against Block Kit's limits) by slack-sdk's models."""
    icon = ":red_circle:" if alert.state in ("failing", "fired") else ":large_green_circle:"
    blocks = [
        SectionBlock(text=MarkdownTextObject(text=f"{icon} *{alert.title}*")),
        SectionBlock(
            fields=[MarkdownTextObject(text=f"*{k}*\n{v}") for k, v in alert.fields().items()]
        ),
        SectionBlock(text=MarkdownTextObject(text=f"*Why:* {alert.summary}")),
        SectionBlock(text=MarkdownTextObject(text=f"<{alert.link}|Open {alert.asset} in Dagster>")),
    ]
    return {"text": alert.text, "blocks": [block.to_dict() for block in blocks]}


@dataclass(frozen=True)
class MonitoringAlert:
    """Retraining evidence for a month (`fired`), or the retrained candidate's decision
    (`decided`): what fired, what the policy did about it, and where to look."""

    state: Literal["fired", "decided"]
    asset: str
    partition: str
    reasons: tuple[str, ...]
    policy: str
    summary: str
    link: str
    time: str = field(default_factory=_now)

    @property
    def title(self) -> str:
        if self.state == "fired":
            return (
                f"StreamFlow: retraining evidence for {self.partition} ({', '.join(self.reasons)})"
            )
        return f"StreamFlow: retrained candidate for {self.partition} decided"

    @property
    def text(self) -> str:
        return f"{self.title}. Policy {self.policy}: {self.summary}. {self.link}"

    def fields(self) -> dict[str, str]:
        return {
            "Partition": self.partition,
            "Reasons": ", ".join(self.reasons),
            "Policy": self.policy,
            "Asset": self.asset,
        }

    def record(self) -> dict[str, Any]:
        return {"event": "alert", **asdict(self), "text": self.text}


@dataclass(frozen=True)
class Delivery:
    """Whether an alert arrived, after how many attempts, and the last error if it did not."""

    delivered: bool
    attempts: int
    destination: str
    error: str | None = None


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line; a line is written by a single call, so readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


class _Retryable(Exception):
    """A failed POST worth another attempt: a timeout, a lost connection, 429 or 5xx."""


def post_json(
    url: str,
    payload: dict[str, Any],
    timeout: float,
    retries: int,
    backoff: float,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivery:
    """POST a JSON payload; retry timeouts, connection errors, 429 and 5xx with backoff
    (tenacity: `backoff`, then doubling).

    Other 4xx answers (a revoked or mistyped webhook) would fail the same way again, so they are
    not retried. Never raises for an HTTP failure: the caller records the returned Delivery.
    """
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(retries + 1),
        wait=tenacity.wait_exponential(multiplier=backoff, exp_base=2, min=backoff),
        retry=tenacity.retry_if_exception_type(_Retryable),
        sleep=sleep,
        reraise=True,
    )
    with httpx.Client(timeout=timeout) as client:

        def attempt() -> Delivery:
            try:
                response = client.post(url, json=payload)
            except httpx.HTTPError as exc:
                raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
            if response.is_success:
                return Delivery(True, retrying.statistics["attempt_number"], url)
            error = f"HTTP {response.status_code}: {response.text[:200]}"
            if response.status_code == 429 or response.status_code >= 500:
                raise _Retryable(error)
            return Delivery(False, retrying.statistics["attempt_number"], url, error)

        try:
            return retrying(attempt)
        except _Retryable as failed:
            return Delivery(False, retrying.statistics["attempt_number"], url, str(failed))
