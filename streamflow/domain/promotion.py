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
