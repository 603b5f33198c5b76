"""Schemathesis against a real `streamflow serve`: every operation, answers as documented."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

# Hypothesis stops early on operations with few distinct inputs (GET /health has one); the
# ones with bodies and path parameters get up to this many each, valid and invalid.
EXAMPLES_PER_OPERATION = 170
MIN_CASES = 500
# Operations without parameters are called once each; three take bodies or path parameters.


def fuzz(base_url: str, examples: int = EXAMPLES_PER_OPERATION) -> dict[str, int]:
    """Every operation of the served /openapi.json with schemathesis' default checks (no 5xx,
    documented status, body and headers conform, invalid input refused); cases per operation."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    calls: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        calls[label] = 0
        cases = st.one_of(*(operation.as_strategy(mode) for mode in GenerationMode))

        @given(case=cases)
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(timeout=30)
            calls[f"{case.method} {case.operation.path}"] += 1

        check()
    return calls


def test_every_operation_answers_as_documented(api_url: str) -> None:
    calls = fuzz(api_url)
    assert all(calls.values()), f"operations never called: {calls}"
    assert sum(calls.values()) >= MIN_CASES, calls
