"""The gRPC server's lifecycle: create, start, report ready, drain, stop."""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer
from grpc_health.v1.health_pb2_grpc import add_HealthServicer_to_server
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from gateway.admin_servicer import AdminServicer
from gateway.admission import Admission
from gateway.app import FeedApp
from gateway.backlog import backlog_options, refusals_are_resource_exhausted
from gateway.convert import RequestLimits
from gateway.decode_guard import DecodeGuard
from gateway.inference_servicer import InferenceServicer, add_inference_service
from gateway.interceptors import MetricsInterceptor
from gateway.rate_limited_log import RateLimitedLog
from gateway.release_changes import ReleaseChanges
from gateway.route_changes import RouteChanges
from gateway.servicer import FeedServicer
from gateway.settings import GatewaySettings
from gateway.status import Aborter
from gateway.tls import CertificateFiles, add_port
from gateway.tracing import server_interceptors
from quasar.v1 import admin_pb2, admin_pb2_grpc, feed_pb2, feed_pb2_grpc

log = logging.getLogger(__name__)

FEED_SERVICE = feed_pb2.DESCRIPTOR.services_by_name["FeedService"].full_name
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
_OVERALL = ""  # grpc.health.v1: the empty service name is the server as a whole
_STREAM_GRACE_S = 0.5
# grpc's own default; bodies above the limit get RESOURCE_EXHAUSTED from grpc before any handler runs.
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
# Log lines a client can provoke (undecodable bodies, internal errors): at most one per method per interval.
_CLIENT_PROVOKED_LOG_INTERVAL_S = 10.0


class GatewayServer:
    """One gateway process: the app, its gRPC server, health and the metrics endpoint.

    `start()` loads the app, binds the port (0 picks a free one, see `port`) and turns health to
    SERVING only once everything is ready. `drain_and_stop()` turns health to NOT_SERVING, refuses
    new calls, waits up to `drain_grace_s` for in-flight calls, then stops.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        app: FeedApp | None = None,
        *,
        tracing: bool | None = None,
        route_changes: RouteChanges | None = None,
        release_changes: ReleaseChanges | None = None,
        reuse_port: bool = False,
        worker: str = "0",
    ) -> None:
        """`tracing`: continue callers' traces with server spans; default: when an exporter is configured.
        `route_changes`: how AdminService changes routes (default: in this process). `reuse_port`: bind
        with SO_REUSEPORT, so other workers bind the same port (`quasar serve --workers N`); off, a second
        gateway on a port in use fails to start instead of sharing it."""
        self.settings = settings
        self._route_changes = route_changes
        self._release_changes = release_changes
        self._reuse_port = reuse_port
        self._tracing = settings.tracing.exporter != "none" if tracing is None else tracing
        self.app = app or FeedApp(settings, worker=worker)
        self.health = HealthServicer()
        self.admission = Admission.from_settings(settings, self.app.metrics)  # overload: adaptive limit
        self._server: grpc.aio.Server | None = None
        self._metrics_http: Any = None
        self.port = 0
        self.metrics_port: int | None = None
        self.certificates: CertificateFiles | None = None  # security: set at start when TLS is configured
        # `max_request_bytes` is read with a default until GatewaySettings declares it.
        self.max_request_bytes: int = getattr(settings, "max_request_bytes", DEFAULT_MAX_REQUEST_BYTES)
        self.aborter = Aborter(RateLimitedLog(log, interval_s=_CLIENT_PROVOKED_LOG_INTERVAL_S))
        self._decode_guard = DecodeGuard(self.aborter, RateLimitedLog(log, interval_s=_CLIENT_PROVOKED_LOG_INTERVAL_S))

    async def start(self, *, before_serving: Callable[[], Awaitable[None]] | None = None) -> None:
        """`before_serving`: awaited once the app is loaded, before the port takes calls (a worker of
        `--workers N` registers there and is brought to the cluster's current routes)."""
        await self.health.set(_OVERALL, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.health.set(FEED_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.app.start()
        if before_serving is not None:
            await before_serving()
        # What startup loaded (engines, tables' maps, declarations, imported modules) lives until the end:
        # out of every collection from now on. Measured: with a large heap, a full collection stalled the
        # loop 130 ms, past the sources' 100 ms timeouts; frozen, the slowest of 500 requests took 16 ms.
        gc.collect()
        gc.freeze()
        server = grpc.aio.server(
            # Bounded, grpc.aio checks it as it takes each call and refuses one past it (RESOURCE_EXHAUSTED) before
            # any interceptor runs: cheap enough that core's pending list is drained while a request runs, so the
            # call admitted when the slot frees is a fresh one, not one taken a whole request earlier (README,
            # Overload).
            maximum_concurrent_rpcs=self.settings.overload_max_active_calls,
            # The decode guard comes last, nearest the services: the handlers the others wrap carry its
            # deserializer.
            interceptors=[
                *server_interceptors(self._tracing),
                MetricsInterceptor(self.app.metrics),
                self._decode_guard,
            ],
            options=[
                ("grpc.max_receive_message_length", self.max_request_bytes),
                ("grpc.so_reuseport", 1 if self._reuse_port else 0),
                *backlog_options(self.settings.overload_max_pending_calls),  # overload: bound core's queue
            ],
        )
        limits = RequestLimits(
            default_count=self.settings.default_count,
            max_count=self.settings.max_count,
            max_context_entries=self.settings.max_context_entries,
            max_context_bytes=self.settings.max_context_bytes,
        )
        feed_servicer = FeedServicer(
            self.app, limits, self.admission, access_log=self.settings.access_log, aborter=self.aborter
        )
        feed_pb2_grpc.add_FeedServiceServicer_to_server(feed_servicer, server)
        add_HealthServicer_to_server(self.health, server)
        services = [FEED_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
        inference = InferenceServicer(
            self.app.router,
            self.admission,
            default_timeout_s=self.settings.default_timeout_s,
            server_version=_package_version(),
            aborter=self.aborter,
        )
        services.append(add_inference_service(inference, server))
        admin_token = self.settings.admin_token.get_secret_value() if self.settings.admin_token else ""
        if admin_token:  # no token, no admin service: an unauthenticated admin API is never served
            admin = AdminServicer(
                self.app.router,
                admin_token,
                aborter=self.aborter,
                changes=self._route_changes,
                releases=self.app.releases,
                release_changes=self._release_changes,
            )
            admin_pb2_grpc.add_AdminServiceServicer_to_server(admin, server)
            services.append(ADMIN_SERVICE)
        if self.settings.reflection:  # security: off unless enabled, it lists every service to anyone
            reflection.enable_server_reflection(services, server)
        # security: one port, TLS when configured, so the admin service is served over TLS exactly then
        self.port, self.certificates = add_port(server, f"{self.settings.host}:{self.settings.port}", self.settings.tls)
        if self.port == 0:
            raise OSError(f"could not bind {self.settings.host}:{self.settings.port}")
        await server.start()
        self._server = server
        if self.settings.metrics_port is not None:
            self._metrics_http, _thread = start_http_server(
                self.settings.metrics_port, addr=self.settings.host, registry=self.app.metrics.registry
            )
            self.metrics_port = self._metrics_http.server_port
        if not await self.app.ready():
            raise RuntimeError("the app is not ready after start: an engine reports not ready")
        await self.health.set(_OVERALL, health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(FEED_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "gateway serving",
            extra={
                "grpc_port": self.port,
                "metrics_port": self.metrics_port,
                "workflows": sorted(self.app.workflow_names),
                # How core refuses calls past its pending bound (gateway.backlog): what callers will see.
                "backlog_refusal": "RESOURCE_EXHAUSTED" if refusals_are_resource_exhausted(os.environ) else "CANCELLED",
                "max_active_calls": self.settings.overload_max_active_calls,
            },
        )

    async def drain_and_stop(self) -> None:
        """NOT_SERVING, then UNAVAILABLE for new calls while in-flight ones finish, then stop.

        New calls are refused by admission control (a retryable UNAVAILABLE with a message) rather than
        by grpc's own stop, which would answer CANCELLED; the server stops once nothing is in flight or
        `drain_grace_s` has passed, whichever comes first.
        """
        log.info("draining", extra={"in_flight": self.admission.in_flight})
        await self.health.enter_graceful_shutdown()
        self.admission.start_draining()
        started = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(self.settings.drain_grace_s):
                await self.admission.wait_idle()
                # Stay up at least drain_min_s, idle or not: clients learn NOT_SERVING from health checks and
                # move away meanwhile (draining calls get a retryable UNAVAILABLE). Stopping at once would
                # answer a call grpc already took CANCELLED, which no client retries (grpc/grpc#41785).
                left_s = self.settings.drain_min_s - (asyncio.get_running_loop().time() - started)
                if left_s > 0:
                    await asyncio.sleep(left_s)
        except TimeoutError:
            log.warning("drain grace expired", extra={"in_flight": self.admission.in_flight})
        if self._server is not None:
            # Only streams such as health Watch can still be open here; give them a moment to see NOT_SERVING.
            await self._server.stop(_STREAM_GRACE_S)
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
        await self.app.close()
        gc.unfreeze()  # what the process still holds is collected normally at its exit
        log.info("gateway stopped")

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def serve_until_signalled(settings: GatewaySettings, stop: asyncio.Event) -> None:
    """Run a gateway until `stop` is set (the entry point sets it on SIGTERM/SIGINT), then drain."""
    gateway = GatewayServer(settings)
    try:
        await gateway.start()
        print(f"quasar gateway listening on {settings.host}:{gateway.port}", flush=True)
        await stop.wait()
    finally:
        await gateway.drain_and_stop()


def _package_version() -> str:
    try:
        return importlib.metadata.version("quasar-serving")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
