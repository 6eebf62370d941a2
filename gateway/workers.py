"""`quasar serve --workers N`: N gateway processes on one port, each with its own event loop.

Python runs one request's Python on one core at a time (the GIL), so a gateway uses every core by
running one process per core, as gRPC's Python docs advise for multi-core servers: each worker binds
the same port with SO_REUSEPORT and the kernel spreads connections across them. A supervisor process
(this module) owns what must be one per deployment:

- the port: reserved before the workers start, so `--port 0` gives all of them the same free port;
- the metrics endpoint: workers write prometheus-client's multiprocess files, the supervisor serves
  their aggregate (counters and histograms summed, gauges per worker);
- admin changes: a SetRoutes call reaches one worker, which forwards it here; the change is checked on
  every worker, then swapped on every worker, and answered only after all acknowledged (see
  `gateway.route_changes`). A worker started later is brought to the current table before it counts;
- lifecycle: SIGTERM/SIGINT is passed to every worker, each drains its in-flight calls, the supervisor
  exits when all have; a worker that dies is restarted (at most `_MAX_RESTARTS` in `_RESTART_WINDOW_S`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from engines.config import RouteConfig
from gateway.control import ControlChannel, ControlError, Message
from gateway.release_changes import ClusterReleaseChanges, ReleaseChange
from gateway.release_manifest import ReleaseError, load_release
from gateway.release_plan import PlanError, ReleasePlans, read_plans, save_plans
from gateway.releases import ReleaseRejected, report_lines
from gateway.route_changes import (
    ClusterRouteChanges,
    control_error,
    planned,
    put_in_force,
    without_release_routes,
)
from gateway.route_merge import parse_routes, routes_json
from gateway.settings import GatewaySettings
from gateway.status import RequestRejected

log = logging.getLogger(__name__)

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
_MAX_RESTARTS = 5
_RESTART_WINDOW_S = 60.0
_STARTUP_TIMEOUT_S = 300.0  # loading engines and indexes; a worker not ready by then is a failed start
_EXIT_GRACE_S = 15.0  # beyond the drain grace, for a worker to close its app and exit


def available_cores() -> int:
    """CPUs this process may run on: its affinity, capped by a cgroup v2 CPU quota (a container's limit)."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


@contextlib.contextmanager
def reserved_port(host: str, port: int) -> Iterator[int]:
    """Bind `host:port` (0: a free one) with SO_REUSEPORT and hold it, not listening, while the workers
    bind it too: every worker gets the same port, and no other program takes it in between."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    channel: ControlChannel | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class Supervisor:
    def __init__(self, settings: GatewaySettings, workers: int, runtime_dir: Path) -> None:
        if workers < 2:
            raise ValueError(f"a supervisor runs 2 or more workers, got {workers} (1: run the gateway itself)")
        self.settings = settings
        self.count = workers
        self.port = 0
        self.metrics_port: int | None = None
        self._runtime_dir = runtime_dir
        self._control_path = str(runtime_dir / "control.sock")
        self._metrics_dir = runtime_dir / "metrics"
        self._workers: dict[int, _Worker] = {}
        self._routes: dict[str, RouteConfig] | None = None  # the cluster's table once a worker reported one
        self._plans = read_plans(settings.state_dir)  # the releases every worker serves
        self._lock = asyncio.Lock()  # route changes and worker registrations, one at a time
        self._restarts: list[float] = []
        self._context = multiprocessing.get_context("spawn")  # fresh interpreters: no inherited loop or threads

    async def run(self, stop: asyncio.Event) -> int:
        """Serve until `stop` is set, then drain every worker. Returns the process exit code."""
        self._metrics_dir.mkdir(parents=True)
        os.environ[METRICS_DIR_ENV] = str(self._metrics_dir)  # inherited by the workers
        server = await asyncio.start_unix_server(self._connected, path=self._control_path)
        metrics_http = self._serve_metrics()
        try:
            with reserved_port(self.settings.host, self.settings.port) as port:
                self.port = port
                # Worker 0 alone first: a configuration problem is reported once, by one process, and the
                # others do not load everything for nothing. Then the rest at once.
                self._spawn(0)
                failed = await self._all_ready()
                if failed is None:
                    for index in range(1, self.count):
                        self._spawn(index)
                    failed = await self._all_ready()
                if failed is not None:
                    return failed
                log.info(
                    "gateway serving",
                    extra={"grpc_port": port, "metrics_port": self.metrics_port, "workers": self.count},
                )
                print(f"quasar gateway listening on {self.settings.host}:{port} ({self.count} workers)", flush=True)
                return await self._watch(stop)
        finally:
            await self._stop_all()
            server.close()
            if metrics_http is not None:
                metrics_http.shutdown()

    # -- workers ----------------------------------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        # As the plain settings class (a settings file's is a local subclass, which cannot be pickled).
        fields = {name: getattr(self.settings, name) for name in GatewaySettings.model_fields}
        worker_settings = GatewaySettings.model_construct(**{**fields, "port": self.port, "metrics_port": None})
        process = self._context.Process(
            target=worker_main,
            args=(worker_settings, index, self._control_path),
            name=f"quasar-worker-{index}",
        )
        process.start()
        self._workers[index] = _Worker(index, process)
        log.info("worker started", extra={"worker": index, "pid": process.pid})

    async def _all_ready(self) -> int | None:
        """None once every started worker is ready; else the exit code for the supervisor (a worker's own
        code when it exited first, so a configuration problem still exits 2)."""
        waits: set[asyncio.Future[Any]] = {asyncio.ensure_future(w.ready.wait()) for w in self._workers.values()}
        deaths = asyncio.ensure_future(self._first_death())
        try:
            async with asyncio.timeout(_STARTUP_TIMEOUT_S):
                remaining = set(waits)
                while remaining:
                    done, _ = await asyncio.wait({*remaining, deaths}, return_when=asyncio.FIRST_COMPLETED)
                    remaining -= done
                    if deaths in done:
                        worker = deaths.result()
                        await asyncio.to_thread(worker.process.join, 5)  # ended: reaps it, so its code is known
                        code = worker.process.exitcode
                        if code != 2:  # 2: it printed its configuration problems already
                            print(
                                f"error: worker {worker.index} exited with code {code} before it was ready "
                                "(its log is above)",
                                file=sys.stderr,
                                flush=True,
                            )
                        return code if code in (1, 2) else 1
        except TimeoutError:
            print(f"error: the workers were not ready within {_STARTUP_TIMEOUT_S:.0f} s", file=sys.stderr)
            return 1
        finally:
            deaths.cancel()
            for wait in waits:
                wait.cancel()
        return None

    async def _first_death(self) -> _Worker:
        """The first worker to exit: a process's sentinel is a descriptor that turns readable when it ends."""
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[_Worker] = loop.create_future()
        workers = list(self._workers.values())

        def on_exit(worker: _Worker) -> None:
            if not ended.done():
                ended.set_result(worker)

        for worker in workers:
            loop.add_reader(worker.process.sentinel, on_exit, worker)
        try:
            return await ended
        finally:
            for worker in workers:
                loop.remove_reader(worker.process.sentinel)

    async def _watch(self, stop: asyncio.Event) -> int:
        """Restart workers that die, until `stop`; 1 when they die too often."""
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while True:
                death = asyncio.ensure_future(self._first_death())
                done, _ = await asyncio.wait({stopping, death}, return_when=asyncio.FIRST_COMPLETED)
                if stopping in done:
                    death.cancel()
                    return 0
                worker = death.result()
                await asyncio.to_thread(worker.process.join, 5)
                log.error("worker died", extra={"worker": worker.index, "exit_code": worker.process.exitcode})
                self._forget(worker)
                now = time.monotonic()
                self._restarts = [t for t in self._restarts if now - t < _RESTART_WINDOW_S] + [now]
                if len(self._restarts) > _MAX_RESTARTS:
                    print(
                        f"error: workers died {len(self._restarts)} times in {_RESTART_WINDOW_S:.0f} s; stopping",
                        file=sys.stderr,
                    )
                    return 1
                self._spawn(worker.index)
        finally:
            stopping.cancel()

    def _forget(self, worker: _Worker) -> None:
        from prometheus_client import multiprocess

        if worker.process.pid is not None:
            multiprocess.mark_process_dead(worker.process.pid, str(self._metrics_dir))  # type: ignore[no-untyped-call]
        if self._workers.get(worker.index) is worker:
            del self._workers[worker.index]

    async def _stop_all(self) -> None:
        """SIGTERM to every worker (each drains), then wait; a worker still running after its grace is killed."""
        for worker in self._workers.values():
            if worker.process.is_alive() and worker.process.pid is not None:
                os.kill(worker.process.pid, signal.SIGTERM)
        deadline = self.settings.drain_grace_s + _EXIT_GRACE_S
        for worker in list(self._workers.values()):
            await asyncio.to_thread(worker.process.join, deadline)
            if worker.process.is_alive():
                log.error("worker did not stop in time: killed", extra={"worker": worker.index})
                worker.process.kill()
                await asyncio.to_thread(worker.process.join, 5)
            self._forget(worker)

    # -- control ---------------------------------------------------------------------------------------

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The handler reads `channel` when a request arrives, after the assignment below.
        channel = ControlChannel(reader, writer, lambda message: self._on_request(channel, message))
        await channel.serve()

    async def _on_request(self, channel: ControlChannel, message: Message) -> Message:
        op = message.get("op")
        if op == "ready":
            await self._register(channel, int(message["worker"]), str(message["routes"]), str(message["plans"]))
            return {}
        if op == "set_routes":
            return await self._set_routes(message)
        if op == "release":
            return await self._release(message)
        raise ControlError("invalid_argument", f"unknown operation {op!r}")

    async def _register(self, channel: ControlChannel, index: int, routes: str, plans: str) -> None:
        worker = self._workers.get(index)
        if worker is None:
            raise ControlError("failed_precondition", f"no worker {index} is running")
        async with self._lock:
            reported = without_release_routes(parse_routes(routes))
            if self._routes is None:
                self._routes = reported
            elif reported != self._routes:  # started after a change: bring it up to date
                await channel.request({"op": "swap_routes", "routes": routes_json(self._routes)})
            if ReleasePlans.from_json(plans) != self._plans:  # it read the state file before a change landed
                current = self._plans.to_json()
                await channel.request({"op": "prepare_release", "plans": current}, timeout_s=_STARTUP_TIMEOUT_S)
                await channel.request({"op": "commit_release", "plans": current}, timeout_s=_STARTUP_TIMEOUT_S)
            worker.channel = channel
            worker.ready.set()
        log.info("worker ready", extra={"worker": index, "pid": worker.process.pid})

    async def _set_routes(self, message: Message) -> Message:
        async with self._lock:
            current = dict(self._routes or {})
            try:
                new = planned(
                    current,
                    parse_routes(str(message["routes"])),
                    list(message.get("remove", [])),
                    str(message.get("expected_version", "")),
                )
            except RequestRejected as error:
                raise control_error(error) from None
            table = routes_json(new)
            ready = [w for w in self._workers.values() if w.channel is not None and w.ready.is_set()]
            await self._on_every(ready, {"op": "check_routes", "routes": table})
            if not message.get("dry_run"):
                done = await self._on_every(ready, {"op": "swap_routes", "routes": table}, undo=routes_json(current))
                self._routes = new
                log.warning("routes changed on every worker", extra={"workers": done})
            return {"before": routes_json(current), "after": table}

    async def _release(self, message: Message) -> Message:
        """Apply or roll back a release on every worker: prepare on all (each loads and validates), then
        commit on all, then save the plans; the answer comes after the last commit."""
        async with self._lock:
            try:
                if message.get("action") == "rollback":
                    requested = message.get("model")
                    model, plans = self._plans.rolled_back(None if requested is None else str(requested))
                    validate: list[str] = []
                else:
                    manifest = str(message["manifest"])
                    model = load_release(Path(manifest)).model
                    share = float(message.get("canary_share", 0.0))
                    plans = self._plans.applied(model, manifest, canary_share=share)
                    validate = [manifest]
            except (PlanError, ReleaseError) as error:
                raise ControlError("failed_precondition", str(error)) from None
            ready = [w for w in self._workers.values() if w.channel is not None and w.ready.is_set()]
            prepare = {"op": "prepare_release", "plans": plans.to_json(), "validate": validate}
            answers = await asyncio.gather(*(self._ask(w, prepare) for w in ready), return_exceptions=True)
            for worker, answer in zip(ready, answers, strict=True):
                if isinstance(answer, ControlError):
                    raise ControlError(answer.code, f"worker {worker.index}: {answer.message}")
                if isinstance(answer, BaseException):
                    raise ControlError("internal", f"worker {worker.index}: {answer}")
            report: list[str] = next((list(a.get("report", [])) for a in answers if isinstance(a, dict)), [])
            if message.get("dry_run"):
                return ReleaseChange(model, self._plans, report).to_message()
            await self._on_every(ready, {"op": "commit_release", "plans": plans.to_json()})
            save_plans(self.settings.state_dir, plans)
            self._plans = plans
            log.warning("releases changed on every worker", extra={"model": model, "releases": plans.manifests})
            return ReleaseChange(model, plans, report).to_message()

    async def _on_every(self, workers: list[_Worker], request: Message, *, undo: str | None = None) -> int:
        """`request` on every worker at once; the first failure is raised naming its worker. With `undo`
        (a swap), the workers that did swap are put back on the `undo` table first."""
        results = await asyncio.gather(
            *(self._ask(w, request) for w in workers),
            return_exceptions=True,
        )
        failed = [(w, r) for w, r in zip(workers, results, strict=True) if isinstance(r, BaseException)]
        if not failed:
            return len(workers)
        if undo is not None:
            swapped = [w for w, r in zip(workers, results, strict=True) if not isinstance(r, BaseException)]
            await asyncio.gather(
                *(self._ask(w, {"op": "swap_routes", "routes": undo}) for w in swapped), return_exceptions=True
            )
        worker, error = failed[0]
        if isinstance(error, ControlError):
            raise ControlError(error.code, f"worker {worker.index}: {error.message}")
        raise ControlError("internal", f"worker {worker.index}: {error}")

    async def _ask(self, worker: _Worker, request: Message) -> Message:
        assert worker.channel is not None
        return await worker.channel.request(request, timeout_s=_STARTUP_TIMEOUT_S)

    # -- metrics ---------------------------------------------------------------------------------------

    def _serve_metrics(self) -> Any:
        if self.settings.metrics_port is None:
            return None
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self._metrics_dir))  # type: ignore[no-untyped-call]
        server, _thread = start_http_server(self.settings.metrics_port, addr=self.settings.host, registry=registry)
        self.metrics_port = int(server.server_port)
        return server


def run_workers(settings: GatewaySettings, workers: int) -> int:
    """The supervisor's entry point: serve with `workers` processes until SIGTERM/SIGINT; the exit code."""
    from gateway.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        runtime_dir = Path(tempfile.mkdtemp(prefix="quasar-gateway-"))
        try:
            return await Supervisor(settings, workers, runtime_dir).run(stop)
        finally:
            shutil.rmtree(runtime_dir, ignore_errors=True)

    return asyncio.run(main())


def worker_main(settings: GatewaySettings, index: int, control_path: str) -> None:
    """A worker process: one gateway on the shared port, its admin changes and readiness through the
    supervisor's control socket."""
    from gateway.config_errors import exit_on_config_problems
    from gateway.logs import configure_logging
    from gateway.server import GatewayServer
    from gateway.tracing import configure_tracing

    configure_logging(settings.log_level, settings.log_format)
    configure_tracing(settings.tracing)
    # Ctrl-C reaches the whole process group: the supervisor's SIGTERM is what stops a worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

        async def on_request(message: Message) -> Message:
            op = message.get("op")
            if op == "prepare_release":
                try:
                    plans = ReleasePlans.from_json(str(message["plans"]))
                    reports = await gateway.app.releases.prepare(plans, validate=list(message.get("validate", [])))
                except ReleaseRejected as error:
                    raise ControlError("failed_precondition", str(error)) from None
                return {"report": report_lines(reports)}
            if op == "commit_release":
                gateway.app.releases.commit(ReleasePlans.from_json(str(message["plans"])))
                return {}
            if op in ("check_routes", "swap_routes"):
                try:
                    routes = parse_routes(str(message["routes"]))
                    # Requests come only after this worker registered, by then `gateway` is bound.
                    await put_in_force(gateway.app.router, routes, dry_run=op == "check_routes")
                except RequestRejected as error:
                    raise control_error(error) from None
                return {}
            raise ControlError("invalid_argument", f"unknown operation {op!r}")

        channel = await ControlChannel.connect(control_path, on_request)
        listening = asyncio.ensure_future(channel.serve())
        # The supervisor gone (killed, crashed): nobody would stop this worker any more, so it stops itself.
        listening.add_done_callback(lambda _done: stop.set())
        gateway = GatewayServer(
            settings,
            route_changes=ClusterRouteChanges(channel),
            release_changes=ClusterReleaseChanges(channel),
            reuse_port=True,
            worker=str(index),
        )

        async def register() -> None:
            # Before the port takes calls: the supervisor first brings this worker to the current routes.
            await channel.request(
                {
                    "op": "ready",
                    "worker": index,
                    "routes": routes_json(gateway.app.router.routes),
                    "plans": gateway.app.releases.plans.to_json(),
                },
                timeout_s=_STARTUP_TIMEOUT_S,
            )

        try:
            await gateway.start(before_serving=register)
            await stop.wait()
        finally:
            await gateway.drain_and_stop()
            await channel.close()
            listening.cancel()

    with exit_on_config_problems():
        if settings.use_uvloop:
            import uvloop

            uvloop.run(main())
        else:
            asyncio.run(main())
