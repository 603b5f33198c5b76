"""The freshness rule on hand-made observations: every verdict, its facts and its exit code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from streamflow.domain import months
from streamflow.domain.freshness import (
    FreshnessStatus,
    Thresholds,
    evaluate_freshness,
    sample_users,
)

JAN, FEB = months.as_of("2024-01"), months.as_of("2024-02")
NOW = datetime(2024, 3, 1, 12, tzinfo=UTC)
VIEWS = ("subs_profile", "usage_agg_30d", "payments_agg_90d", "support_agg_90d")
SECOND = timedelta(seconds=1)


def users(n: int, at: datetime | None, prefix: str = "u") -> dict[str, dict[str, datetime | None]]:
    return {f"{prefix}{i:04d}": dict.fromkeys(VIEWS, at) for i in range(n)}


def through(at: datetime | None) -> dict[str, list[tuple[datetime, datetime]]]:
    """Registry intervals as `materialize_month` records them: (as_of, as_of + 1s) per view."""
    return {view: [] if at is None else [(JAN, JAN + SECOND), (at, at + SECOND)] for view in VIEWS}


def test_a_store_holding_the_newest_month_is_fresh() -> None:
    result = evaluate_freshness(FEB, users(100, FEB), through(FEB), NOW)
    assert result.status is FreshnessStatus.FRESH and result.exit_code == 0
    assert (result.actual_as_of, result.lag_days, result.stale_users) == (FEB, 0.0, 0)
    assert not result.warning
    facts = result.facts()
    assert facts["expected_partition"] == "2024-02"
    assert facts["expected_as_of"] == facts["actual_as_of"] == "2024-02-29"


def test_a_new_month_not_materialized_is_stale_by_its_lag_with_new_users_missing() -> None:
    held = users(95, JAN) | users(5, None, prefix="new")
    result = evaluate_freshness(FEB, held, through(JAN), NOW)
    assert result.status is FreshnessStatus.STALE and result.exit_code == 1
    assert (result.expected_as_of, result.actual_as_of, result.lag_days) == (FEB, JAN, 29.0)
    assert (result.stale_users, result.missing_users, result.stale_fraction) == (100, 5, 1.0)
    assert result.missing_examples == ("new0000", "new0001", "new0002", "new0003", "new0004")
    assert any("29 days behind" in reason for reason in result.reasons)
    assert any("registry has not materialized" in reason for reason in result.reasons)


@pytest.mark.parametrize(
    ("held", "registry", "reason"),
    [
        pytest.param(users(100, JAN), through(FEB), "holds 2024-01-31", id="rolled back"),
        pytest.param(users(100, None), through(FEB), "holds none", id="wiped"),
        pytest.param(None, through(FEB), "has no tables", id="tables dropped"),
    ],
)
def test_a_store_behind_its_own_registry_is_stale(held, registry, reason: str) -> None:
    result = evaluate_freshness(FEB, held, registry, NOW)
    assert result.status is FreshnessStatus.STALE
    assert any(reason in r for r in result.reasons), result.reasons


def test_one_view_behind_in_the_registry_is_stale_even_if_users_look_fresh() -> None:
    registry = through(FEB) | {"support_agg_90d": [(JAN, JAN + SECOND)]}
    result = evaluate_freshness(FEB, users(10, FEB), registry, NOW)
    assert result.status is FreshnessStatus.STALE
    assert result.reasons == (
        "the registry has not materialized support_agg_90d through 2024-02-29",
    )


def test_an_interval_ending_exactly_at_as_of_does_not_cover_it() -> None:
    # Feast materializes [start, end): rows stamped `end` itself are not in.
    registry = {view: [(JAN, FEB)] for view in VIEWS}
    assert evaluate_freshness(FEB, users(3, FEB), registry, NOW).status is FreshnessStatus.STALE


@pytest.mark.parametrize(
    ("stale", "warn_above", "warning"),
    [(0, 0.01, False), (1, 0.01, False), (2, 0.01, True), (2, 0.05, False), (30, 0.25, True)],
)
def test_a_fraction_of_stale_users_warns_above_the_threshold(
    stale: int, warn_above: float, warning: bool
) -> None:
    held = users(100 - stale, FEB) | users(stale, JAN, prefix="old")
    result = evaluate_freshness(FEB, held, through(FEB), NOW, Thresholds(warn_above))
    assert result.status is FreshnessStatus.FRESH and result.exit_code == 0
    assert result.stale_fraction == pytest.approx(stale / 100)
    assert result.warning is warning
    assert result.facts()["status"] == ("FRESH (warning)" if warning else "FRESH")


def test_a_user_missing_from_one_view_is_stale_but_not_missing() -> None:
    held = users(99, FEB) | {"partial": dict.fromkeys(VIEWS, FEB) | {"usage_agg_30d": None}}
    result = evaluate_freshness(FEB, held, through(FEB), NOW, Thresholds(0.0))
    assert (result.stale_users, result.missing_users) == (1, 0)
    assert result.stale_examples == ("partial",)
    assert result.warning


@pytest.mark.parametrize(
    ("max_age", "status"),
    [
        (None, FreshnessStatus.FRESH),
        (timedelta(days=30), FreshnessStatus.FRESH),
        (timedelta(days=1), FreshnessStatus.STALE),
    ],
)
def test_max_age_against_the_wall_clock_applies_only_when_configured(max_age, status) -> None:
    result = evaluate_freshness(FEB, users(10, FEB), through(FEB), NOW, Thresholds(max_age=max_age))
    assert result.status is status
    assert result.age_days == pytest.approx(1.5)


def test_the_wall_clock_never_fails_historical_data_by_default() -> None:
    years_later = NOW + timedelta(days=3 * 365)
    assert evaluate_freshness(FEB, users(10, FEB), through(FEB), years_later).status is (
        FreshnessStatus.FRESH
    )


@pytest.mark.parametrize(
    ("expected", "held", "registry", "reason"),
    [
        pytest.param(None, {}, None, "no snapshots", id="no snapshots"),
        pytest.param(FEB, {}, None, "registry has no", id="registry missing"),
        pytest.param(FEB, None, through(None), "never written", id="no online tables"),
        pytest.param(FEB, users(5, None), through(None), "never written", id="empty store"),
        pytest.param(FEB, {}, through(FEB), "no users to sample", id="empty month"),
    ],
)
def test_nothing_to_compare_is_unknown_not_stale(expected, held, registry, reason: str) -> None:
    result = evaluate_freshness(expected, held, registry, NOW)
    assert result.status is FreshnessStatus.UNKNOWN and result.exit_code == 2
    assert reason in result.reasons[0]


def test_facts_name_everything_the_check_and_cli_report() -> None:
    facts = evaluate_freshness(FEB, users(3, JAN), through(JAN), NOW).facts()
    assert list(facts) == [
        "status",
        "expected_partition",
        "expected_as_of",
        "actual_as_of",
        "lag_days",
        "age_days",
        "sampled_users",
        "stale_users",
        "stale_fraction",
        "missing_users",
        "missing_examples",
        "registry_materialized_through",
        "reasons",
    ]
    assert facts["lag_days"] == 29.0
    assert "subs_profile=2024-01-31" in facts["registry_materialized_through"]


@pytest.mark.parametrize(("n", "size"), [(10, 20), (10, 10), (7043, 500), (1000, 3)])
def test_the_user_sample_is_sorted_spread_and_stable(n: int, size: int) -> None:
    ids = [f"{i:05d}" for i in range(n)][::-1]
    sample = sample_users(ids, size)
    assert len(sample) == min(n, size)
    assert sample == sorted(set(sample)) and sample[0] == "00000"
    assert sample == sample_users(list(reversed(ids)), size)
    if size < n:
        assert sample[-1] >= f"{n - n // size - 1:05d}"
