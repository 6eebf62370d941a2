"""Real `redis-server` processes for tests: a single server and a 3-master cluster, on free ports.

Processes are started with persistence off and always stopped (terminate, then kill). Readiness is
waited for by polling the server's own reply, bounded. `shared(...)` hands one instance to every
session-scoped fixture that asks (the contract suite and the Redis integration suite), reference counted,
so a session starts each kind once.
"""

from __future__ import annotations

import asyncio
import atexit
import socket
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import hiredis

READY_TIMEOUT_S = 20.0
T = TypeVar("T")


def free_port(*, with_bus: bool = False) -> int:
    """A port free now (and, for cluster nodes, its bus port + 10000 too)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if not with_bus:
            return port
        if port + 10000 < 65536:
            with socket.socket() as bus:
                try:
                    bus.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair found")


def command(port: int, *args: str | bytes, timeout_s: float = 2.0) -> Any:
    """One command over a plain socket, its parsed reply; OSError when the server cannot be reached."""
    reader = hiredis.Reader()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as conn:
        conn.sendall(hiredis.pack_command(args))
        while (reply := reader.gets()) is False:
            data = conn.recv(65536)
            if not data:
                raise ConnectionError(f"redis on {port} closed the connection")
            reader.feed(data)
    return reply


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll `predicate` (a cheap readiness probe) until true; TimeoutError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout_s} s")
        time.sleep(0.02)  # readiness polling of an external process, not a timing assumption


class RedisServer:
    """One redis-server process; `kill()` and `start()` again (same port) simulate an outage."""

    def __init__(self, directory: Path, port: int | None = None, *extra: str) -> None:
        self.directory = directory
        self.port = port or free_port(with_bus=bool(extra))
        self._extra = extra
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / f"redis-{self.port}.log").open("ab")
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self._process = subprocess.Popen(
            [*args, "--dir", str(self.directory), *self._extra], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        wait_until(self._answers_ping, f"redis-server on {self.port}")
        return self

    def command(self, *args: str | bytes) -> Any:
        return command(self.port, *args)

    def info(self, section: str) -> dict[str, str]:
        """`INFO <section>` as field -> value."""
        lines = bytes(self.command("INFO", section)).decode().splitlines()
        return dict(line.split(":", 1) for line in lines if ":" in line and not line.startswith("#"))

    def calls(self, name: str) -> int:
        """How many times this server ran command `name` (INFO commandstats)."""
        stats = self.info("commandstats").get(f"cmdstat_{name.lower()}", "calls=0,")
        return int(stats.split("calls=")[1].split(",")[0])

    def _answers_ping(self) -> bool:
        if not self.running:
            raise RuntimeError(f"redis-server on {self.port} exited; see {self.directory}")
        try:
            return bool(command(self.port, "PING") == b"PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: connections drop without a goodbye, as in a crash."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None


class RedisCluster:
    """Three masters, no replicas, joined with `redis-cli --cluster create`; `url` names the first node."""

    def __init__(self, directory: Path) -> None:
        self.nodes = [
            RedisServer(
                directory / f"node{i}",
                None,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(directory / f"node{i}" / "nodes.conf"),
                "--cluster-node-timeout",
                "5000",
            )
            for i in range(3)
        ]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> RedisCluster:
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            subprocess.run(
                ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=60,
            )
            for node in self.nodes:
                wait_until(lambda node=node: b"cluster_state:ok" in command(node.port, "CLUSTER", "INFO"), "cluster")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def owner(self, slot: int) -> RedisServer:
        """The master serving `slot` now."""
        for start, end, primary, *_ in self.nodes[0].command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return next(node for node in self.nodes if node.port == primary[1])
        raise LookupError(f"slot {slot} is not served")

    def keys_in_slot(self, slot: int) -> int:
        return int(self.owner(slot).command("CLUSTER", "COUNTKEYSINSLOT", str(slot)))

    def move_empty_slot(self, slot: int, target: RedisServer) -> None:
        """Give an empty `slot` to `target` (every node is told, the target first)."""
        target_id = target.command("CLUSTER", "MYID").decode()
        for node in sorted(self.nodes, key=lambda n: n is not target):
            reply = node.command("CLUSTER", "SETSLOT", str(slot), "NODE", target_id)
            if reply != b"OK":
                raise RuntimeError(f"SETSLOT on {node.port}: {reply}")

    def moved_replies(self, node: RedisServer) -> int:
        """MOVED errors `node` has replied so far (INFO errorstats)."""
        stats = node.info("errorstats").get("errorstat_MOVED", "count=0")
        return int(stats.split("count=")[1].split(",")[0])


_shared: dict[str, tuple[Any, int]] = {}


@contextmanager
def shared(kind: str, factory: Callable[[], T], stop: Callable[[T], None]) -> Iterator[T]:
    """One running instance of `kind` for every holder; stopped when the last holder leaves (or at exit)."""
    if kind in _shared:
        instance, holders = _shared[kind]
        _shared[kind] = (instance, holders + 1)
    else:
        instance = factory()
        _shared[kind] = (instance, 1)
        atexit.register(stop, instance)  # a crashed session still stops its processes
    try:
        yield instance
    finally:
        instance, holders = _shared[kind]
        if holders == 1:
            del _shared[kind]
            stop(instance)
        else:
            _shared[kind] = (instance, holders - 1)


def run_sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion on a fresh event loop in a worker thread (sync test helpers that must
    not touch the caller's loop, e.g. publishing a version from inside a running test)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result(timeout=60)
