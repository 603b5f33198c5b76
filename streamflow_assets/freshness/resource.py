"""How the online store's freshness is judged: thresholds, sample, and links to the Dagster UI."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from dagster import ConfigurableResource

from streamflow.domain.freshness import FreshnessResult, Thresholds

if TYPE_CHECKING:
    from feast import FeatureStore

    from streamflow.adapters.snapshots import SnapshotStore


class FreshnessResource(ConfigurableResource):
    """How the online store's freshness is judged, and where the Dagster UI is for alert links."""

    sample_size: int = 500
    stale_fraction_warn: float = 0.01
    max_age_days: float | None = None
    dagster_ui_url: str = "http://127.0.0.1:3000"

    def thresholds(self) -> Thresholds:
        max_age = timedelta(days=self.max_age_days) if self.max_age_days is not None else None
        return Thresholds(stale_fraction_warn=self.stale_fraction_warn, max_age=max_age)

    def evaluate(self, store: FeatureStore, snapshots: SnapshotStore) -> FreshnessResult:
        # Imported by the check that probes: the sensors that use this resource for alert links
        # run in the code server, which must not import Feast to serve its definitions.
        from streamflow.adapters.freshness_probe import check_online_store

        return check_online_store(store, snapshots, self.thresholds(), self.sample_size)

    def asset_url(self, asset: str) -> str:
        return f"{self.dagster_ui_url.rstrip('/')}/assets/{asset}"
