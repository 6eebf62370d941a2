"""A short headless Locust run against a real gateway process on the small world.

Locust (and its gevent monkey-patching) runs only in its own subprocess, never in the pytest process.
The run fails on any failed request (Locust's exit code is 1 then, and the stats CSV counts them) and on
zero requests; it prints the request count, throughput and latency percentiles from the stats CSV.
"""

from __future__ import annotations

import csv
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LOCUSTFILE = REPO / "loadtest" / "locustfile.py"
RUN_S = 8
USERS = 4


class GatewayProcess:
    """`python -m gateway` on port 0; its output is drained by a thread (a full pipe would block it)."""

    def __init__(self, world: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--world", str(world), "--port", "0", "--metrics-port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
        )
        self.lines: list[str] = []
        self.target: str | None = None
        self.listening = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            found = re.search(r"listening on ([\d.]+:\d+)", line)
            if found and self.target is None:
                self.target = found.group(1)
                self.listening.set()
        self.listening.set()  # exited: wake the waiter, which sees no target

    def wait_listening(self, timeout_s: float) -> str:
        self.listening.wait(timeout_s)
        if self.target is None:
            raise AssertionError(f"gateway did not start (code {self.process.poll()}):\n{self.output()}")
        return self.target

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._reader.join(timeout=5)
        return code

    def output(self) -> str:
        return "".join(self.lines[-40:])


@pytest.fixture
def gateway(small_world: Path) -> Iterator[GatewayProcess]:
    running = GatewayProcess(small_world)
    try:
        running.wait_listening(timeout_s=120)
        yield running
    finally:
        running.stop()


def read_stats(csv_prefix: Path) -> dict[str, dict[str, str]]:
    with (csv_prefix.parent / f"{csv_prefix.name}_stats.csv").open(newline="") as stats:
        return {row["Name"]: row for row in csv.DictReader(stats)}


def test_headless_locust_run_has_requests_and_no_failures(
    gateway: GatewayProcess, small_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gateway.target is not None
    csv_prefix = tmp_path / "smoke"
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--users",
        str(USERS),
        "--spawn-rate",
        str(USERS),
        "--run-time",
        f"{RUN_S}s",
        "--stop-timeout",
        "5",
        "--host",
        gateway.target,
        "--csv",
        str(csv_prefix),
        "--html",
        str(tmp_path / "smoke.html"),
        "--only-summary",
        "--world",
        str(small_world),
        # Deadlines generous enough for a 2-core machine shared with the gateway; failures must mean bugs.
        "--deadline-ms",
        "3000",
        "--debug-share",
        "0.1",
    ]
    locust = subprocess.run(command, capture_output=True, text=True, timeout=RUN_S + 60, cwd=tmp_path)
    log = f"locust exit {locust.returncode}\n{locust.stdout[-4000:]}\n{locust.stderr[-4000:]}"

    stats = read_stats(csv_prefix)
    total = stats["Aggregated"]
    requests = int(total["Request Count"])
    failures = int(total["Failure Count"])
    with capsys.disabled():
        print(
            f"\nlocust smoke ({USERS} users, {RUN_S} s, small world): {requests} requests, {failures} failures, "
            f"{float(total['Requests/s']):.1f} req/s, p50 {total['50%']} ms, p99 {total['99%']} ms, "
            f"max {float(total['Max Response Time']):.0f} ms"
        )
    assert requests > 0, f"no requests were made\n{log}"
    assert failures == 0, f"{failures} failed requests\n{(csv_prefix.parent / 'smoke_failures.csv').read_text()}\n{log}"
    assert locust.returncode == 0, log  # Locust exits 1 when any request failed
    assert (tmp_path / "smoke.html").stat().st_size > 0
    # The mix reached the gateway: several page sizes, and debug calls (with a trace, or they would fail).
    names = set(stats) - {"Aggregated"}
    assert {name for name in names if name.startswith("GetFeed count=")}, names
    assert "quasar traffic: 800 members" in locust.stdout + locust.stderr, "members come from the world"
    # The gateway drains and exits cleanly on SIGTERM after the load.
    assert gateway.stop() == 0, gateway.output()
