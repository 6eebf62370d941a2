"""Open Inference Protocol overhead: Triton's perf_analyzer against Quasar's ModelInfer for a Triton-backed
logical model, and against the same Triton model directly, in one run.

Usage: python benchmarks/oip_overhead.py [--world var/world] [--concurrency 1 4] [--rounds 3]

A real Triton server (PyTriton, from the Triton venv; see tests/peers/triton_server.py) serves the
world's ranker as `feed_ranker`; a gateway process routes its `feed_ranker` to that server (engine kind
`triton`). perf_analyzer sends the same [rows, 77] FP32 tensor of zeros to each (random bytes would hold
NaNs, which Quasar refuses) with synchronous calls, `--rounds` times each, alternating, and the median
round per target is compared. Goal: Quasar's p50 within 1.15x of Triton's.

A third target separates the cost of the extra hop from Quasar's own: a bare grpc.aio pass-through proxy
(benchmarks/grpc_passthrough_proxy.py: bytes in, bytes out, no parsing) in front of the same Triton. No
Python gRPC gateway can beat it, so `quasar/passthrough` is what Quasar's routing, checks and metrics
cost, and `passthrough/triton` is what one more Python gRPC hop costs on this machine.

perf_analyzer needs Debian's libb64-0d (`apt-get install -y libb64-0d`) and libcudart.so.12 from the
nvidia-cuda-runtime-cu12 wheel on LD_LIBRARY_PATH, even on CPU; this script adds the latter.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from gateway.deployment import Deployment

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the Triton peer launcher lives in tests/peers, not in an installed package

from quasar.demo.build import build_world  # noqa: E402
from tests.peers.triton_server import start_triton_peer  # noqa: E402

MODEL = "feed_ranker"
INPUT, WIDTH = "features", 77
GOAL = 1.15


@dataclass(frozen=True)
class Round:
    """One perf_analyzer measurement (latencies in microseconds)."""

    requests_per_s: float
    avg_us: float
    p50_us: float
    p90_us: float
    p99_us: float


def perf_analyzer_env() -> dict[str, str]:
    env = dict(os.environ)
    try:
        import nvidia.cuda_runtime  # type: ignore[import-untyped]

        lib = str(Path(next(iter(nvidia.cuda_runtime.__path__))) / "lib")
        env["LD_LIBRARY_PATH"] = lib + (f":{env['LD_LIBRARY_PATH']}" if env.get("LD_LIBRARY_PATH") else "")
    except ImportError:
        pass  # the venv's perf_analyzer wrapper sets it
    return env


def perf_analyzer_binary() -> str:
    for candidate in (Path(sys.executable).parent / "perf_analyzer", shutil.which("perf_analyzer")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise SystemExit("perf_analyzer not found: install the bench extra (scripts/setup.sh does)")


@dataclass(frozen=True)
class Settings:
    concurrency: int
    rows: int
    interval_ms: int
    stability_percentage: int
    out_dir: Path


def measure(url: str, settings: Settings, label: str, *, batching: bool) -> Round:
    """`batching`: the model batches in Triton's sense (max_batch_size > 0), so its shape leaves out the
    batch dimension and perf_analyzer adds it (-b rows); else the full [rows, 77] shape is given."""
    out = settings.out_dir / f"{label}-c{settings.concurrency}-r{settings.rows}.csv"
    shape = (
        ["--shape", f"{INPUT}:{WIDTH}", "-b", str(settings.rows)]
        if batching
        else ["--shape", f"{INPUT}:{settings.rows},{WIDTH}"]
    )
    argv = [
        perf_analyzer_binary(),
        *("-m", MODEL, "-u", url, "-i", "grpc", *shape, "--input-data", "zero", "-f", str(out)),
        *("--concurrency-range", str(settings.concurrency), "--measurement-interval", str(settings.interval_ms)),
        # Three windows in a row within this spread count as stable; 10 % (the default) is rarely reached
        # on a small shared machine running Triton, the gateway and perf_analyzer at once.
        *("--stability-percentage", str(settings.stability_percentage), "--max-trials", "20"),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, env=perf_analyzer_env(), timeout=600, check=False)
    if result.returncode != 0:
        hint = " (install Debian's libb64-0d)" if "libb64" in result.stderr + result.stdout else ""
        tail = f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        raise SystemExit(f"perf_analyzer against {label} failed{hint}:\n{tail}")
    avg = re.search(r"Avg latency: (\d+) usec", result.stdout)
    with out.open() as file:
        row = next(csv.DictReader(file))
    return Round(
        # perf_analyzer counts each row of a batched request as an inference: report requests.
        requests_per_s=float(row["Inferences/Second"]) / (settings.rows if batching else 1),
        avg_us=float(avg.group(1)) if avg else float("nan"),
        p50_us=float(row["p50 latency"]),
        p90_us=float(row["p90 latency"]),
        p99_us=float(row["p99 latency"]),
    )


def start_gateway(world: Path, triton_url: str, config_dir: Path) -> tuple[subprocess.Popen[str], str]:
    """A gateway process whose feed_ranker goes to Triton (first_pass stays in process)."""
    # The world's own engines and routes (every product it serves), with feed_ranker moved to Triton.
    engines = Deployment(world).engines_config().model_dump(mode="json")
    engines["engines"]["triton"] = {"kind": "triton", "url": triton_url, "models": [MODEL]}
    engines["routes"][MODEL] = {"targets": [{"engine": "triton", "model": MODEL}]}
    settings = {
        "world_dir": str(world),
        "port": 0,
        "metrics_port": None,
        "log_level": "WARNING",
        "engines": engines,
    }
    config = config_dir / "gateway.yaml"
    config.write_text(yaml.safe_dump(settings))
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--config", str(config), "--workers", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO_ROOT,
    )
    assert process.stdout is not None
    output = []
    for line in process.stdout:
        output.append(line)
        found = re.search(r"listening on ([\d.]+:\d+)", line)
        if found:
            return process, found.group(1)
    raise SystemExit(f"gateway exited before listening (code {process.wait()}):\n{''.join(output)}")


def start_passthrough(triton_url: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "grpc_passthrough_proxy.py"), triton_url],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    found = re.search(r"listening on ([\d.]+:\d+)", process.stdout.readline())
    if not found:
        raise SystemExit(f"pass-through proxy exited before listening (code {process.wait()})")
    return process, found.group(1)


def median_round(rounds: list[Round]) -> Round:
    """The round with the median p50 (a real measurement, not a mix of several)."""
    return sorted(rounds, key=lambda r: r.p50_us)[len(rounds) // 2]


def show(label: str, r: Round) -> None:
    print(
        f"  {label:<22} p50 {r.p50_us / 1e3:6.3f} ms  p90 {r.p90_us / 1e3:6.3f} ms  p99 {r.p99_us / 1e3:6.3f} ms  "
        f"avg {r.avg_us / 1e3:6.3f} ms  {r.requests_per_s:7.1f} req/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=Path, default=Path("var/world"))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1])
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[1, 500], help="rows per request (500: a feed's 2nd pass)"
    )
    parser.add_argument("--measurement-interval-ms", type=int, default=2000)
    parser.add_argument("--stability-percentage", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=3, help="measurements per target and concurrency (median kept)")
    args = parser.parse_args()

    build_world(args.world, progress=True)
    with tempfile.TemporaryDirectory(prefix="oip-overhead-") as scratch, start_triton_peer(args.world) as peer:
        gateway, gateway_url = start_gateway(args.world.resolve(), peer.url_grpc, Path(scratch))
        proxy, proxy_url = start_passthrough(peer.url_grpc)
        try:
            print(f"\nperf_analyzer, model {MODEL}, FP32 [rows, {WIDTH}] zeros, {args.rounds} rounds each")
            print(f"  triton direct: {peer.url_grpc}    quasar ModelInfer -> triton: {gateway_url}")
            print(f"  bare grpc.aio pass-through proxy -> triton: {proxy_url}")
            missed = False
            for concurrency, rows in itertools.product(args.concurrency, args.rows):
                settings = Settings(
                    concurrency, rows, args.measurement_interval_ms, args.stability_percentage, Path(scratch)
                )
                rounds: dict[str, list[Round]] = {"triton": [], "passthrough": [], "quasar": []}
                for _ in range(args.rounds):  # alternate, so drift on the machine hits all alike
                    # Triton's model batches (so does the proxy, which forwards its config); Quasar's
                    # logical model declares the full [-1, 77] shape.
                    rounds["triton"].append(measure(peer.url_grpc, settings, "triton", batching=True))
                    rounds["passthrough"].append(measure(proxy_url, settings, "passthrough", batching=True))
                    rounds["quasar"].append(measure(gateway_url, settings, "quasar", batching=False))
                triton, passthrough, quasar = (median_round(rounds[name]) for name in rounds)
                print(f"\nconcurrency {concurrency}, {rows} rows per request")
                show("triton direct", triton)
                show("pass-through -> triton", passthrough)
                show("quasar -> triton", quasar)
                p50_ratio, avg_ratio = quasar.p50_us / triton.p50_us, quasar.avg_us / triton.avg_us
                added_ms = (quasar.p50_us - triton.p50_us) / 1e3
                verdict = "within" if p50_ratio <= GOAL else "OVER"
                missed |= p50_ratio > GOAL
                print(
                    f"  ratio quasar/triton: p50 {p50_ratio:.2f}x (+{added_ms:.3f} ms), avg {avg_ratio:.2f}x, "
                    f"p99 {quasar.p99_us / triton.p99_us:.2f}x  -> {verdict} the {GOAL:.2f}x goal"
                )
                print(
                    f"  one bare Python gRPC hop: pass-through/triton p50 {passthrough.p50_us / triton.p50_us:.2f}x "
                    f"(+{(passthrough.p50_us - triton.p50_us) / 1e3:.3f} ms); Quasar's own work: "
                    f"quasar/pass-through p50 {quasar.p50_us / passthrough.p50_us:.2f}x "
                    f"(+{(quasar.p50_us - passthrough.p50_us) / 1e3:.3f} ms)"
                )
                every = ", ".join(f"{name} {[round(r.p50_us / 1e3, 3) for r in rs]}" for name, rs in rounds.items())
                print(f"  p50 of every round (ms): {every}")
        finally:
            for process in (gateway, proxy):
                process.terminate()
                process.wait(timeout=30)
    if missed:
        print(f"\nthe {GOAL:.2f}x goal was missed for some concurrency and size", file=sys.stderr)


if __name__ == "__main__":
    main()
