"""Locust load for a Quasar gateway, shaped like a feed frontend.

    locust -f loadtest/locustfile.py --headless -u 20 -r 5 -t 60s --host 127.0.0.1:50051 \\
        --csv loadtest/reports/run --html loadtest/reports/run.html

Each simulated frontend session holds one gRPC channel and calls `quasar.v1.FeedService/GetFeed` with the
request mix of `traffic.py`: Zipf-distributed member ids over the world's members, page sizes 10/20/50/100,
a deadline on every call, a small share of debug calls, and think time between calls. The options below
(`locust --help`, group "quasar feed traffic") change the mix.

Calls are reported per page size ("GetFeed count=50") and as "GetFeed debug". A call fails on any gRPC
error (DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNAVAILABLE, ...), on an empty feed and on a debug call
answered without a trace. Degraded answers succeed; their share is printed at the end.

gRPC under Locust follows Locust's documented pattern: gevent-compatible gRPC (`init_gevent()` before any
channel exists) and a User that fires Locust's request event with name, response time and exception.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, events, task
from locust.env import Environment
from locust.exception import StopUser

# Locust puts this file's directory first on sys.path while it imports the locustfile.
from traffic import DEFAULT_MEMBERS, FeedTraffic, TrafficShape, members_in_world

from quasar.v1 import feed_pb2, feed_pb2_grpc

# Locust has monkey-patched the standard library by now; gRPC's own I/O must cooperate with gevent too.
grpc_gevent.init_gevent()


class GrpcStatusError(Exception):
    """A call that ended with a non-OK gRPC status."""


class EmptyFeedError(Exception):
    """A call that succeeded without what a frontend needs from it."""


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    defaults = TrafficShape()
    group = parser.add_argument_group("quasar feed traffic")
    group.add_argument("--world", default="var/world", help="world directory; members are read from its world.json")
    group.add_argument("--members", type=int, default=0, help=f"member count (0: from --world, else {DEFAULT_MEMBERS})")
    group.add_argument("--zipf-s", type=float, default=defaults.zipf_s, help="Zipf exponent of member activity")
    group.add_argument("--counts", default=",".join(map(str, defaults.counts)), help="page sizes requested")
    group.add_argument(
        "--count-weights", default=",".join(map(str, defaults.count_weights)), help="share of each page size"
    )
    group.add_argument("--debug-share", type=float, default=defaults.debug_share, help="share of debug calls")
    group.add_argument("--deadline-ms", type=float, default=defaults.deadline_s * 1e3, help="deadline of every call")
    group.add_argument("--think-min-s", type=float, default=defaults.think_min_s, help="shortest pause between calls")
    group.add_argument("--think-max-s", type=float, default=defaults.think_max_s, help="longest pause between calls")
    group.add_argument("--traffic-seed", type=int, default=defaults.seed, help="seed of the request draws")


def _shape(options: Any) -> TrafficShape:
    return TrafficShape(
        members=options.members or members_in_world(Path(options.world)) or DEFAULT_MEMBERS,
        zipf_s=options.zipf_s,
        counts=tuple(int(count) for count in options.counts.split(",")),
        count_weights=tuple(float(weight) for weight in options.count_weights.split(",")),
        debug_share=options.debug_share,
        deadline_s=options.deadline_ms / 1e3,
        think_min_s=options.think_min_s,
        think_max_s=options.think_max_s,
        seed=options.traffic_seed,
    )


class _Run:
    """What the users of one run share: the traffic model and the degraded-answer tally."""

    def __init__(self, traffic: FeedTraffic) -> None:
        self.traffic = traffic
        self.users = 0
        self.answered = 0
        self.degraded = 0


_run: _Run | None = None


@events.init.add_listener
def _on_init(environment: Environment, **_kwargs: Any) -> None:
    global _run
    if environment.parsed_options is not None:
        traffic = FeedTraffic(_shape(environment.parsed_options))
        _run = _Run(traffic)
        shape = traffic.shape
        print(
            f"quasar traffic: {shape.members} members (zipf s={shape.zipf_s}), counts {shape.counts} "
            f"weights {shape.count_weights}, debug {shape.debug_share:.0%}, deadline {shape.deadline_s * 1e3:.0f} ms",
            flush=True,
        )


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_kwargs: Any) -> None:
    if _run is not None and _run.answered:
        share = _run.degraded / _run.answered
        print(f"quasar: {_run.answered} answers, {_run.degraded} degraded ({share:.1%})", flush=True)


class FeedFrontendUser(User):
    """One frontend session: a channel to the gateway and GetFeed calls separated by think time.

    `--host` is the gateway's gRPC target, HOST:PORT (a `grpc://` prefix is accepted).
    """

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        if not self.host:
            raise StopUser("set --host to the gateway's gRPC target, e.g. 127.0.0.1:50051")
        if _run is None:
            raise StopUser("the quasar traffic options were not parsed")
        self.shared = _run
        self.shared.users += 1
        self.rng = self.shared.traffic.stream(self.shared.users)
        self.channel = grpc.insecure_channel(self.host.removeprefix("grpc://"))
        self.stub = feed_pb2_grpc.FeedServiceStub(self.channel)

    def wait_time(self) -> float:
        return self.shared.traffic.think_s(self.rng)

    def on_stop(self) -> None:
        self.channel.close()

    @task
    def get_feed(self) -> None:
        call = self.shared.traffic.next_call(self.rng)
        request = feed_pb2.GetFeedRequest(
            member_id=call.member_id, count=call.count, debug=call.debug, context={"surface": "feed", "locale": "en_US"}
        )
        response: feed_pb2.GetFeedResponse | None = None
        exception: Exception | None = None
        started = time.perf_counter()
        try:
            response = self.stub.GetFeed(request, timeout=self.shared.traffic.shape.deadline_s)
        except grpc.RpcError as error:
            # Code and message only: Locust groups failures by their text, and raw errors carry timestamps.
            exception = GrpcStatusError(f"{error.code().name}: {error.details()}")
        elapsed_ms = (time.perf_counter() - started) * 1e3
        if response is not None:
            self.shared.answered += 1
            self.shared.degraded += response.degraded
            if not response.items:
                exception = EmptyFeedError("empty feed")
            elif call.debug and not response.trace:
                exception = EmptyFeedError("debug call answered without a trace")
        self.environment.events.request.fire(
            request_type="grpc",
            name=call.name,
            response_time=elapsed_ms,
            response_length=response.ByteSize() if response is not None else 0,
            response=response,
            context={"member_id": call.member_id, "count": call.count},
            exception=exception,
        )
