"""Model monitoring: batch scores, feature drift and decay per month, what the API served, and
the retraining sensor.

Two versions matter for a month M: the *incumbent*, the champion before M's own promotion decision
(it never saw M's labels), and the *champion after M*. Drift and decay judge the incumbent, so they
need no training and run before it; batch scores use the champion after M.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    DefaultSensorStatus,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
    sensor,
)

from streamflow.adapters.alerts import MonitoringAlert
from streamflow.adapters.registry import Registry
from streamflow.adapters.snapshots import SnapshotStore
from streamflow.domain import months
from streamflow.domain.features import FEATURE_COLUMNS, JOIN_KEY, LABEL, model_inputs
from streamflow.domain.model_monitoring import (
    DECISION_THRESHOLD,
    SNAPSHOT_TABLES,
    DriftResult,
    drift_frame,
    performance,
    retrain_reasons,
    sample_chunks,
    score_summary,
    served_performance,
    typed_chunks,
)
from streamflow_assets.features.assets import LABELS_TABLE
from streamflow_assets.jobs import RETRAIN_REASON_TAG, RETRAINING_JOB
from streamflow_assets.partitions import monthly_partitions
from streamflow_assets.promotion.assets import production_model
from streamflow_assets.resources import (
    AlertSinkResource,
    DriftResource,
    FreshnessResource,
    LimitsResource,
    ModelRegistryResource,
    PolicyResource,
    PredictionLogResource,
    SnapshotsResource,
)

if TYPE_CHECKING:  # MLflow is imported by the steps that talk to the registry, not at load
    from mlflow.entities.model_registry import ModelVersion

GROUP = "monitoring"
BATCH_SCORES_TABLE = "batch_scores"
DRIFT_CHECK = "drift_share_below_threshold"
DRIFT_REPORT = "feature_drift.html"


def _feature_chunks(
    store: SnapshotStore, partition: str, rows: int, labelled: bool = False
) -> Iterator[pd.DataFrame]:
    """A month's features (`month_features`' rows and dtypes), `rows` users at a time, with
    their label if `labelled` (users without one left out); KeyError naming the month when a
    snapshot is missing."""
    as_of = months.as_of(partition)
    missing = [table for table in SNAPSHOT_TABLES if not store.row_count(table, as_of)]
    if missing:
        raise KeyError(f"month {partition} has no feature snapshots ({', '.join(missing)})")
    tables = {LABELS_TABLE: [LABEL]} | FEATURE_COLUMNS if labelled else FEATURE_COLUMNS
    require = LABELS_TABLE if labelled else None
    return typed_chunks(store.join_batches(tables, as_of, rows, require=require))


def _not_measured(status: str, reason: str, **facts: object) -> dict[str, object]:
    return {"status": status, "reason": reason, **facts}


def _histogram_md(histogram: list[tuple[str, int]]) -> str:
    rows = "\n".join(f"| {band} | {count} |" for band, count in histogram)
    return f"| probability | users |\n|---|---|\n{rows}"


@asset(
    group_name=GROUP,
    kinds={"pandas", "onnx"},
    partitions_def=monthly_partitions,
    deps=[production_model, *SNAPSHOT_TABLES],
)
def batch_scores(
    context: AssetExecutionContext,
    snapshots: SnapshotsResource,
    model_registry: ModelRegistryResource,
    limits: LimitsResource,
) -> MaterializeResult:
    """Every user of the month scored by the champion after the month's promotion decision."""
    key = context.partition_key
    registry = model_registry.registry()
    champion = registry.champion_at(key, before_decision=False)
    if champion is None:
        # Nothing is written: scores already stored for the month (if any) stay as they were.
        return MaterializeResult(
            metadata=_not_measured("no_champion", f"no version was promoted up to {key}")
        )
    store = snapshots.store()
    # The ONNX twin /predict serves, on the same model inputs: the same probabilities.
    model = registry.compiled_model(champion.version)
    probabilities: list[np.ndarray] = []

    def scored() -> Iterator[pd.DataFrame]:
        for features in _feature_chunks(store, key, limits.chunk_rows):
            probability = model.predict_proba(model_inputs(features)).astype("float64")
            probabilities.append(probability)
            yield pd.DataFrame(
                {
                    JOIN_KEY: features[JOIN_KEY],
                    "probability": probability,
                    "prediction": (probability >= DECISION_THRESHOLD).astype("int64"),
                    "model_version": str(champion.version),
                }
            )

    # Each chunk's scores go to the store as they are made; only the probabilities (8 bytes a
    # user) stay, for the month's summary.
    store.write_month(months.as_of(key), {BATCH_SCORES_TABLE: scored()})
    summary = score_summary(np.concatenate(probabilities))
    return MaterializeResult(
        metadata={
            "status": "scored",
            "dagster/row_count": summary["rows"],
            "as_of": months.as_of_date(key).isoformat(),
            "model_version": str(champion.version),
            "model_partition": champion.tags.get("partition", "unknown"),
            "mean_probability": MetadataValue.float(round(summary["mean_probability"], 6)),
            "predicted_churn_share": MetadataValue.float(
                round(summary["predicted_churn_share"], 6)
            ),
            "score_histogram": MetadataValue.md(_histogram_md(summary["histogram"])),
        }
    )


def _report_link(registry: Registry, run_id: str) -> MetadataValue:
    """The Evidently report: its page in the MLflow UI when there is one (a browser will not open
    a file:// link from the Dagster UI), else its file, which the UI offers to copy."""
    page = registry.artifact_page(run_id, DRIFT_REPORT)
    if page is not None:
        return MetadataValue.url(page)
    uri = registry.artifact_uri(run_id, DRIFT_REPORT)
    return (
        MetadataValue.path(uri.removeprefix("file://"))
        if uri.startswith("file://")
        else MetadataValue.url(uri)
    )


def _drift_table(result: DriftResult) -> MetadataValue:
    schema = TableSchema(
        columns=[
            TableColumn("column", "string"),
            TableColumn("statistic", "string"),
            TableColumn("score", "float"),
            TableColumn("threshold", "float"),
            TableColumn("drifted", "bool"),
        ]
    )
    records = [
        TableRecord(
            {
                "column": c.name,
                "statistic": c.statistic,
                "score": round(c.score, 6) if c.score is not None else None,
                "threshold": c.threshold,
                "drifted": c.drifted,
            }
        )
        for c in result.columns
    ]
    return MetadataValue.table(records, schema)


def _reference(registry: Registry, key: str) -> tuple["ModelVersion | None", str | None]:
    incumbent = registry.champion_at(key, before_decision=True)
    return incumbent, (incumbent.tags.get("partition") if incumbent else None)


@asset(
    group_name=GROUP,
    kinds={"evidently", "mlflow"},
    partitions_def=monthly_partitions,
    deps=SNAPSHOT_TABLES,
    check_specs=[
        AssetCheckSpec(
            DRIFT_CHECK,
            asset="feature_drift",
            description="The share of drifted columns stays below STREAMFLOW_DRIFT_SHARE.",
        )
    ],
)
def feature_drift(
    context: AssetExecutionContext,
    snapshots: SnapshotsResource,
    model_registry: ModelRegistryResource,
    drift: DriftResource,
    limits: LimitsResource,
    policy: PolicyResource,
) -> MaterializeResult:
    """The month's 14 features and the incumbent's scores against its training month (Evidently)."""
    key = context.partition_key
    threshold = policy.drift_share
    registry = model_registry.registry()
    incumbent, reference_partition = _reference(registry, key)
    store = snapshots.store()
    metadata: dict[str, object]
    if incumbent is None:
        metadata = _not_measured(
            "no_incumbent", f"no version was promoted before {key}: nothing to compare against"
        )
    else:
        try:
            # Evidently takes DataFrames: each side is its seeded sample, drawn as it streams by.
            (reference, reference_rows), (current, current_rows) = (
                sample_chunks(_feature_chunks(store, month, limits.chunk_rows))
                for month in (reference_partition, key)
            )
        except KeyError as error:
            metadata = _not_measured(
                "reference_missing" if reference_partition in str(error) else "current_missing",
                str(error.args[0]),
                incumbent_version=str(incumbent.version),
                reference_partition=reference_partition,
            )
        else:
            model = registry.compiled_model(incumbent.version)
            result, html = drift.measure(
                *(
                    drift_frame(side, model.predict_proba(model_inputs(side)))
                    for side in (reference, current)
                ),
                threshold,
                rows=(reference_rows, current_rows),
            )
            run_id = registry.log_monitoring(
                "feature_drift",
                key,
                incumbent,
                {"drift_share": result.drift_share}
                | {f"drift_score.{c.name}": c.score for c in result.columns if c.score is not None},
                {DRIFT_REPORT: html, "feature_drift.json": json.dumps(result.as_dict(), indent=1)},
            )
            context.log.info(
                f"{key} vs {reference_partition}: drift share {result.drift_share:.3f}, "
                f"drifted: {', '.join(result.drifted) or 'none'}"
            )
            metadata = {
                "status": "measured",
                "incumbent_version": str(incumbent.version),
                "reference_partition": reference_partition,
                "drift_share": MetadataValue.float(round(result.drift_share, 6)),
                "reference_rows": reference_rows,
                "current_rows": current_rows,
                # Evidently tests a seeded uniform sample of each side (every user of a side
                # that has no more): `domain.model_monitoring.sample_chunks`.
                "sampled_rows": f"{len(reference):,} of {reference_rows:,} (reference), "
                f"{len(current):,} of {current_rows:,} (current)",
                "share_threshold": threshold,
                "dataset_drift": result.dataset_drift,
                "drifted_columns": ", ".join(result.drifted) or "none",
                "columns": _drift_table(result),
                "drift": MetadataValue.json(result.as_dict()),
                "report": _report_link(registry, run_id),
                "mlflow_run_id": run_id,
            }
    measured = metadata["status"] == "measured"
    check = AssetCheckResult(
        check_name=DRIFT_CHECK,
        passed=not (measured and metadata["dataset_drift"]),
        severity=AssetCheckSeverity.WARN,
        metadata={
            "status": metadata["status"],
            "drift_share": metadata.get("drift_share", MetadataValue.null()),
            "share_threshold": threshold,
        },
    )
    return MaterializeResult(metadata=metadata, check_results=[check])


@asset(
    group_name=GROUP,
    kinds={"scikitlearn", "mlflow"},
    partitions_def=monthly_partitions,
    deps=[LABELS_TABLE, *SNAPSHOT_TABLES],
)
def model_performance(
    context: AssetExecutionContext,
    snapshots: SnapshotsResource,
    model_registry: ModelRegistryResource,
    limits: LimitsResource,
) -> MaterializeResult:
    """How the incumbent did on the month's labels (it never saw them): AUC, F1, Brier, decay."""
    key = context.partition_key
    registry = model_registry.registry()
    incumbent, trained_on = _reference(registry, key)
    store = snapshots.store()
    if incumbent is None:
        return MaterializeResult(
            metadata=_not_measured("no_incumbent", f"no version was promoted before {key}")
        )
    facts = {"incumbent_version": str(incumbent.version), "reference_partition": trained_on}
    if not store.row_count(LABELS_TABLE, months.as_of(key)):
        return MaterializeResult(
            metadata=_not_measured("no_labels", f"month {key} has no labels yet", **facts)
        )
    model = registry.compiled_model(incumbent.version)
    labels, probabilities = [], []
    try:
        for labelled in _feature_chunks(store, key, limits.chunk_rows, labelled=True):
            labels.append(labelled[LABEL].to_numpy(dtype=int))
            probabilities.append(model.predict_proba(model_inputs(labelled)))
    except KeyError as error:
        return MaterializeResult(
            metadata=_not_measured("current_missing", str(error.args[0]), **facts)
        )
    scores = performance(
        np.concatenate(labels),
        np.concatenate(probabilities),
        float(incumbent.tags.get("val_auc", "nan")),
    )
    run_id = registry.log_monitoring("model_performance", key, incumbent, scores)
    context.log.info(
        f"v{incumbent.version} (trained {trained_on}) on {key}'s labels: AUC {scores['auc']:.4f}, "
        f"decay {scores['decay']:+.4f}"
    )
    return MaterializeResult(
        metadata={
            "status": "measured",
            **facts,
            **{
                name: MetadataValue.int(value)
                if isinstance(value, int)
                else MetadataValue.float(round(value, 6))
                for name, value in scores.items()
            },
            "mlflow_run_id": run_id,
        }
    )


def _served_table(versions: dict[str, dict[str, object]]) -> MetadataValue:
    schema = TableSchema(
        columns=[
            TableColumn("model_version", "string"),
            TableColumn("answers", "int"),
            TableColumn("labelled_users", "int"),
            TableColumn("auc", "float"),
            TableColumn("f1", "float"),
            TableColumn("brier", "float"),
        ]
    )
    records = [
        TableRecord(
            {
                "model_version": version,
                "answers": facts["count"],
                **{
                    name: facts.get(name)
                    if not isinstance(facts.get(name), float)
                    else round(facts[name], 6)
                    for name in ("labelled_users", "auc", "f1", "brier")
                },
            }
        )
        for version, facts in versions.items()
    ]
    return MetadataValue.table(records, schema)


def _plotted(value: object) -> MetadataValue:
    """A number the UI plots across partitions; null where there is none."""
    return MetadataValue.null() if value is None else MetadataValue.float(round(float(value), 6))


@asset(
    group_name=GROUP,
    kinds={"pandas"},
    partitions_def=monthly_partitions,
    deps=[batch_scores, LABELS_TABLE],
)
def served_predictions(
    context: AssetExecutionContext,
    prediction_log: PredictionLogResource,
    snapshots: SnapshotsResource,
) -> MaterializeResult:
    """What /predict answered on the month's features, judged on its labels: per version and
    for the shadow challenger beside it (the API's prediction log)."""
    key = context.partition_key
    last_day = months.as_of_date(key)
    served = prediction_log.log().read(last_day.replace(day=1), last_day)
    if served.empty:
        context.log.info(f"no answers logged for features of {key}")
        return MaterializeResult(
            metadata={
                "status": "no_traffic",
                "reason": f"the prediction log holds no answer on features of {key}",
                "count": 0,
            }
        )
    store, as_of = snapshots.store(), months.as_of(key)
    labels = store.read(LABELS_TABLE, as_of) if store.row_count(LABELS_TABLE, as_of) else None
    batch = (
        store.read(BATCH_SCORES_TABLE, as_of)
        if store.row_count(BATCH_SCORES_TABLE, as_of)
        else None
    )
    summary = served_performance(served, labels, batch)
    shadow = summary["shadow"] or {}
    latest = summary["versions"][max(summary["versions"], key=int)]
    context.log.info(
        f"{key}: {summary['count']} answers, versions {', '.join(summary['versions'])}, "
        f"shadow agreement {shadow.get('agreement')}"
    )
    return MaterializeResult(
        metadata={
            "status": "measured",
            "count": summary["count"],
            "requests": summary["requests"],
            "users": summary["users"],
            "labelled": summary["labelled"],
            "stale_share": _plotted(summary["stale_share"]),
            "batch_agreement": _plotted(summary.get("batch_agreement")),
            # The newest served version's figures under fixed names, so the UI plots them.
            "served_version": max(summary["versions"], key=int),
            "served_auc": _plotted(latest.get("auc")),
            "served_f1": _plotted(latest.get("f1")),
            "served_brier": _plotted(latest.get("brier")),
            "versions": _served_table(summary["versions"]),
            "shadow_versions": ", ".join(shadow.get("versions", [])) or "none",
            "shadow_count": shadow.get("count", 0),
            "shadow_agreement": _plotted(shadow.get("agreement")),
            "shadow_auc": _plotted((shadow.get("shadow") or {}).get("auc")),
            "shadowed_served_auc": _plotted((shadow.get("served") or {}).get("auc")),
            "served": MetadataValue.json(summary),
        }
    )


@dataclass
class RetrainCursor:
    """What the retraining sensor has acted on: the last monitoring event it read, the reasons
    already fired per month, and the months whose retrained candidate's decision is awaited
    (with the production_model event id that decision must come after)."""

    after: int = 0
    fired: dict[str, list[str]] = field(default_factory=dict)
    awaiting: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> "RetrainCursor":
        return cls(**json.loads(text)) if text else cls()

    def dumps(self) -> str:
        return json.dumps(
            {"after": self.after, "fired": self.fired, "awaiting": self.awaiting}, sort_keys=True
        )


def _latest(context: SensorEvaluationContext, asset_key: AssetKey, partition: str):
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
    ).records
    return records[0] if records else None


def _values(record) -> dict[str, object]:
    if record is None:
        return {}
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def _as_float(value: object) -> float | None:
    return None if value is None else float(value)


def month_evidence(
    context: SensorEvaluationContext, partition: str, policy: PolicyResource
) -> list[str]:
    """The retraining reasons a month's latest drift and performance results show."""
    drift = _values(_latest(context, feature_drift.key, partition))
    decay = _values(_latest(context, model_performance.key, partition))
    statuses = {drift.get("status"), decay.get("status")}
    measured_any = drift or decay
    if not measured_any:
        return []
    champion = (
        None
        if "no_incumbent" in statuses
        else (drift.get("reference_partition") or decay.get("reference_partition"))
    )
    return [
        reason.value
        for reason in retrain_reasons(
            partition=partition,
            champion_partition=champion,
            drift_share=_as_float(drift.get("drift_share"))
            if drift.get("status") == "measured"
            else None,
            drift_share_threshold=policy.drift_share,
            decay=_as_float(decay.get("decay")) if decay.get("status") == "measured" else None,
            max_auc_drop=policy.decay_max_auc_drop,
            max_age_months=policy.retrain_max_age_months,
        )
    ]


def _newest_id(context: SensorEvaluationContext, asset_key: AssetKey, partition: str) -> int:
    record = _latest(context, asset_key, partition)
    return record.storage_id if record else 0


@sensor(
    name="retraining_sensor",
    job_name=RETRAINING_JOB,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Requests churn_model + production_model + batch_scores for a month whose drift "
    "check fails, whose decay is over its threshold, whose champion is too old, or that has no "
    "champion (STREAMFLOW_RETRAIN=on_trigger); alerts on the evidence under both policies.",
)
def retraining_sensor(
    context: SensorEvaluationContext,
    alerts: AlertSinkResource,
    freshness: FreshnessResource,
    policy: PolicyResource,
) -> SensorResult:
    cursor = RetrainCursor.parse(context.cursor)
    new_events = [
        record
        for asset_key in (feature_drift.key, model_performance.key)
        for record in context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=asset_key, after_storage_id=cursor.after),
            limit=1000,
            ascending=True,
        ).records
    ]
    requests: list[RunRequest] = []
    for partition in sorted({r.partition_key for r in new_events if r.partition_key}):
        already = cursor.fired.get(partition, [])
        new = [
            reason for reason in month_evidence(context, partition, policy) if reason not in already
        ]
        if not new:
            continue
        on_trigger = policy.retrain == "on_trigger"
        if on_trigger:
            requests.append(
                RunRequest(
                    run_key=f"retrain:{partition}:{'+'.join(new)}",
                    partition_key=partition,
                    tags={RETRAIN_REASON_TAG: ",".join(new)},
                )
            )
        alert = MonitoringAlert(
            state="fired",
            asset=feature_drift.key.to_user_string(),
            partition=partition,
            reasons=tuple(new),
            policy=policy.retrain,
            summary=(
                "requested churn_model, production_model and batch_scores for the month"
                if on_trigger
                else "monthly_pipeline trains a candidate every month; its decision follows"
            ),
            link=freshness.asset_url(feature_drift.key.to_user_string()),
        )
        alerts.send(alert)
        cursor.fired[partition] = [*already, *new]
        # Under `monthly` the month's own run may already have decided: any decision counts.
        cursor.awaiting[partition] = (
            _newest_id(context, production_model.key, partition) if on_trigger else 0
        )
    for partition, after in list(cursor.awaiting.items()):
        decided = _latest(context, production_model.key, partition)
        if decided is None or decided.storage_id <= after:
            continue
        facts = _values(decided)
        alerts.send(
            MonitoringAlert(
                state="decided",
                asset=production_model.key.to_user_string(),
                partition=partition,
                reasons=tuple(cursor.fired.get(partition, [])),
                policy=policy.retrain,
                summary=f"candidate v{facts.get('candidate_version')} {facts.get('decision')}: "
                f"{facts.get('reason')}",
                link=freshness.asset_url(production_model.key.to_user_string()),
            )
        )
        del cursor.awaiting[partition]
    if new_events:
        cursor.after = max(cursor.after, *(r.storage_id for r in new_events))
    return SensorResult(run_requests=requests, cursor=cursor.dumps())


monitoring_assets = [batch_scores, feature_drift, model_performance, served_predictions]
