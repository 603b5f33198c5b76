"""The promotion rule, case by case."""

from __future__ import annotations

import math
from datetime import date

import pytest

from streamflow.domain.promotion import Challenger, Contender, challenger_after, decide

JAN, FEB = date(2024, 1, 31), date(2024, 2, 29)
MARGIN = 0.01


@pytest.mark.parametrize(
    ("candidate", "champion", "promote", "reason"),
    [
        pytest.param(Contender("1", JAN, 0.80), None, True, "no champion", id="no-champion"),
        pytest.param(
            Contender("2", FEB, 0.85), Contender("1", JAN, 0.80), True, "beats", id="better"
        ),
        pytest.param(
            Contender("2", FEB, 0.81), Contender("1", JAN, 0.80), True, "beats", id="by-margin"
        ),
        pytest.param(
            Contender("2", FEB, 0.805),
            Contender("1", JAN, 0.80),
            False,
            "does not beat",
            id="better-by-less-than-margin",
        ),
        pytest.param(
            Contender("2", FEB, 0.70), Contender("1", JAN, 0.80), False, "does not", id="worse"
        ),
        pytest.param(
            Contender("3", JAN, 0.99),
            Contender("2", FEB, 0.60),
            False,
            "older",
            id="older-month-never-demotes",
        ),
        pytest.param(
            Contender("3", FEB, 0.90), Contender("2", FEB, 0.80), True, "beats", id="same-month"
        ),
        pytest.param(
            Contender("2", FEB, math.nan),
            Contender("1", JAN, 0.80),
            False,
            "no AUC",
            id="nan-candidate",
        ),
        pytest.param(
            Contender("2", FEB, math.nan), None, False, "no AUC", id="nan-candidate-no-champion"
        ),
        pytest.param(
            Contender("2", FEB, 0.70),
            Contender("1", JAN, math.nan),
            True,
            "could not be scored",
            id="nan-champion",
        ),
        pytest.param(
            Contender("2", FEB, 0.90), Contender("2", FEB, 0.90), False, "already", id="itself"
        ),
    ],
)
def test_decide(candidate: Contender, champion: Contender | None, promote: bool, reason: str):
    decision = decide(candidate, champion, MARGIN)
    assert decision.promote is promote
    assert reason in decision.reason


def test_the_margin_is_configurable() -> None:
    candidate, champion = Contender("2", FEB, 0.85), Contender("1", JAN, 0.80)
    assert decide(candidate, champion, 0.01).promote
    assert not decide(candidate, champion, 0.10).promote


MAR = date(2024, 3, 31)


@pytest.mark.parametrize(
    ("candidate", "champion", "challenger", "after"),
    [
        pytest.param(
            Contender("3", FEB, 0.805),
            Contender("2", FEB, 0.80),
            None,
            Challenger("3", FEB),
            id="kept-out-rival-becomes-challenger",
        ),
        pytest.param(
            Contender("4", MAR, 0.80),
            Contender("2", FEB, 0.80),
            Challenger("3", FEB),
            Challenger("4", MAR),
            id="a-newer-rival-replaces-it",
        ),
        pytest.param(
            Contender("3", FEB, 0.80),
            Contender("2", FEB, 0.80),
            Challenger("4", MAR),
            Challenger("4", MAR),
            id="an-older-rival-leaves-a-newer-challenger",
        ),
        pytest.param(
            Contender("1", JAN, 0.90),
            Contender("2", FEB, 0.80),
            Challenger("3", FEB),
            Challenger("3", FEB),
            id="a-backfill-is-no-rival",
        ),
        pytest.param(
            Contender("2", FEB, 0.90),
            Contender("2", FEB, 0.90),
            None,
            None,
            id="the-champion-rerun-is-no-rival",
        ),
        pytest.param(
            Contender("4", MAR, 0.90),
            Contender("2", FEB, 0.80),
            Challenger("3", FEB),
            None,
            id="a-promotion-removes-it",
        ),
    ],
)
def test_the_challenger_is_the_latest_rival_kept_out(
    candidate: Contender,
    champion: Contender,
    challenger: Challenger | None,
    after: Challenger | None,
) -> None:
    decision = decide(candidate, champion, MARGIN)
    assert challenger_after(decision, candidate, champion, challenger) == after
