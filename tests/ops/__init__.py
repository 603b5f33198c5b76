"""Tests of the ops tooling: the CLI, the native stack, the generator."""
