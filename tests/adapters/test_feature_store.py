"""The online write's read-ahead: the next chunk prepared in a thread while the store writes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from streamflow.adapters.feature_store import read_ahead


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name == "online-write-read-ahead"}


def test_every_item_arrives_in_order_while_the_next_is_prepared_beside_the_write() -> None:
    prepared: list[int] = []

    def items() -> Iterator[int]:
        for i in range(5):
            prepared.append(i)
            yield i

    seen = []
    for item in read_ahead(items()):
        # While the store writes `item`, the next one gets prepared (without the read-ahead it
        # would be only once this write is done).
        deadline = time.monotonic() + 10
        while prepared[-1] < min(item + 1, 4) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert prepared[-1] >= min(item + 1, 4)
        seen.append(item)
    assert seen == [0, 1, 2, 3, 4]
    assert not _threads()


def test_an_error_while_reading_fails_the_write_with_that_error() -> None:
    def items() -> Iterator[int]:
        yield 1
        raise ValueError("the snapshot store went away")

    with pytest.raises(ValueError, match="snapshot store went away"):
        list(read_ahead(items()))
    assert not _threads()


def test_a_write_that_fails_stops_the_reader_and_closes_it() -> None:
    closed = threading.Event()

    def items() -> Iterator[int]:
        try:
            yield from range(1000)
        finally:
            closed.set()

    with pytest.raises(RuntimeError):
        for _ in read_ahead(items()):
            raise RuntimeError("the online store refused the transaction")
    assert closed.is_set()
    assert not _threads()
