"""Tests of the Dagster assets, checks and sensors."""
