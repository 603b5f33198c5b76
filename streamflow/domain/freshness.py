"""The freshness rule: does the online store hold the newest snapshot month? Pure, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from streamflow.domain import months

MAX_EXAMPLES = 5
_DAY = timedelta(days=1)


class FreshnessStatus(StrEnum):
    FRESH = "FRESH"
    STALE = "STALE"
    UNKNOWN = "UNKNOWN"

    @property
    def exit_code(self) -> int:
        """What `streamflow freshness` exits with: 0 fresh, 1 stale, 2 could not tell."""
        return {"FRESH": 0, "STALE": 1, "UNKNOWN": 2}[self.value]


@dataclass(frozen=True)
class Thresholds:
    """When stale users warn, and how old the newest online month may be (None: no limit)."""

    stale_fraction_warn: float = 0.01
    max_age: timedelta | None = None


Interval = tuple[datetime, datetime]
# user -> feature view -> event time of the row the online store holds (None: no row).
UserEventTimes = Mapping[str, Mapping[str, datetime | None]]


@dataclass(frozen=True)
class FreshnessResult:
    """The verdict and the facts behind it, as the check, the CLI and the alerts report them."""

    status: FreshnessStatus
    reasons: tuple[str, ...]
    expected_as_of: datetime | None = None
    actual_as_of: datetime | None = None
    sampled_users: int = 0
    stale_users: int = 0
    missing_users: int = 0
    missing_examples: tuple[str, ...] = ()
    stale_examples: tuple[str, ...] = ()
    registry_through: Mapping[str, datetime | None] = field(default_factory=dict)
    age_days: float | None = None
    warning: bool = False

    @property
    def expected_partition(self) -> str | None:
        return months.key_for_as_of(self.expected_as_of) if self.expected_as_of else None

    @property
    def lag_days(self) -> float | None:
        """Days from what the store holds to the newest snapshot month; None when it holds none."""
        if self.expected_as_of is None or self.actual_as_of is None:
            return None
        return max(0.0, (self.expected_as_of - self.actual_as_of) / _DAY)

    @property
    def stale_fraction(self) -> float:
        return self.stale_users / self.sampled_users if self.sampled_users else 0.0

    @property
    def exit_code(self) -> int:
        return self.status.exit_code

    def facts(self) -> dict[str, str | int | float | None]:
        """The facts in reading order, with dates as ISO days: one line each in the CLI."""

        def day(moment: datetime | None) -> str | None:
            return moment.date().isoformat() if moment else None

        through = {view: day(end) for view, end in sorted(self.registry_through.items())}
        return {
            "status": self.status.value + (" (warning)" if self.warning else ""),
            "expected_partition": self.expected_partition,
            "expected_as_of": day(self.expected_as_of),
            "actual_as_of": day(self.actual_as_of),
            "lag_days": None if self.lag_days is None else round(self.lag_days, 2),
            "age_days": None if self.age_days is None else round(self.age_days, 2),
            "sampled_users": self.sampled_users,
            "stale_users": self.stale_users,
            "stale_fraction": round(self.stale_fraction, 4),
            "missing_users": self.missing_users,
            "missing_examples": ", ".join(self.missing_examples) or None,
            "registry_materialized_through": (
                ", ".join(f"{view}={end}" for view, end in through.items()) or None
            ),
            "reasons": "; ".join(self.reasons),
        }


def sample_users(user_ids: Sequence[str], size: int) -> list[str]:
    """Up to `size` users spread evenly over the sorted ids: the same sample on every run."""
    ordered = sorted(set(user_ids))
    if size <= 0 or len(ordered) <= size:
        return ordered
    step = len(ordered) / size
    return [ordered[int(i * step)] for i in range(size)]


def _day(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d}"


def evaluate_freshness(
    expected_as_of: datetime | None,
    event_times: UserEventTimes | None,
    registry_intervals: Mapping[str, Sequence[Interval]] | None,
    now: datetime,
    thresholds: Thresholds = Thresholds(),
) -> FreshnessResult:
    """Judge the online store against the newest month whose snapshots exist.

    `expected_as_of`: the newest snapshot month (None: no snapshots). `event_times`: what the
    store holds for a sample of that month's users (None: the store has no tables at all).
    `registry_intervals`: each feature view's materialized intervals in the Feast registry (None:
    the views are not registered). STALE when the sampled users or the registry lag that month,
    or when the newest online month is older than `thresholds.max_age`; UNKNOWN when there is
    nothing to compare, as Dagster says of an asset that never materialized.
    """
    if expected_as_of is None:
        return FreshnessResult(FreshnessStatus.UNKNOWN, ("no snapshots: nothing to compare with",))
    if registry_intervals is None:
        return FreshnessResult(
            FreshnessStatus.UNKNOWN,
            ("the Feast registry has no StreamFlow feature views (feature_registry not applied)",),
            expected_as_of=expected_as_of,
        )
    through = {
        view: max((end for _, end in intervals), default=None)
        for view, intervals in registry_intervals.items()
    }
    ever_materialized = any(end is not None for end in through.values())
    base = {"expected_as_of": expected_as_of, "registry_through": through}
    if event_times is None:
        if not ever_materialized:
            return FreshnessResult(
                FreshnessStatus.UNKNOWN, ("the online store was never written",), **base
            )
        return FreshnessResult(
            FreshnessStatus.STALE,
            ("the online store has no tables, yet the registry records materializations",),
            **base,
        )
    if not event_times:
        return FreshnessResult(
            FreshnessStatus.UNKNOWN, (f"no users to sample as of {_day(expected_as_of)}",), **base
        )

    missing, stale, held = [], [], []
    for user, views in sorted(event_times.items()):
        present = [t for t in views.values() if t is not None]
        if not present:
            missing.append(user)
            stale.append(user)
            continue
        if len(present) == len(views):
            held.append(min(present))
        if len(present) < len(views) or min(present) < expected_as_of:
            stale.append(user)
    if not ever_materialized and len(missing) == len(event_times):
        return FreshnessResult(
            FreshnessStatus.UNKNOWN, ("the online store was never written",), **base
        )

    # The month the store has reached: the newest month a sampled user holds in every view.
    actual = max(held, default=None)
    age = (now - actual) / _DAY if actual else None
    reasons = []
    if actual is None:
        reasons.append(
            f"the online store holds none of the {len(event_times)} sampled users"
            f" of {_day(expected_as_of)} in full"
        )
    elif actual < expected_as_of:
        reasons.append(
            f"the online store holds {_day(actual)}, expected {_day(expected_as_of)}"
            f" ({(expected_as_of - actual) / _DAY:g} days behind)"
        )
    # Feast's materialized intervals exclude their end, so the end must pass the as_of itself.
    behind = sorted(view for view, end in through.items() if end is None or end <= expected_as_of)
    if behind:
        reasons.append(
            f"the registry has not materialized {', '.join(behind)} through {_day(expected_as_of)}"
        )
    if thresholds.max_age is not None and age is not None and age > thresholds.max_age / _DAY:
        reasons.append(f"the newest online month is {age:.1f} days old (max {thresholds.max_age})")
    fraction = len(stale) / len(event_times)
    warning = not reasons and fraction > thresholds.stale_fraction_warn
    if warning:
        reasons.append(
            f"{fraction:.1%} of sampled users are stale"
            f" (warn above {thresholds.stale_fraction_warn:.1%})"
        )
    return FreshnessResult(
        FreshnessStatus.STALE if reasons and not warning else FreshnessStatus.FRESH,
        tuple(reasons) or (f"the online store holds {_day(expected_as_of)}",),
        actual_as_of=actual,
        sampled_users=len(event_times),
        stale_users=len(stale),
        missing_users=len(missing),
        missing_examples=tuple(missing[:MAX_EXAMPLES]),
        stale_examples=tuple(stale[:MAX_EXAMPLES]),
        age_days=age,
        warning=warning,
        **base,
    )
