"""The monthly partitions every StreamFlow asset shares: 2024-01 (`month_000`) onwards."""

from dagster import MonthlyPartitionsDefinition

from streamflow.domain.months import FIRST_MONTH

monthly_partitions = MonthlyPartitionsDefinition(
    start_date=FIRST_MONTH.strftime("%Y-%m"),
    fmt="%Y-%m",
    # Include the running month, so that seeds for it can be materialized as soon as they land.
    end_offset=1,
)
