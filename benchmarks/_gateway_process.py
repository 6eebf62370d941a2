"""A gateway process for benchmarks: `python -m gateway ARGS` on free ports, returned once it listens.

The benchmarks run as scripts (`python benchmarks/x.py`), so this module is imported as `_gateway_process`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# The kernel sends the child SIGTERM when its parent exits (prctl PR_SET_PDEATHSIG, kept across exec).
_TIED_TO_PARENT = ["setpriv", "--pdeathsig", "TERM", "--"] if shutil.which("setpriv") else []
_LISTENING = re.compile(r"listening on ([\d.]+):(\d+)")
_METRICS_PORT = re.compile(r'"metrics_port":\s*(\d+)')


@dataclass
class GatewayProcess:
    process: subprocess.Popen[str]
    target: str  # host:port of its gRPC port
    metrics_port: int | None  # from its JSON log line, when it serves metrics

    @property
    def port(self) -> int:
        return int(self.target.rsplit(":", 1)[1])

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM (it drains), then a kill if it has not exited in `timeout_s`."""
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_gateway(args: Sequence[str], *, env: Mapping[str, str] | None = None) -> GatewayProcess:
    """`python -m gateway --port 0 --metrics-port 0 ARGS`; exits the benchmark when the gateway does not start.

    The gateway gets SIGTERM when the benchmark dies, however it dies (util-linux's `setpriv --pdeathsig`,
    where there is one): a benchmark that crashed or was killed once left its gateway serving for half an
    hour, beside the next run's."""
    process = subprocess.Popen(
        [*_TIED_TO_PARENT, sys.executable, "-m", "gateway", "--port", "0", "--metrics-port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    metrics_port, output = None, []
    for line in process.stdout:
        output.append(line)
        if found := _METRICS_PORT.search(line):
            metrics_port = int(found.group(1))
        if found := _LISTENING.search(line):
            # Keep draining its output (one access-log line per request): a full pipe would block the gateway.
            threading.Thread(target=process.stdout.read, daemon=True).start()
            return GatewayProcess(process, f"{found.group(1)}:{found.group(2)}", metrics_port)
    raise SystemExit(f"gateway exited before listening (code {process.wait()}):\n{''.join(output[-20:])}")
