"""The promotion rule: when a month's candidate model replaces the champion."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

# The registered model every month's candidate becomes a version of.
MODEL_NAME = "streamflow_churn"
# The one truth for what serves: MLflow 3 deprecated stages, so promotion moves this alias only.
CHAMPION_ALIAS = "champion"
CHAMPION_URI = f"models:/{MODEL_NAME}@{CHAMPION_ALIAS}"
# The latest candidate kept out, which the API can score in shadow beside the champion.
CHALLENGER_ALIAS = "challenger"
CHALLENGER_URI = f"models:/{MODEL_NAME}@{CHALLENGER_ALIAS}"


@dataclass(frozen=True)
class Contender:
    """A model version, its snapshot date and its AUC on the candidate month's held-out split."""

    version: str
    as_of: date
    auc: float


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(candidate: Contender, champion: Contender | None, margin: float) -> Decision:
    """Promote when there is no champion, or the candidate is at least as recent and better by
    more than `margin` AUC; a backfill of an older month never demotes a newer champion."""
    if math.isnan(candidate.auc):
        return Decision(False, f"candidate v{candidate.version} has no AUC on its held-out split")
    if champion is None:
        return Decision(True, "no champion yet")
    if candidate.version == champion.version:
        return Decision(False, f"v{candidate.version} is already the champion")
    if candidate.as_of < champion.as_of:
        return Decision(
            False,
            f"candidate as_of {candidate.as_of} is older than champion v{champion.version}'s "
            f"{champion.as_of}: a backfill never demotes a newer champion",
        )
    if math.isnan(champion.auc):
        return Decision(True, f"champion v{champion.version} could not be scored on the split")
    gain = candidate.auc - champion.auc
    verdict = "beats" if gain >= margin else "does not beat"
    return Decision(
        gain >= margin,
        f"AUC {candidate.auc:.4f} vs champion v{champion.version} {champion.auc:.4f}: "
        f"{gain:+.4f} {verdict} the margin {margin:.4f}",
    )


@dataclass(frozen=True)
class Challenger:
    version: str
    as_of: date


def challenger_after(
    decision: Decision,
    candidate: Contender,
    champion: Contender | None,
    challenger: Challenger | None,
) -> Challenger | None:
    """Who holds the challenger alias after a decision: nobody once a candidate is promoted;
    the candidate when it was kept out as a rival of the champion (as recent, not better by the
    margin), unless the challenger is a newer one; else the challenger unchanged. A re-run of the
    champion's month or a backfill of an older one is no rival."""
    if decision.promote:
        return None
    rival = champion is not None and (
        candidate.version != champion.version and candidate.as_of >= champion.as_of
    )
    if not rival:
        return challenger
    kept_out = Challenger(candidate.version, candidate.as_of)
    if challenger is not None and _order(challenger) > _order(kept_out):
        return challenger
    return kept_out


def _order(challenger: Challenger) -> tuple[date, int]:
    return challenger.as_of, int(challenger.version)
