"""The engine tests' Ray: one real local cluster of 2 CPUs per test module, on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import ray

from mechscope.engine.cluster import ray_session


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Iterator[Any]:
    """One local Ray cluster of 2 CPUs for the module, shut down after it."""
    with ray_session(cpus=2) as session:
        yield session
    assert not ray.is_initialized()
