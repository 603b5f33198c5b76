"""The thresholds assets and sensors decide by, injected instead of read where they are used."""

from dagster import ConfigurableResource
from pydantic import Field

from streamflow.settings import RetrainPolicy


class PolicyResource(ConfigurableResource):
    """Promotion, drift, decay and retraining thresholds (`STREAMFLOW_PROMOTION_MARGIN`,
    `..._AUC_FLOOR`, `STREAMFLOW_DRIFT_SHARE`, `STREAMFLOW_DECAY_MAX_AUC_DROP`,
    `STREAMFLOW_RETRAIN_MAX_AGE_MONTHS`, `STREAMFLOW_RETRAIN`; see `streamflow.settings`)."""

    promotion_margin: float
    promotion_auc_floor: float
    drift_share: float = Field(gt=0, le=1)
    decay_max_auc_drop: float
    retrain_max_age_months: int = Field(ge=0)
    retrain: RetrainPolicy
