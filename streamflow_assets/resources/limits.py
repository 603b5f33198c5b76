"""How much of a month a step holds at once, whatever the month's size."""

from dagster import ConfigurableResource
from pydantic import Field


class LimitsResource(ConfigurableResource):
    """The fit's sample cap and the rows read and scored at a time (`STREAMFLOW_TRAIN_MAX_ROWS`,
    `STREAMFLOW_CHUNK_ROWS`): a step's memory is set by these, not by the number of users."""

    train_max_rows: int = Field(ge=1_000)
    chunk_rows: int = Field(ge=1_000)
