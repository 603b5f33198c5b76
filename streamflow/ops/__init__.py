"""Ops tooling outside the code location: the CLI, the native stack, the pipeline runner, the
synthetic generator."""
