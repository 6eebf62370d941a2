"""XGBoost on Ray Serve: an engine calling the `XGBoostScorer` deployment through a DeploymentHandle.

With `engines.ray_deployment`, the only module importing ray. Blocking Ray calls (`ray.init`,
`serve.run`, `ray.shutdown`) run in the shared `Offloader`, off the event loop; calls to the
deployment are `handle.predict.remote(...)` responses awaited on the loop, never waited for in a thread.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import ray
from ray import serve
from ray.exceptions import RayError, RayTaskError
from ray.serve.exceptions import RayServeException

from engines._local import Loaded, ModelTable
from engines._offload import Offloader
from engines._signature import check_inputs, check_outputs
from engines.base import Engine
from engines.config import RayServeEngineConfig
from engines.errors import EngineError, EngineTimeout, EngineUnavailable
from engines.types import ModelMetadata, ModelRef, Tensors

log = logging.getLogger(__name__)

INPUT = "features"
OUTPUT = "score"


@dataclass(frozen=True)
class Deployed:
    """What `deploy` left running."""

    app_name: str
    deployment: str
    models: dict[str, ModelMetadata]
    num_replicas: int


def connect(address: str) -> bool:
    """Join Ray at `address` unless this process already has; True when this call started the
    connection (and its caller should `ray.shutdown()` when done). Blocking."""
    if ray.is_initialized():
        return False
    ray.init(address=address, include_dashboard=False, log_to_driver=False)
    return True


def deploy(config: RayServeEngineConfig) -> Deployed:
    """Deploy (or redeploy in place) application `config.app_name` serving `config.models`.

    Serve's HTTP proxy is not started (callers use handles). Needs a Ray connection (`connect`);
    returns once every replica is running. Blocking.
    """
    if not config.models:
        raise ValueError("nothing to deploy: no models given")
    from engines.ray_deployment import XGBoostScorer

    models = {name: path.read_bytes() for name, path in config.models.items()}
    serve.start(proxy_location="Disabled")
    app = XGBoostScorer.options(  # type: ignore[attr-defined]
        name=config.deployment,
        num_replicas=config.num_replicas,
        # Serve caps calls queued at a replica; a batch can only fill from the calls it may hold.
        max_ongoing_requests=max(8, 2 * config.max_batch_size),
        ray_actor_options={"num_cpus": config.replica_num_cpus},
    ).bind(models, config.max_batch_size, config.batch_wait_timeout_s, config.nthread)
    handle = serve.run(app, name=config.app_name, route_prefix=None)
    signatures: dict[str, ModelMetadata] = handle.signatures.remote().result()
    return Deployed(config.app_name, config.deployment, signatures, config.num_replicas)


class RayServeEngine:
    """Serves the models of a Ray Serve `XGBoostScorer` application (see `RayServeEngineConfig`).

    Signature of every model: input `features` float32 [n, k], output `score` float32 [n], exactly as
    the in-process XGBoost engine (the replicas run it). Inputs are checked here, before anything is
    sent; on `timeout_s` the call is cancelled at Serve. Failures: replicas unreachable, dead or
    back-pressured -> `EngineUnavailable`; an error raised in a replica -> its `EngineError` type.
    """

    def __init__(self, name: str, config: RayServeEngineConfig, offloader: Offloader) -> None:
        self.name = name
        self._config = config
        self._offloader = offloader
        self._handle: Any = None  # ray.serve.handle.DeploymentHandle (untyped SDK)
        self._owns_ray = False
        self._models: ModelTable[None] = ModelTable(name)

    async def start(self) -> None:
        """Connect, deploy when the config names model files, then read what the deployment serves."""
        try:
            self._owns_ray = await self._offloader.run(connect, self._config.address)
            if self._config.models:
                await self._offloader.run(deploy, self._config)
            # Asks Serve's controller: blocking, so off the loop too.
            self._handle = await self._offloader.run(
                serve.get_deployment_handle, self._config.deployment, self._config.app_name
            )
            signatures: dict[str, ModelMetadata] = await self._handle.signatures.remote()
        except EngineError:
            raise
        except Exception as error:
            raise EngineUnavailable(
                f"cannot reach Ray Serve app {self._config.app_name!r} at {self._config.address!r}: {error}",
                target=self.name,
            ) from error
        for metadata in signatures.values():
            self._models.add(Loaded(runtime=None, metadata=metadata))
        self._models.started = True
        log.info("ray serve engine started", extra={"engine": self.name, "models": sorted(signatures)})

    async def ready(self) -> bool:
        return self._models.ready

    async def metadata(self, model: ModelRef) -> ModelMetadata:
        return self._models.get(model).metadata

    async def infer(self, model: ModelRef, inputs: Tensors, *, timeout_s: float | None = None) -> dict[str, np.ndarray]:
        loaded = self._models.get(model)
        where = {"target": self.name, "model": str(model)}
        check_inputs(loaded.metadata, inputs, **where)
        response = self._handle.predict.remote(model.name, inputs[INPUT])
        try:
            async with asyncio.timeout(timeout_s) as scope:
                score = await response
        except TimeoutError:
            if scope.expired():
                response.cancel()
                raise EngineTimeout(f"no answer within {timeout_s}s", **where) from None
            raise
        except asyncio.CancelledError:
            response.cancel()
            raise
        except RayTaskError as error:
            cause = error.cause
            error_type = type(cause) if isinstance(cause, EngineError) else EngineError
            raise error_type(f"the replica failed: {cause}", **where) from error
        except (RayError, RayServeException) as error:
            raise EngineUnavailable(f"Ray Serve: {type(error).__name__}: {error}", **where) from error
        return check_outputs(loaded.metadata, {OUTPUT: score}, **where)

    async def close(self) -> None:
        """Stop calling. The application keeps running (others may use it); Ray is left only when this
        engine joined it."""
        self._models.close()
        self._handle = None
        if self._owns_ray:
            self._owns_ray = False
            await self._offloader.run(ray.shutdown)


if TYPE_CHECKING:  # mypy proves the protocol is met, so drift fails CI rather than a caller
    _conforms: type[Engine] = RayServeEngine
