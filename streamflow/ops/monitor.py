"""A month's drift and decay as the monitoring assets recorded them (`streamflow monitor`)."""

from __future__ import annotations

from streamflow.domain import months
from streamflow.settings import get_settings


def _latest_metadata(instance, asset: str, partition: str) -> dict[str, object] | None:
    from dagster import AssetKey, AssetRecordsFilter

    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def monitor_report(instance, partition: str | None) -> tuple[int, dict[str, object]]:
    """A month's drift and decay as the monitoring assets recorded them, and its exit code:
    0 nothing drifted and decay within its threshold, 1 drift or decay, 2 cannot tell."""
    from dagster import AssetKey

    if partition is None:
        partitions = instance.get_materialized_partitions(AssetKey("feature_drift"))
        if not partitions:
            return 2, {"partition": None, "error": "feature_drift was never materialized"}
        partition = max(partitions)
    months.month_index(partition)
    drift = _latest_metadata(instance, "feature_drift", partition)
    if drift is None:
        return 2, {"partition": partition, "error": f"feature_drift {partition} not materialized"}
    if drift.get("status") != "measured":
        return 2, {"partition": partition, "error": f"{drift.get('status')}: {drift.get('reason')}"}
    measured = drift["drift"]
    decay = _latest_metadata(instance, "model_performance", partition) or {}
    performance = (
        {"auc": decay["auc"], "decay": decay["decay"], "model_version": decay["incumbent_version"]}
        if decay.get("status") == "measured"
        else None
    )
    report = {
        "partition": partition,
        "reference_partition": drift["reference_partition"],
        "drift_share": measured["drift_share"],
        "dataset_drift": measured["dataset_drift"],
        "columns": {
            name: {k: facts[k] for k in ("statistic", "score", "threshold", "drifted")}
            for name, facts in measured["columns"].items()
        },
        "performance": performance,
        "served": _served(instance, partition),
    }
    decayed = performance is not None and performance["decay"] > get_settings().decay_max_auc_drop
    drifted = measured["dataset_drift"] or any(c["drifted"] for c in report["columns"].values())
    return (1 if drifted or decayed else 0), report


def _served(instance, partition: str) -> dict[str, object] | None:
    """What the API answered on the month's features (`served_predictions`), or None when
    that month was not measured: count, AUC by served version, shadow agreement."""
    served = _latest_metadata(instance, "served_predictions", partition)
    if served is None:
        return None
    if served.get("status") != "measured":
        return {"status": served.get("status"), "count": served.get("count", 0)}
    summary = served["served"]
    shadow = summary.get("shadow") or {}
    return {
        "status": "measured",
        "count": summary["count"],
        "auc": {version: facts.get("auc") for version, facts in summary["versions"].items()},
        "stale_share": summary["stale_share"],
        "batch_agreement": summary.get("batch_agreement"),
        "shadow_agreement": shadow.get("agreement"),
        "shadow_versions": shadow.get("versions", []),
        # Both AUCs on the same labelled users: the shadowed ones.
        "shadow_auc": (shadow.get("shadow") or {}).get("auc"),
        "shadowed_served_auc": (shadow.get("served") or {}).get("auc"),
    }
