"""Tests of the pure logic: no Dagster."""
