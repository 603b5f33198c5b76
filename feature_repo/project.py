"""The Feast project every StreamFlow definition belongs to."""

from feast import Project

streamflow = Project(
    name="streamflow",
    description="Subscriber churn features: monthly snapshots served to the churn model.",
)
