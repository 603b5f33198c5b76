"""Dagster freshness policies for the monthly assets: the previous month, online by a deadline."""

from datetime import timedelta

from dagster import AssetsDefinition, FreshnessPolicy

# Private, kept on purpose (Dagster 1.13.27): FreshnessPolicy.cron validates its lower bound
# against this very function and Dagster exports no public equivalent; using it keeps the clamp
# below identical to Dagster's own rule for any deadline a deployment configures.
from dagster._utils.schedules import get_smallest_cron_interval

from streamflow.settings import Settings

# Dagster judges a cron policy by the asset's last materialization, of any partition: at each
# deadline tick T it is fresh when it materialized after T - lower_bound_delta. The previous
# month can be written any time after it closes, or re-run later that month, so the window should
# be about a month. Dagster rejects more than the shortest gap between two ticks (28 days for
# "0 6 2 * *": 2 Feb to 2 Mar), because then one run could meet two deadlines; 28 days still
# leaves out the run that met the previous deadline (at least 28 days earlier). A tight window
# (from the month's as_of) would fail a month whose seeds came early, and could not tell which
# partition ran anyway: the `online_store_freshness` check reads what the store actually holds.
MONTH_WINDOW = timedelta(days=28)


def monthly_freshness_policy(settings: Settings) -> FreshnessPolicy:
    """The previous month materialized by `STREAMFLOW_FRESHNESS_DEADLINE_CRON` (UTC)."""
    cron = settings.freshness_deadline_cron
    window = min(MONTH_WINDOW, get_smallest_cron_interval(cron, "UTC"))
    return FreshnessPolicy.cron(deadline_cron=cron, lower_bound_delta=window, timezone="UTC")


def held_monthly(asset: AssetsDefinition, settings: Settings) -> AssetsDefinition:
    """`asset` with the monthly freshness policy of `settings`: for every asset that must hold
    last month by the deadline (`online_features`, `production_model`), given to it where the
    definitions are built from the settings."""
    policy = monthly_freshness_policy(settings)
    return asset.map_asset_specs(lambda spec: spec.replace_attributes(freshness_policy=policy))
