"""Fixtures for tests that run real broker processes on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.harness import LocalCluster


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    """Starts clusters on demand; every process it started is SIGKILLed at teardown."""
    made: list[LocalCluster] = []

    def make(nodes: int = 3, settings: list[str] | None = None) -> LocalCluster:
        c = LocalCluster(tmp_path / f"cluster-{len(made)}", nodes=nodes, settings=settings or [])
        made.append(c)
        c.start()
        return c

    yield make
    for c in made:
        c.stop_all()
