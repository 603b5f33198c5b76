"""The Dagster code location: definitions only, a folder per domain (ingestion, features,
training, promotion, freshness, model monitoring); what they run is the `streamflow` package."""

import warnings

from dagster import PreviewWarning

# Partitioned asset checks are "preview" in Dagster 1.13, yet they are what makes a check result
# belong to the month it checked; the API is used as documented, so silence the per-import notice.
warnings.filterwarnings("ignore", category=PreviewWarning)
