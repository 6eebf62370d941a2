"""A peer server run as its own process group, with its output in a log file and a bounded stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


class PeerStartError(RuntimeError):
    """A peer process exited or did not become ready in time; the message carries its log's tail."""


@dataclass
class PeerProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def spawn(cls, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> PeerProcess:
        """Start `argv` in a new session (its own process group), stdout and stderr to `log_path`."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        return cls(name, process, log_path)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_until(self, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll `ready()` every 50 ms (bounded by `timeout_s`); PeerStartError if the process dies first."""
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.alive():
                raise PeerStartError(
                    f"{self.name} exited with code {self.process.returncode} before {what}; log:\n{self.log_tail()}"
                )
            if ready():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise PeerStartError(f"{self.name}: no {what} within {timeout_s}s; log:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the peer, wait up to `grace_s`, then SIGKILL its whole process group (children too)."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace_s)
        self._kill_group()
        self.process.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL at once, children included: a crashed server, for failure tests."""
        self._kill_group()
        self.process.wait(timeout=10)

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone already
            os.killpg(self.process.pid, signal.SIGKILL)  # the group this process leads (start_new_session)
