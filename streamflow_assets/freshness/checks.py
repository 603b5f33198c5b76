"""Monitoring: is the online store as fresh as the snapshots; checked hourly; alerts on change."""

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetSelection,
    DagsterRun,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    MetadataValue,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset_check,
    define_asset_job,
    schedule,
    sensor,
)

from streamflow.adapters.alerts import Alert
from streamflow.domain.freshness import FreshnessResult, FreshnessStatus
from streamflow.settings import Settings
from streamflow_assets.features.assets import online_features
from streamflow_assets.jobs import MONTHLY_PIPELINE
from streamflow_assets.resources import (
    AlertSinkResource,
    FeatureStoreResource,
    FreshnessResource,
    SnapshotsResource,
)

ONLINE_ASSET = online_features.key.to_user_string()


def _metadata(result: FreshnessResult) -> dict[str, MetadataValue]:
    facts = result.facts()
    metadata = {
        name: MetadataValue.text(str(value)) if value is not None else MetadataValue.null()
        for name, value in facts.items()
    }
    metadata["status"] = MetadataValue.text(result.status.value)
    for name in ("lag_days", "age_days", "stale_fraction"):
        if facts[name] is not None:
            metadata[name] = MetadataValue.float(float(facts[name]))
    for name in ("sampled_users", "stale_users", "missing_users"):
        metadata[name] = MetadataValue.int(int(facts[name]))
    return metadata


# Not partitioned: the question is whether the store as a whole holds the newest snapshot month,
# whichever month a run materialized, so the asset shows one current verdict and the schedule's
# check-only runs need no partition key. The month it judged is in the metadata and the alerts.
@asset_check(
    asset=online_features,
    name="online_store_freshness",
    description=(
        "The online store holds the newest snapshot month: event times of a sample of that "
        "month's users and the views' materialized intervals in the Feast registry."
    ),
)
def online_store_freshness(
    context: AssetCheckExecutionContext,
    feature_store: FeatureStoreResource,
    snapshots: SnapshotsResource,
    freshness: FreshnessResource,
) -> AssetCheckResult:
    result = freshness.evaluate(feature_store.open(), snapshots.store())
    context.log.info(f"online store {result.status.value}: {'; '.join(result.reasons)}")
    return AssetCheckResult(
        # A stale sample fraction fails as a warning; a lagging store or an unknown one is not
        # fresh either, but only a lag is an error (and what the alert sensor pages on).
        passed=result.status is FreshnessStatus.FRESH and not result.warning,
        severity=(
            AssetCheckSeverity.ERROR
            if result.status is FreshnessStatus.STALE
            else AssetCheckSeverity.WARN
        ),
        metadata=_metadata(result),
    )


ONLINE_FRESHNESS_KEY = AssetCheckKey(online_features.key, "online_store_freshness")

freshness_checks_job = define_asset_job(
    "freshness_checks",
    selection=AssetSelection.checks(online_store_freshness),
    description="Runs the freshness checks alone, without materializing anything.",
)


# Between a month's snapshots and its online rows, a run makes the store look stale for a while
# (minutes at 10 million users); a scheduled check waits for such a run, unless it has been
# going longer than this, which is a stuck run and must not silence the check for good.
WRITING_GRACE = timedelta(hours=1)


def _writing_run(context: ScheduleEvaluationContext) -> DagsterRun | None:
    """A run started within the grace period that writes the online store, if any."""
    runs = context.instance.get_runs(
        filters=RunsFilter(
            statuses=[DagsterRunStatus.STARTING, DagsterRunStatus.STARTED],
            created_after=datetime.now(UTC) - WRITING_GRACE,
        )
    )
    for run in runs:
        writes_online = (
            online_features.key in run.asset_selection
            if run.asset_selection
            # A run without an asset selection runs its whole job.
            else run.job_name == MONTHLY_PIPELINE
        )
        if writes_online:
            return run
    return None


def build_freshness_schedule(settings: Settings) -> ScheduleDefinition:
    """Runs the freshness checks on `STREAMFLOW_FRESHNESS_SCHEDULE_CRON` (UTC, default hourly).

    A check attached to an asset otherwise runs only when the asset materializes, which is
    exactly when the store is fresh; a store that falls behind needs an outside clock.
    """

    @schedule(
        name="freshness_checks_schedule",
        job=freshness_checks_job,
        cron_schedule=settings.freshness_schedule_cron,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        description="Checks the online store's freshness even when nothing materializes.",
    )
    def _schedule(context: ScheduleEvaluationContext):
        run = _writing_run(context)
        if run is not None:
            return SkipReason(
                f"run {run.run_id[:8]} ({run.job_name}) is writing the online store; "
                "its own check judges it when done"
            )
        return RunRequest()

    return _schedule


@dataclass(frozen=True)
class AlertCursor:
    """What the sensor last told people, and the last check evaluation it looked at."""

    failing: bool = False
    evaluation_id: int | None = None

    @classmethod
    def parse(cls, text: str | None) -> "AlertCursor":
        return cls(**json.loads(text)) if text else cls()

    def dumps(self) -> str:
        return json.dumps({"failing": self.failing, "evaluation_id": self.evaluation_id})


# Evaluations that have an outcome; a PLANNED one is still running. Compared by value: Dagster
# 1.13 does not export the status enum (nor the record type) publicly.
COMPLETED_STATUSES = {"SUCCEEDED", "FAILED"}


def _latest_evaluation(context: SensorEvaluationContext):
    """The newest evaluation of the freshness check, or None when it never ran or still runs."""
    record = context.instance.get_latest_asset_check_evaluation_record(ONLINE_FRESHNESS_KEY)
    if record is None or record.status.value not in COMPLETED_STATUSES:
        return None
    return record


def _text(metadata: dict, name: str) -> str | None:
    value = metadata.get(name)
    return None if value is None or value.value is None else str(value.value)


def _alert(state: str, metadata: dict, freshness: FreshnessResource) -> Alert:
    lag = metadata.get("lag_days")
    return Alert(
        state=state,
        asset=ONLINE_ASSET,
        check=ONLINE_FRESHNESS_KEY.name,
        partition=_text(metadata, "expected_partition"),
        lag_days=None if lag is None or lag.value is None else float(lag.value),
        expected_as_of=_text(metadata, "expected_as_of"),
        actual_as_of=_text(metadata, "actual_as_of"),
        summary=_text(metadata, "reasons") or "",
        link=freshness.asset_url(ONLINE_ASSET),
    )


@sensor(
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="One alert when the online store freshness check starts failing, one when it "
    "recovers.",
)
def freshness_alert_sensor(
    context: SensorEvaluationContext, alerts: AlertSinkResource, freshness: FreshnessResource
) -> SensorResult:
    """The cursor holds what people were last told; an alert that could not be delivered leaves
    it unchanged, so the next evaluation tries again instead of losing the news.
    """
    cursor = AlertCursor.parse(context.cursor)
    record = _latest_evaluation(context)
    if record is None or record.event is None:
        return SensorResult(skip_reason="online_store_freshness has not run yet")
    evaluation = record.event.dagster_event.event_specific_data
    metadata = dict(evaluation.metadata)
    status = _text(metadata, "status")
    # Only a lag pages; "could not tell" and a stale-users warning are in the UI, and neither
    # counts as recovered: the store is back when the check says FRESH again.
    failing = not evaluation.passed and evaluation.severity == AssetCheckSeverity.ERROR
    recovered = status == FreshnessStatus.FRESH.value
    seen = AlertCursor(cursor.failing, record.id)
    if failing == cursor.failing or (not failing and not recovered):
        return SensorResult(
            cursor=seen.dumps(),
            skip_reason=f"no change: {'failing' if cursor.failing else 'passing'} ({status})",
        )
    alert = _alert("failing" if failing else "recovered", metadata, freshness)
    delivery = alerts.send(alert)
    if not delivery.delivered:
        context.log.error(
            f"{alert.state} alert for {alert.asset} not delivered to {delivery.destination} "
            f"after {delivery.attempts} attempts ({delivery.error}); will retry next evaluation"
        )
        return SensorResult(cursor=seen.dumps(), skip_reason="alert not delivered")
    context.log.info(f"sent {alert.state} alert to {delivery.destination}: {alert.text}")
    return SensorResult(
        cursor=AlertCursor(failing, record.id).dumps(),
        skip_reason=f"sent a {alert.state} alert to {delivery.destination}",
    )


freshness_checks = [online_store_freshness]
freshness_sensors = [freshness_alert_sensor]
