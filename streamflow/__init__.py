"""StreamFlow's library: the domain, the adapters to the stores, settings and ops tooling.

The Dagster code location (`streamflow_assets`) and the API (`serving`) are built on it.
"""
