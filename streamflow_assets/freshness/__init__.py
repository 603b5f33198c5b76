"""Freshness, all of it: the online store's check, its schedule and alerts, the assets' policy."""
