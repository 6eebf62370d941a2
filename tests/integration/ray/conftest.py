"""One local Ray instance for the whole test session (starting Ray takes seconds), shut down at its end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")


@pytest.fixture(scope="session")
def ray_instance() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(proxy_location="Disabled")  # handles only: no HTTP port taken
    try:
        yield
    finally:
        ray.shutdown()  # takes Serve's controller and replicas with it (serve.shutdown() first costs ~3 s more)
