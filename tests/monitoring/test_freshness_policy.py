"""The Dagster freshness policy: previous month by 06:00 UTC on the 2nd, configurable."""

from __future__ import annotations

from datetime import timedelta

import pytest
from dagster import AssetKey, DefaultSensorStatus

from streamflow.settings import Settings
from streamflow_assets.definitions import build_definitions
from streamflow_assets.freshness.policy import MONTH_WINDOW, monthly_freshness_policy


def test_online_features_carries_the_monthly_cron_policy(settings_for, tmp_path) -> None:
    defs = build_definitions(settings_for(tmp_path / "data", tmp_path / "seeds"))
    node = defs.resolve_asset_graph().get(AssetKey("online_features"))
    policy = node.freshness_policy
    assert (policy.deadline_cron, policy.timezone) == ("0 6 2 * *", "UTC")
    assert policy.lower_bound_delta == MONTH_WINDOW == timedelta(days=28)
    sensor = defs.resolve_sensor_def("freshness_alert_sensor")
    assert sensor.default_status == DefaultSensorStatus.RUNNING


@pytest.mark.parametrize(
    ("cron", "window"),
    [
        ("0 6 2 * *", timedelta(days=28)),
        ("30 8 5 * *", timedelta(days=28)),
        ("0 6 * * *", timedelta(days=1)),
        ("0 6 * * 1", timedelta(days=7)),
    ],
)
def test_the_deadline_comes_from_settings_and_the_window_fits_it(
    settings_for, tmp_path, cron: str, window: timedelta
) -> None:
    settings = settings_for(tmp_path, tmp_path, freshness_deadline_cron=cron)
    policy = monthly_freshness_policy(settings)
    assert (policy.deadline_cron, policy.lower_bound_delta) == (cron, window)


def test_the_policy_is_given_by_the_settings_the_definitions_are_built_from(tmp_path) -> None:
    """Not read from the environment when the asset modules are imported."""
    settings = Settings(data_dir=tmp_path, seeds_dir=tmp_path, freshness_deadline_cron="0 7 3 * *")
    graph = build_definitions(settings).resolve_asset_graph()
    for asset in ("online_features", "production_model"):
        assert graph.get(AssetKey(asset)).freshness_policy.deadline_cron == "0 7 3 * *"
