"""Start the TF Serving conformance peer (`tests/peers/tfserving_conformance_peer.py`) as a process.

    from tests.peers.tfserving_peer import export_ranker_versions, start_tfserving_peer

    base = export_ranker_versions(world_dir, out_dir)          # SavedModel versions 1 and 2
    with start_tfserving_peer({"feed_ranker": base}, labels={"feed_ranker": {"stable": 1}}) as peer:
        peer.url                                               # '127.0.0.1:PORT'

The peer speaks TF Serving's gRPC API and runs the SavedModel with TensorFlow; it is a test server, not
TF Serving. It binds port 0 (or `port`) and reports the port it got.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.peers._process import REPO_ROOT, PeerProcess

MODEL = "feed_ranker"
VERSIONS = (1, 2)


def export_ranker_versions(world_dir: Path, out_dir: Path, versions: tuple[int, ...] = VERSIONS) -> Path:
    """The world's ranker as SavedModel versions under `out_dir` (TF Serving's layout); returns `out_dir`.

    Every version holds the same weights: versions differ in number only, which is what label and
    version resolution need."""
    from quasar.demo.tf_export import export_saved_model

    for version in versions:
        export_saved_model(Path(world_dir) / "models" / "ranker_weights.npz", out_dir, version)
    return out_dir


@dataclass
class TFServingPeer:
    process: PeerProcess
    port: int
    hold_dir: Path

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    @contextmanager
    def hold(self, model: str = MODEL) -> Iterator[None]:
        """Calls to `model` wait inside the peer until the block exits."""
        flag = self.hold_dir / model
        flag.touch()
        try:
            yield
        finally:
            flag.unlink(missing_ok=True)

    def kill(self) -> None:
        """Crash the peer (SIGKILL): the target is down from here on."""
        self.process.kill()


@contextmanager
def start_tfserving_peer(
    models: Mapping[str, Path],
    *,
    labels: Mapping[str, Mapping[str, int]] | None = None,
    behaviours: Mapping[str, str] | None = None,
    reply_fields: bool = False,
    port: int = 0,
    startup_timeout_s: float = 60.0,
    tls: tuple[Path, Path, Path | None] | None = None,
) -> Iterator[TFServingPeer]:
    """A serving peer: `models` maps served name -> base path; `labels` name -> {label: version};
    `behaviours` name -> 'slow:S' | 'malformed:KIND' (see the peer's docstring); `tls`: (certificate,
    key, client CA or None) PEM files to serve TLS (mutual with a client CA). Stopped on exit."""
    scratch = Path(tempfile.mkdtemp(prefix="tfs-peer-"))
    hold_dir = scratch / "hold"
    hold_dir.mkdir()
    argv = [
        sys.executable,
        str(REPO_ROOT / "tests" / "peers" / "tfserving_conformance_peer.py"),
        f"--port={port}",
        f"--hold-dir={hold_dir}",
    ]
    argv += [f"--model={name}={base}" for name, base in models.items()]
    argv += [f"--label={name}:{label}={v}" for name, pairs in (labels or {}).items() for label, v in pairs.items()]
    argv += [f"--behaviour={name}={kind}" for name, kind in (behaviours or {}).items()]
    if reply_fields:
        argv.append("--reply-fields")
    if tls is not None:
        cert, key, client_ca = tls
        argv += [f"--tls-cert={cert}", f"--tls-key={key}"] + ([f"--tls-client-ca={client_ca}"] if client_ca else [])
    process = PeerProcess.spawn("tfserving conformance peer", argv, scratch / "peer.log")
    found: list[int] = []

    def listening() -> bool:
        match = re.search(r"^LISTENING (\d+)$", process.log_path.read_text(errors="replace"), re.MULTILINE)
        if match:
            found.append(int(match.group(1)))
        return bool(match)

    try:
        process.wait_until(listening, startup_timeout_s, "LISTENING line")
        yield TFServingPeer(process=process, port=found[0], hold_dir=hold_dir)
    finally:
        process.stop()
        shutil.rmtree(scratch, ignore_errors=True)
