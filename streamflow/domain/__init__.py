"""The domain: features, months, seeds, training, promotion, freshness, model monitoring.

Pure: no Dagster, FastAPI, Feast, MLflow, database or network import (import-linter checks it).
"""
