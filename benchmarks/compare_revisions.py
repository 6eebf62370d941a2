"""In-process GetFeed latency of this checkout against another git revision, interleaved in one run.

Usage: python benchmarks/compare_revisions.py --base cda9df8 [--rounds 12] [--requests 100]

Timings on a shared 2-core machine drift by ±15 % over minutes, so two runs one after the other cannot
show a 10 % change. This puts the base revision in a git worktree (`var/compare/<rev>`), builds its demo
world with its own code, then starts two long-lived processes, one per revision, each serving
`FeedApp.get_feed` in process (no gRPC) from its own world. Rounds alternate between them (the order
flips every round), the same members in both, so both see the same machine. It prints each side's p50
and p90 over all rounds and the median of the per-round p50 ratios (head / base): below 1 is faster.

Only APIs both revisions share are used: `FeedApp`, `GatewaySettings`, `FeedRequest`, `build_world`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

# First in both child programs: the editable install of this checkout maps its packages by name, and a
# package that the other revision has only as a namespace (no __init__.py yet, e.g. `health` before it had
# one) would be taken from this checkout instead. Without that finder each tree imports only its own code.
OWN_CODE_ONLY = (
    "import sys; sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in getattr(f, '__module__', '')]\n"
)

# Runs inside each revision's tree (PYTHONPATH points there): one line in ("<count> <seed>"), one JSON out.
CHILD = (
    OWN_CODE_ONLY
    + r"""
import asyncio, json, sys, time
from pathlib import Path
import numpy as np
from gateway.app import FeedApp
from gateway.settings import GatewaySettings
from remix.request import FeedRequest

async def serve(world):
    app = FeedApp(GatewaySettings(world_dir=Path(world), metrics_port=None))
    await app.start()
    try:
        members_total = json.loads((Path(world) / "world.json").read_text()).get("members", 5000)
        for member in range(1, 101):  # warm-up
            await app.get_feed(FeedRequest(request_id="w", member_id=member, count=50), timeout_s=None)
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            count, seed = (int(x) for x in line.split())
            members = np.random.default_rng(seed).integers(1, members_total + 1, size=count).tolist()
            latencies = []
            for member in members:
                started = time.perf_counter()
                await app.get_feed(FeedRequest(request_id="c", member_id=member, count=50), timeout_s=None)
                latencies.append((time.perf_counter() - started) * 1e3)
            print(json.dumps(latencies), flush=True)
    finally:
        await app.close()

asyncio.run(serve(sys.argv[1]))
"""
)

BUILD = OWN_CODE_ONLY + (
    "from pathlib import Path; from quasar.demo.build import build_world; "
    "build_world(Path(sys.argv[1]), progress=False)"
)


def worktree(revision: str) -> Path:
    """A worktree of `revision` under var/compare (created once, reused)."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short=12", revision], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    path = ROOT / "var" / "compare" / sha
    if not (path / ".git").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "add", "--detach", "--force", str(path), sha], cwd=ROOT, check=True)
    return path


def start(tree: Path, label: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    world = tree / "var" / "world"
    print(f"{label}: building its world with its own code ({world})", flush=True)
    subprocess.run([sys.executable, "-c", BUILD, str(world)], cwd=tree, env=env, check=True)
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(world)],
        cwd=tree,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    if json.loads(process.stdout.readline() or "{}").get("ready") is not True:
        raise SystemExit(f"{label}: the serving process did not start")
    return process


def ask(process: subprocess.Popen[str], count: int, seed: int) -> list[float]:
    assert process.stdin is not None
    assert process.stdout is not None
    process.stdin.write(f"{count} {seed}\n")
    process.stdin.flush()
    return list(json.loads(process.stdout.readline()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the git revision to compare against")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--requests", type=int, default=100, help="requests per round and side")
    args = parser.parse_args()

    sides = {"base": start(worktree(args.base), f"base {args.base}"), "head": start(ROOT, "head (this checkout)")}
    samples: dict[str, list[float]] = {"base": [], "head": []}
    ratios = []
    try:
        for round_number in range(args.rounds):
            order = ("base", "head") if round_number % 2 == 0 else ("head", "base")
            p50 = {}
            for side in order:
                latencies = ask(sides[side], args.requests, seed=round_number)
                samples[side].extend(latencies)
                p50[side] = float(np.percentile(latencies, 50))
            ratios.append(p50["head"] / p50["base"])
            print(f"round {round_number + 1:>2}: base p50 {p50['base']:.2f} ms, head p50 {p50['head']:.2f} ms")
    finally:
        for process in sides.values():
            process.terminate()
    print()
    for side, values in samples.items():
        print(f"{side}: n={len(values)} p50={np.percentile(values, 50):.2f} ms p90={np.percentile(values, 90):.2f} ms")
    print(f"head / base p50, median of {len(ratios)} rounds: {np.median(ratios):.3f}x")


if __name__ == "__main__":
    main()
