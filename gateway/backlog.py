"""The bound on calls grpc holds before the gateway takes them (the queue admission cannot see).

grpc.aio takes one call from grpc core at a time, a few event-loop turns apart, and every turn also runs
a slice of each admitted request: under a burst, calls are taken at about the rate they complete, so they
wait in core's pending list, not in front of admission (measured: a 3,000-call burst on one channel never
put more than ~6 calls in the handler). Only core can shed that queue at line rate. It does so through
its pending-request limits, random early detection over the list's length when a call arrives: up to
`soft` calls waiting, the new one waits too; from `hard` on it is refused; between them a growing share
is refused (grpc core, `RandomEarlyDetection::Reject`). Refused calls end at once, with no handler run.

The gateway's `max_pending_calls` is the hard bound, so it means what it says, at most that many calls
wait, and early refusals start at half of it. At 1 no call waits behind another: the latency-first
setting, where a call that grpc.aio has not asked for yet is refused rather than queued behind the one
the worker runs (soft 1, hard 2, the mapping before, let two wait: README, Overload, gives what that
cost admitted calls in a one-off probe).

Which status the caller sees is core's choice, made by its HTTP/2 server transport: the classic one drops
a refused call (the caller sees CANCELLED); the promise-based one (grpc experiment `ph2_server`) answers
RESOURCE_EXHAUSTED "Too many pending requests for this server", the status a client's retry policy and
load balancer read as "overloaded, try elsewhere". Core reads its experiments once, when grpc is first
imported, so the gateway's entry points (`quasar.entry`) put it in GRPC_EXPERIMENTS before anything
imports grpc. An operator can still turn it off with `GRPC_EXPERIMENTS=-ph2_server`. Measured with both
transports: the full suite passes, unary latency is the same within noise.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

PENDING_SOFT_LIMIT = "grpc.server.max_pending_requests"
PENDING_HARD_LIMIT = "grpc.server.max_pending_requests_hard_limit"


def backlog_options(max_pending_calls: int) -> list[tuple[str, int]]:
    """Server channel options that let at most `max_pending_calls` wait in core's pending list, refusing a
    growing share of new calls from half of it (soft `max_pending_calls // 2`, hard `max_pending_calls`)."""
    if max_pending_calls < 1:
        raise ValueError(f"max_pending_calls must be at least 1, got {max_pending_calls}")
    return [(PENDING_SOFT_LIMIT, max_pending_calls // 2), (PENDING_HARD_LIMIT, max_pending_calls)]


EXPERIMENTS_ENV = "GRPC_EXPERIMENTS"
SHEDDING_EXPERIMENT = "ph2_server"  # core's promise-based HTTP/2 server: refusals are RESOURCE_EXHAUSTED


def _names(experiments: str) -> list[str]:
    """GRPC_EXPERIMENTS' comma-separated names (`-name` turns one off), blanks dropped."""
    return [name.strip() for name in experiments.split(",") if name.strip()]


def with_shedding_experiment(experiments: str) -> str:
    """`experiments` with the shedding experiment added, unless it is already named either way (an
    operator's explicit choice stands)."""
    names = _names(experiments)
    if any(name.lstrip("-") == SHEDDING_EXPERIMENT for name in names):
        return ",".join(names)
    return ",".join([*names, SHEDDING_EXPERIMENT])


def enable_shedding_experiment(environ: MutableMapping[str, str]) -> None:
    """Call before grpc is imported (core reads the variable once, at import): see the module's doc."""
    environ[EXPERIMENTS_ENV] = with_shedding_experiment(environ.get(EXPERIMENTS_ENV, ""))


def refusals_are_resource_exhausted(environ: Mapping[str, str]) -> bool:
    """Whether this process's environment asks core for RESOURCE_EXHAUSTED refusals (a start-up log line
    says so; the variable only counts if it was set before grpc was imported, which the entry points do)."""
    return SHEDDING_EXPERIMENT in _names(environ.get(EXPERIMENTS_ENV, ""))
