"""Seeded synthetic seeds: `month_NNN/` folders in the exact CSV format of the real seeds.

Population. Month 0 draws `users` subscribers whose profiles follow the joint shape of the real
seeds: contract given household, tenure given contract, internet service given contract and age,
streaming and paperless billing given service, fee given service, streaming and tenure. Every month
then draws fresh 30/90-day usage aggregates around persistent per-user levels (watch hours, devices,
rebuffer, failed-payment and ticket propensities) and a churn label from a logistic model over
contract, tenure, fee, service, failed payments, support tickets, rebuffering and watch hours, plus
an unobserved per-user frailty so the signal is strong but not perfect (a forest reaches about the
AUC it reaches on the real seeds).

Drift. Watch hours fall while rebuffering, failed payments and support tickets rise, each by about
the amount the real month_001 moved, levelling off over the first year (factor 1 - 0.8**month);
the label leans more on usage and less on the profile as months pass. From month 2 (2024-03) on, a
catalogue change makes skips_7d (noise until then) rise and drive churn: a model trained before it
cannot rank users by it, so the month's candidate clearly beats the champion (the demo's promotion).

Departures and sign-ups. `churn_label` True in month m means the user asked to cancel: with
probability DEPARTURE_PROBABILITY (0.3) they are gone from month m+1; the others accepted a
retention offer, stay, and are scored again. Users labelled False always stay. Stayers age one month
(months_active + 1, capped at MAX_MONTHS_ACTIVE, the data contract's bound), keep their
signup_date and pay one more monthly_fee into total_paid. From month 1 on, Poisson(departures) new
subscribers join each chunk, so the population stays near `users`; each copies the household and
plan (gender, senior, family, dependents, contract, service, streaming, paperless) of a random
departed user, since acquisition sells the plans churners give up, which keeps the population mix
near month 0's. They get fresh user_ids, fresh behaviour levels, a signup_date inside that month and
months_active 1, or 0 when they joined in the month's last three days (no bill yet, total_paid 0).

Scale. Users are processed in chunks of `chunk_size`; a chunk is carried through every month before
the next chunk starts, so memory holds one chunk whatever `users` is, and each chunk is appended to
the six CSVs of every month (headers written once). user_ids come from a seeded bijection of the
user index onto the id space (10**4 * 26**5 ids shaped `7590-VHVEG`: an affine permutation modulo
the space, then invertible mixing rounds), unique by construction; sign-ups take indices past the
initial population, a disjoint block per (month, chunk). Output is byte-identical for the same
(users, months, seed, chunk_size); another chunk_size gives different (equally valid) data. All
months are written into a hidden staging folder inside `out_dir` and renamed into place only once
complete; a failed run leaves `out_dir` as it was. A successful run replaces any `month_NNN` folders
already there, including stale ones beyond `months`, and leaves other files alone.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

FIRST_MONTH = np.datetime64("2024-01", "M")
DEFAULT_CHUNK_SIZE = 200_000
DEPARTURE_PROBABILITY = 0.3
MAX_MONTHS_ACTIVE = 100
MAX_MONTHS = 1000

ID_LETTERS = 26**5
ID_SPACE = 10_000 * ID_LETTERS
PINNED_ID = "7590-VHVEG"
PINNED_CODE = int(PINNED_ID[:4]) * ID_LETTERS + sum(
    (ord(letter) - 65) * 26**power for power, letter in enumerate(reversed(PINNED_ID[5:]))
)

GENDERS = ("Female", "Male")
CONTRACTS = ("Month-to-month", "One year", "Two year")
NET_SERVICES = ("DSL", "Fiber optic", "No")
DSL, FIBER, NO_NET = 0, 1, 2

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "users.csv": (
        "user_id",
        "signup_date",
        "user_gender",
        "user_is_senior",
        "has_family",
        "has_dependents",
    ),
    "subscriptions.csv": (
        "user_id",
        "months_active",
        "plan_stream_tv",
        "plan_stream_movies",
        "contract_type",
        "paperless_billing",
        "monthly_fee",
        "total_paid",
        "net_service",
    ),
    "usage_agg_30d.csv": (
        "user_id",
        "watch_hours_30d",
        "avg_session_mins_7d",
        "unique_devices_30d",
        "skips_7d",
        "rebuffer_events_7d",
    ),
    "payments_agg_90d.csv": ("user_id", "failed_payments_90d"),
    "support_agg_90d.csv": (
        "user_id",
        "support_tickets_90d",
        "ticket_avg_resolution_hrs_90d",
    ),
    "labels.csv": ("user_id", "churn_label"),
}

# Conditional shares measured on the real month_000 (IBM Telco-shaped population).
_CONTRACT_GIVEN_FAMILY_DEPENDENTS = np.array(
    [
        [0.698, 0.170, 0.132],  # no family, no dependents
        [0.573, 0.235, 0.192],  # no family, dependents
        [0.483, 0.232, 0.285],  # family, no dependents
        [0.333, 0.255, 0.412],  # family and dependents
    ]
)
# Multinomial logit of (fiber, no internet) against DSL, fitted on the real month_000 with columns
# (1, one-year, two-year, senior, t, t * one-year, t * two-year), t = months_active / 72: within a
# contract, long-tenure users hold fiber far more often, which keeps service flat across tenure.
_NET_LOGIT = np.array(
    [
        [0.051, -2.026, -2.725, 0.939, 1.218, 1.525, 1.285],
        [-0.328, 1.071, 1.961, -0.953, -2.651, 0.306, 0.568],
    ]
)
_PAPERLESS_GIVEN_NET_SENIOR = np.array([0.540, 0.629, 0.751, 0.836, 0.290, 0.346])


# Logistic churn model: the profile part is a logistic fit on the real month_000; the usage part
# adds the behavioural drivers the real month_000 lacks (its usage columns are noise there).
_CHURN_INTERCEPT = -0.3
_FRAILTY_SD = 0.6
# Offsets the churn pushed up by the usage drift, so the rate stays near the real 0.24-0.27.
_CHURN_DRIFT_OFFSET = 1.3


# The catalogue change (month CATALOGUE_CHANGE_MONTH, 2024-03 on): a studio's titles leave, users
# skip through what remains (skips_7d, noise until then, rises by about SKIP_RISE in log terms, more
# for the frail), and skipping becomes a churn driver. A model trained before it cannot rank by
# skips; one trained on the month can: the demo's later candidate beats the champion.
CATALOGUE_CHANGE_MONTH = 2
SKIP_RISE = 0.3
SKIP_FRAILTY = 0.8
SKIP_CHURN = 0.15


def _drift(month: int) -> float:
    """0 in month 0, 0.2 in month 1, levelling off at 1 after about a year."""
    return 1.0 - 0.8**month


def _catalogue_shock(month: int) -> float:
    """1 from the month the catalogue lost its titles on, 0 before it."""
    return float(month >= CATALOGUE_CHANGE_MONTH)


@dataclass(frozen=True)
class MonthSummary:
    """What one generated month folder holds."""

    folder: str
    rows: int
    churn_rate: float
    signups: int
    departures: int


@dataclass(frozen=True)
class GenerationSummary:
    """The outcome of one `generate_seeds` run, for printing."""

    out_dir: Path
    users: int
    seed: int
    months: tuple[MonthSummary, ...]
    bytes_written: int

    @property
    def rows_per_month(self) -> tuple[int, ...]:
        return tuple(m.rows for m in self.months)

    @property
    def churn_rate_per_month(self) -> tuple[float, ...]:
        return tuple(m.churn_rate for m in self.months)

    def __str__(self) -> str:
        lines = [
            f"wrote {len(self.months)} month(s) of seeds to {self.out_dir} "
            f"(users={self.users}, seed={self.seed}, {self.bytes_written / 1e6:.1f} MB)",
            f"{'folder':<10} {'rows':>12} {'churn':>7} {'sign-ups':>10} {'departures':>11}",
        ]
        lines += [
            f"{m.folder:<10} {m.rows:>12,} {m.churn_rate:>7.3f} {m.signups:>10,} "
            f"{m.departures:>11,}"
            for m in self.months
        ]
        return "\n".join(lines)


State = dict[str, np.ndarray]


@dataclass(frozen=True)
class _IdPermutation:
    """A seeded bijection from user index to the id space, so ids are unique by construction.

    An affine map (a * index + b) mod ID_SPACE with gcd(a, ID_SPACE) == 1 spreads the indices;
    three rounds that add a hash of one half (the 4 digits, the 5 letters) to the other, each
    modulo its own range, scramble neighbouring indices. Every step is invertible.
    """

    a: int
    b: int
    keys: tuple[int, int, int]

    @classmethod
    def for_seed(cls, seed: int) -> _IdPermutation:
        rng = np.random.default_rng([seed, 0])
        keys = tuple(int(k) for k in rng.integers(1, 2**20, 3))
        while True:
            # a < 2**26 keeps a * index (index < ID_SPACE < 2**37) inside int64.
            a = int(rng.integers(2**20, 2**26))
            if a % 2 and a % 5 and a % 13:  # ID_SPACE = 2**9 * 5**4 * 13**5
                return cls(a, int(rng.integers(0, ID_SPACE)), keys)

    def codes(self, index: np.ndarray) -> np.ndarray:
        # User 0 takes the real seeds' first id, so the documented examples (7590-VHVEG) work on
        # generated seeds too; the index the map would give that id takes user 0's instead,
        # which keeps the map a bijection.
        natural = self._scrambled(index)
        first = self._scrambled(np.zeros(1, dtype=np.int64))[0]
        swapped = np.where(natural == PINNED_CODE, first, natural)
        return np.where(index == 0, PINNED_CODE, swapped)

    def _scrambled(self, index: np.ndarray) -> np.ndarray:
        code = (self.a * index.astype(np.int64) + self.b) % ID_SPACE
        digits, letters = np.divmod(code, ID_LETTERS)
        # Multiplicative hashes; operands stay below 2**24 * 2**32, inside int64.
        digits = (digits + ((letters + self.keys[0]) * 0x9E3779B1 >> 20)) % 10_000
        letters = (letters + ((digits + self.keys[1]) * 0x85EBCA77 >> 7)) % ID_LETTERS
        digits = (digits + ((letters + self.keys[2]) * 0xC2B2AE3D >> 20)) % 10_000
        return digits * ID_LETTERS + letters

    def user_ids(self, index: np.ndarray) -> pa.Array:
        digits, letters = np.divmod(self.codes(index), ID_LETTERS)
        text = np.empty((len(index), 10), dtype=np.uint8)
        for position in range(3, -1, -1):
            digits, digit = np.divmod(digits, 10)
            text[:, position] = 48 + digit
        text[:, 4] = ord("-")
        for position in range(9, 4, -1):
            letters, letter = np.divmod(letters, 26)
            text[:, position] = 65 + letter
        offsets = np.arange(0, 10 * len(index) + 1, 10, dtype=np.int32)
        return pa.StringArray.from_buffers(
            len(index), pa.py_buffer(offsets), pa.py_buffer(text.tobytes())
        )


def _pick(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    """One categorical draw per row of an (n, k) probability matrix."""
    cumulative = np.cumsum(probabilities, axis=1)
    cumulative[:, -1] = 1.0
    return (rng.random(len(probabilities))[:, None] > cumulative).sum(axis=1).astype(np.int8)


def _draw_tenure(rng: np.random.Generator, contract: np.ndarray) -> np.ndarray:
    n = len(contract)
    monthly = np.where(rng.random(n) < 0.13, 1, 1 + np.floor(rng.beta(0.75, 2.0, n) * 71))
    one_year = np.floor(rng.beta(1.6, 1.1, n) * 73)
    # Two-year customers pile up at the real seeds' 72-month ceiling.
    two_year = np.minimum(72, np.floor(rng.beta(1.8, 0.6, n) * 75))
    return np.choose(contract, [monthly, one_year, two_year]).astype(np.int64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _draw_net(
    rng: np.random.Generator, contract: np.ndarray, senior: np.ndarray, tenure: np.ndarray
) -> np.ndarray:
    t = tenure / 72.0
    one, two = contract == 1, contract == 2
    design = np.stack([np.ones_like(t), one, two, senior, t, t * one, t * two])
    odds = np.exp(_NET_LOGIT @ design)
    weights = np.vstack([np.ones_like(t), odds])
    return _pick(rng, (weights / weights.sum(axis=0)).T)


def _draw_fee_cents(
    rng: np.random.Generator,
    net: np.ndarray,
    tv: np.ndarray,
    movies: np.ndarray,
    tenure: np.ndarray,
) -> np.ndarray:
    n = len(net)
    streams = tv.astype(np.int64) + movies
    # DSL bills spread wide and skew low: about a fifth of DSL users have no phone line bundled.
    dsl_rest = np.where(rng.random(n) < 0.2, rng.normal(-18.0, 6.0, n), rng.normal(4.5, 7.5, n))
    dsl = np.clip(43.35 + 10.2 * streams + 0.2 * tenure + dsl_rest, 23.45, 94.8)
    fiber = np.clip(
        73.25 + 11.0 * streams + 0.178 * tenure + rng.normal(0.0, 5.1, n), 67.75, 118.75
    )
    # Without internet the bill is the phone line: one line near 20, several near 25.
    phone = np.where(rng.random(n) < 0.2, rng.normal(24.9, 0.6, n), rng.normal(20.0, 0.5, n))
    fee = np.choose(net, [dsl, fiber, np.clip(phone, 18.25, 26.9)])
    # Real fees are whole multiples of five cents.
    return (np.rint(fee * 20.0) * 5).astype(np.int64)


def _month_bounds(month_offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First day (datetime64[D]) and length in days of each FIRST_MONTH + offset month."""
    months = FIRST_MONTH + month_offsets
    first = months.astype("datetime64[D]")
    length = ((months + 1).astype("datetime64[D]") - first).astype(np.int64)
    return first, length


# Who a subscriber is and what they bought; sign-ups copy these from a departing user.
_PROFILE = (
    "male",
    "senior",
    "family",
    "dependents",
    "contract",
    "net",
    "tv",
    "movies",
    "paperless",
)


def _initial_users(rng: np.random.Generator, index: np.ndarray) -> State:
    """Month 0's population: profiles of every tenure, shaped like the real month_000."""
    n = len(index)
    family = rng.random(n) < 0.483
    dependents = rng.random(n) < np.where(family, 0.514, 0.099)
    senior = rng.random(n) < 0.162
    contract = _pick(rng, _CONTRACT_GIVEN_FAMILY_DEPENDENTS[family * 2 + dependents])
    tenure = _draw_tenure(rng, contract)
    net = _draw_net(rng, contract, senior, tenure)
    has_net = net != NO_NET
    fiber = net == FIBER
    # Streaming add-ons accumulate with tenure (logistic fits on the real month_000).
    t = tenure / 72.0
    tv = has_net & (rng.random(n) < _sigmoid(-1.431 + 0.771 * fiber + 2.099 * t))
    movies = has_net & (rng.random(n) < _sigmoid(-1.811 + 0.525 * fiber + 1.618 * t + 1.545 * tv))
    profile = {
        "male": rng.random(n) < 0.505,
        "senior": senior,
        "family": family,
        "dependents": dependents,
        "contract": contract,
        "net": net,
        "tv": tv,
        "movies": movies,
        "paperless": rng.random(n) < _PAPERLESS_GIVEN_NET_SENIOR[net * 2 + senior],
    }
    # months_active counts billed months including the current one.
    first, length = _month_bounds(-np.maximum(tenure - 1, 0))
    signup = first + (rng.random(n) * length).astype(np.int64)
    return _open_accounts(rng, index, profile, tenure, signup)


def _signups(rng: np.random.Generator, index: np.ndarray, month: int, profile: State) -> State:
    """Subscribers joining during `month`, with the given profiles."""
    n = len(index)
    first, length = _month_bounds(np.full(n, month))
    day = (rng.random(n) * length).astype(np.int64)
    # Joining in the month's last three days means no bill yet.
    tenure = np.where(day >= length - 3, 0, 1).astype(np.int64)
    return _open_accounts(rng, index, profile, tenure, first + day)


def _open_accounts(
    rng: np.random.Generator,
    index: np.ndarray,
    profile: State,
    tenure: np.ndarray,
    signup: np.ndarray,
) -> State:
    """Billing history and persistent per-user behaviour levels for the given profiles."""
    n = len(index)
    fee = _draw_fee_cents(rng, profile["net"], profile["tv"], profile["movies"], tenure)
    # Earlier price changes make total_paid wander around tenure * current fee.
    history = np.where(tenure > 1, np.clip(rng.normal(1.0, 0.045, n), 0.7, 1.5), 1.0)
    return {
        "index": index.astype(np.int64),
        "signup": signup,
        **profile,
        "tenure": tenure,
        "fee": fee,
        "total": np.rint(tenure * fee * history).astype(np.int64),
        "watch_level": rng.normal(0.0, 4.85, n),
        "watch_wobble": rng.normal(0.0, 1.0, n),
        "devices": rng.integers(1, 4, n),
        "rebuffer_p": rng.beta(17.9, 90.0, n),
        "fail_p": rng.beta(1.5, 26.0, n),
        "ticket_rate": rng.gamma(3.0, 0.1, n),
        "ticket_hrs": _draw_ticket_decihours(rng, n),
        "frailty": rng.normal(0.0, _FRAILTY_SD, n),
    }


def _draw_ticket_decihours(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.rint(np.clip(rng.normal(10.0, 3.9, n), 1.0, 24.9) * 10).astype(np.int64)


def _observe(rng: np.random.Generator, state: State, month: int) -> State:
    """This month's usage aggregates and churn label; updates the per-user wobble in place."""
    n = len(state["index"])
    drift = _drift(month)
    fee = state["fee"] / 100.0
    tenure = state["tenure"]
    state["watch_wobble"] = 0.6 * state["watch_wobble"] + rng.normal(0.0, 0.8, n)
    expected_watch = 19.7 + 0.151 * fee + 0.0046 * tenure
    engagement = state["watch_level"] + state["watch_wobble"] - 3.0 * drift
    watch = np.maximum(0.5, expected_watch + engagement)
    session = np.maximum(1.0, 29.14 + 0.4 * (watch - 29.6) + rng.normal(0.0, 3.5, n))
    moved = rng.random(n) < 0.05
    state["devices"] = np.where(moved, rng.integers(1, 4, n), state["devices"])
    # The catalogue change: skipping rises, most for the users already close to leaving.
    shock = _catalogue_shock(month)
    skips = rng.poisson(5.0 * np.exp(shock * (SKIP_RISE + SKIP_FRAILTY * state["frailty"])))
    rebuffer = rng.binomial(14, np.minimum(1.0, state["rebuffer_p"] * (1 + 0.65 * drift)))
    failed = rng.binomial(3, np.minimum(1.0, state["fail_p"] * (1 + 0.9 * drift)))
    tickets = rng.poisson(state["ticket_rate"] * (1 + 0.85 * drift))
    reassessed = (tickets > 0) & (rng.random(n) < 0.3)
    state["ticket_hrs"] = np.where(reassessed, _draw_ticket_decihours(rng, n), state["ticket_hrs"])

    contract, net = state["contract"], state["net"]
    profile = (
        -0.805 * (contract == 1)
        - 1.839 * (contract == 2)
        - 0.696 * np.log1p(tenure)
        + 1.622 * (net == FIBER)
        - 1.318 * (net == NO_NET)
        - 0.0194 * (fee - 65.0)
        + 0.3 * state["senior"]
        + 0.4 * state["paperless"]
        + 0.056 * state["family"]
        - 0.166 * state["dependents"]
        + 0.55 * state["tv"]
        + 0.56 * state["movies"]
    )
    usage = (
        0.45 * failed
        + 0.4 * tickets
        + 0.12 * (rebuffer - 2.3)
        - 0.06 * engagement
        + shock * SKIP_CHURN * (skips - 5.0 * np.exp(SKIP_RISE))
    )
    logit = (
        _CHURN_INTERCEPT
        - _CHURN_DRIFT_OFFSET * drift
        + (1 - 0.15 * drift) * profile
        + (1 + 0.6 * drift) * usage
        + state["frailty"]
    )
    churn = rng.random(n) < _sigmoid(logit)
    return {
        "watch": watch,
        "session": session,
        "skips": skips,
        "rebuffer": rebuffer,
        "failed": failed,
        "tickets": tickets,
        "churn": churn,
    }


def _advance(
    rng: np.random.Generator,
    state: State,
    churn: np.ndarray,
    month: int,
    first_new_index: int,
    capacity: int,
) -> tuple[State, int, int]:
    """Next month's population: departures leave, stayers age, look-alike sign-ups join."""
    n = len(churn)
    leaving = churn & (rng.random(n) < DEPARTURE_PROBABILITY)
    departed = np.flatnonzero(leaving)
    stay = {key: values[~leaving] for key, values in state.items()}
    stay["tenure"] = np.minimum(stay["tenure"] + 1, MAX_MONTHS_ACTIVE)
    stay["total"] = stay["total"] + stay["fee"]
    count = min(int(rng.poisson(len(departed))), capacity) if len(departed) else 0
    # Acquisition sells the plans churners give up, to the same kinds of households, so the
    # population's size and mix stay near month 0 while individual users come and go.
    donors = rng.choice(departed, count) if count else departed[:0]
    joined = _signups(
        rng,
        np.arange(first_new_index, first_new_index + count),
        month,
        {key: state[key][donors] for key in _PROFILE},
    )
    merged = {key: np.concatenate([stay[key], joined[key]]) for key in stay}
    return merged, count, len(departed)


_BOOL_TEXT = pa.array(["False", "True"])
_WRITE_OPTIONS = pacsv.WriteOptions(include_header=False, quoting_style="none")


def _bool_text(values: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    indices = pa.array(values.astype(np.int8), mask=None if valid is None else ~valid)
    return _BOOL_TEXT.take(indices)


def _category_text(codes: np.ndarray, names: tuple[str, ...]) -> pa.Array:
    return pa.array(names).take(pa.array(codes.astype(np.int8)))


def _fraction_texts(decimals: int) -> pa.Array:
    # Python's repr of a value rounded to `decimals`: trailing zeros dropped, at least one digit.
    return pa.array([f"{i:0{decimals}d}".rstrip("0") or "0" for i in range(10**decimals)])


_FRACTIONS = {1: _fraction_texts(1), 2: _fraction_texts(2)}


def _fixed_point_text(units: np.ndarray, decimals: int) -> pa.Array:
    """Non-negative integers in 10**-decimals units, written the way pandas writes the float."""
    whole, fraction = np.divmod(units, 10**decimals)
    return pc.binary_join_element_wise(
        pc.cast(pa.array(whole), pa.string()), _FRACTIONS[decimals].take(pa.array(fraction)), "."
    )


def _float_text(values: np.ndarray) -> pa.Array:
    # Arrow prints the shortest round-trip digits like Python's repr, but drops ".0" on integers.
    text = pc.cast(pa.array(values, pa.float64()), pa.string())
    return pc.if_else(
        pc.match_substring(text, "."), text, pc.binary_join_element_wise(text, ".0", "")
    )


def _tables(state: State, observed: State, ids: pa.Array) -> dict[str, pa.Table]:
    has_net = state["net"] != NO_NET
    columns: dict[str, pa.Array] = {
        "user_id": ids,
        "signup_date": pa.array(state["signup"].astype("datetime64[D]")),
        "user_gender": _category_text(state["male"], GENDERS),
        "user_is_senior": _bool_text(state["senior"]),
        "has_family": _bool_text(state["family"]),
        "has_dependents": _bool_text(state["dependents"]),
        "months_active": pa.array(state["tenure"]),
        "plan_stream_tv": _bool_text(state["tv"], has_net),
        "plan_stream_movies": _bool_text(state["movies"], has_net),
        "contract_type": _category_text(state["contract"], CONTRACTS),
        "paperless_billing": _bool_text(state["paperless"]),
        "monthly_fee": _fixed_point_text(state["fee"], 2),
        "total_paid": _fixed_point_text(state["total"], 2),
        "net_service": _category_text(state["net"], NET_SERVICES),
        "watch_hours_30d": _float_text(observed["watch"]),
        "avg_session_mins_7d": _float_text(observed["session"]),
        "unique_devices_30d": pa.array(state["devices"]),
        "skips_7d": pa.array(observed["skips"]),
        "rebuffer_events_7d": pa.array(observed["rebuffer"]),
        "failed_payments_90d": pa.array(observed["failed"]),
        "support_tickets_90d": pa.array(observed["tickets"]),
        "ticket_avg_resolution_hrs_90d": _fixed_point_text(state["ticket_hrs"], 1),
        "churn_label": _bool_text(observed["churn"]),
    }
    return {
        file: pa.table({name: columns[name] for name in names})
        for file, names in TABLE_COLUMNS.items()
    }


def _folder(month: int) -> str:
    return f"month_{month:03d}"


_MONTH_FOLDER = re.compile(r"^month_(\d{3})$")


def generate_seeds(
    out_dir: Path,
    users: int,
    months: int,
    seed: int,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> GenerationSummary:
    """Write `month_000/` .. `month_{months-1}/` of synthetic seeds into `out_dir`.

    `users` is month 0's population; later months stay near it as users depart and sign up.
    `chunk_size` bounds memory (one chunk of users at a time); the data depends on it, so keep
    the default for reproducible seeds.
    """
    if users < 1:
        raise ValueError(f"users must be at least 1, got {users}")
    if not 1 <= months <= MAX_MONTHS:
        raise ValueError(f"months must be between 1 and {MAX_MONTHS}, got {months}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    chunks = -(-users // chunk_size)
    # Sign-ups of (month m, chunk c) own indices [block, block + chunk_size): disjoint blocks.
    if users + (months - 1) * chunks * chunk_size > ID_SPACE:
        raise ValueError(f"{users} users over {months} months exceed the user_id space")

    def signup_block(month: int, chunk: int) -> int:
        return users + ((month - 1) * chunks + chunk) * chunk_size

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".generating-", dir=out_dir))
    try:
        for month in range(months):
            (staging / _folder(month)).mkdir()
            for file, names in TABLE_COLUMNS.items():
                (staging / _folder(month) / file).write_text(",".join(names) + "\n")
        totals = _write_chunks(staging, users, months, seed, chunk_size, signup_block)
        summaries = _publish(staging, out_dir, months, totals)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    written = sum(
        (out_dir / _folder(m) / file).stat().st_size
        for m in range(months)
        for file in TABLE_COLUMNS
    )
    return GenerationSummary(out_dir, users, seed, summaries, written)


def _write_chunks(
    staging: Path,
    users: int,
    months: int,
    seed: int,
    chunk_size: int,
    signup_block: Callable[[int, int], int],
) -> np.ndarray:
    """Append every chunk to every month's CSVs; returns per-month [rows, churners, in, out]."""
    ids = _IdPermutation.for_seed(seed)
    totals = np.zeros((months, 4), dtype=np.int64)
    for chunk, start in enumerate(range(0, users, chunk_size)):
        rng = np.random.default_rng([seed, 1, chunk, 0])
        state = _initial_users(rng, np.arange(start, min(start + chunk_size, users)))
        observed = _observe(rng, state, 0)
        signups = departures = 0
        for month in range(months):
            if month:
                rng = np.random.default_rng([seed, 1, chunk, month])
                state, signups, departures = _advance(
                    rng, state, observed["churn"], month, signup_block(month, chunk), chunk_size
                )
                observed = _observe(rng, state, month)
            tables = _tables(state, observed, ids.user_ids(state["index"]))
            for file, table in tables.items():
                with (staging / _folder(month) / file).open("ab") as sink:
                    pacsv.write_csv(table, sink, _WRITE_OPTIONS)
            totals[month] += (len(state["index"]), observed["churn"].sum(), signups, departures)
    return totals


def _publish(
    staging: Path, out_dir: Path, months: int, totals: np.ndarray
) -> tuple[MonthSummary, ...]:
    """Swap the complete staged months into out_dir and retire stale month folders."""
    retired = staging / "retired"
    retired.mkdir()
    for existing in out_dir.iterdir():
        match = _MONTH_FOLDER.match(existing.name)
        if match and existing.is_dir() and int(match[1]) >= months:
            existing.rename(retired / existing.name)
    for month in range(months):
        target = out_dir / _folder(month)
        if target.exists():
            target.rename(retired / target.name)
        (staging / _folder(month)).rename(target)
    return tuple(
        MonthSummary(
            folder=_folder(month),
            rows=int(rows),
            churn_rate=float(churners / rows),
            signups=int(signups),
            departures=int(departures),
        )
        for month, (rows, churners, signups, departures) in enumerate(totals)
    )
