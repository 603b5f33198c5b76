"""Tests of the adapters against real stores and servers."""
