"""Training: the month's churn model, logged to MLflow and registered."""
