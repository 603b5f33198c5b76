"""Ingestion: the month's seeds as snapshot tables, with their contract checks."""
