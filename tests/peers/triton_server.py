"""Start a real Triton Inference Server (PyTriton, `tests/peers/pytriton_app.py`) on free ports.

    from tests.peers.triton_server import start_triton_peer

    with start_triton_peer(world_dir) as peer:          # ready when this returns; stopped on exit
        peer.url_grpc                                   # '127.0.0.1:PORT' for tritonclient / perf_analyzer
        peer.model, peer.slow_model, peer.malformed_model

The server runs from the Triton venv (`$TRITON_VENV`, default `<repo>/.venv-triton`, made by
scripts/setup.sh from Debian's /usr/bin/python3.11) as its own process group, and serves the world's
`models/ranker.onnx` under the name `feed_ranker`. With `access_token`, PyTriton's protected endpoints
(statistics, model-repository, ...) need `peer.grpc_headers`; without one nothing is restricted.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from quasar.demo.layout import RANKER_INPUT, RANKER_OUTPUT
from tests.peers._process import REPO_ROOT, PeerProcess, PeerStartError

ACCESS_TOKEN_HEADER = "triton-grpc-protocol-triton-access-token"
MODEL = "feed_ranker"


def triton_python() -> Path:
    """The Triton venv's interpreter; PeerStartError naming the setup step when it is missing."""
    venv = Path(os.environ.get("TRITON_VENV", REPO_ROOT / ".venv-triton"))
    python = venv / "bin" / "python"
    if not python.exists():
        raise PeerStartError(f"{python} not found: run scripts/setup.sh (it creates the Triton venv {venv})")
    return python


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free right now (bound together, then released)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(closing(socket.socket())) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


@dataclass
class TritonPeer:
    process: PeerProcess
    grpc_port: int
    http_port: int
    metrics_port: int
    hold_dir: Path
    access_token: str | None = None
    model: str = MODEL
    models: tuple[str, ...] = field(default_factory=tuple)

    @property
    def url_grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def url_http(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def slow_model(self) -> str:
        return f"{self.model}_slow"

    @property
    def malformed_model(self) -> str:
        return f"{self.model}_malformed"

    @property
    def grpc_headers(self) -> dict[str, str]:
        """Headers that open the restricted gRPC endpoints (empty when nothing is restricted)."""
        return {ACCESS_TOKEN_HEADER: self.access_token} if self.access_token else {}

    @contextmanager
    def hold(self, model: str = MODEL) -> Iterator[None]:
        """Calls to `model` wait inside the server until the block exits."""
        flag = self.hold_dir / model
        (self.hold_dir / f"{model}.entered").unlink(missing_ok=True)
        flag.touch()
        try:
            yield
        finally:
            flag.unlink(missing_ok=True)

    def held_execution_started(self, model: str = MODEL) -> bool:
        """True once an execution of `model` is waiting inside the server under `hold()`."""
        return (self.hold_dir / f"{model}.entered").exists()


@dataclass(frozen=True)
class TritonTls:
    """The server's certificate and key, the CA clients trust (`ca`), the CA whose client certificates it
    requires (`client_ca`, None: server TLS only), and the certificate the launcher's probe presents."""

    cert: Path
    key: Path
    ca: Path
    client_ca: Path | None = None
    probe_cert: Path | None = None
    probe_key: Path | None = None


@contextmanager
def start_triton_peer(
    world_dir: Path,
    *,
    access_token: str | None = None,
    slow_delay_s: float = 0.5,
    max_batch_size: int = 1024,
    max_queue_delay_us: int = 200,
    startup_timeout_s: float = 120.0,
    log_dir: Path | None = None,
    tls: TritonTls | None = None,
) -> Iterator[TritonPeer]:
    """A ready Triton server with `feed_ranker`, `feed_ranker_slow` and `feed_ranker_malformed`; stopped
    (SIGTERM, then SIGKILL of its process group) when the block exits, even on error. With `tls`, its gRPC
    endpoint is TLS only (mutual when `tls.client_ca` is set)."""
    import tritonclient.grpc as triton_grpc  # the launcher's own readiness probe; the engine uses grpc.aio

    python = triton_python()
    onnx_path = Path(world_dir) / "models" / "ranker.onnx"
    if not onnx_path.is_file():
        raise PeerStartError(f"{onnx_path} not found: the world must be built first")
    scratch = Path(tempfile.mkdtemp(prefix="triton-peer-"))
    hold_dir = scratch / "hold"
    hold_dir.mkdir()
    grpc_port, http_port, metrics_port = free_ports(3)
    argv = [
        str(python),
        str(REPO_ROOT / "tests" / "peers" / "pytriton_app.py"),
        f"--onnx={onnx_path}",
        f"--model-name={MODEL}",
        f"--input-name={RANKER_INPUT}",
        f"--output-name={RANKER_OUTPUT}",
        f"--grpc-port={grpc_port}",
        f"--http-port={http_port}",
        f"--metrics-port={metrics_port}",
        f"--max-batch-size={max_batch_size}",
        f"--max-queue-delay-us={max_queue_delay_us}",
        f"--slow-delay-s={slow_delay_s}",
        f"--hold-dir={hold_dir}",
        f"--workspace={scratch / 'workspace'}",
    ]
    if access_token:
        argv.append(f"--access-token={access_token}")
    if tls is not None:
        argv += [f"--tls-cert={tls.cert}", f"--tls-key={tls.key}"]
        if tls.client_ca is not None:
            argv.append(f"--tls-client-ca={tls.client_ca}")
    log_path = (log_dir or scratch) / f"triton-{grpc_port}.log"
    process = PeerProcess.spawn("triton peer", argv, log_path)
    peer = TritonPeer(
        process=process,
        grpc_port=grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        hold_dir=hold_dir,
        access_token=access_token,
        models=(MODEL, f"{MODEL}_slow", f"{MODEL}_malformed"),
    )
    client = (
        triton_grpc.InferenceServerClient(peer.url_grpc)
        if tls is None
        else triton_grpc.InferenceServerClient(
            peer.url_grpc,
            ssl=True,
            root_certificates=str(tls.ca),
            private_key=None if tls.probe_key is None else str(tls.probe_key),
            certificate_chain=None if tls.probe_cert is None else str(tls.probe_cert),
        )
    )

    def ready() -> bool:
        try:
            return all(client.is_model_ready(model, client_timeout=1.0) for model in peer.models)
        except Exception:  # not listening yet
            return False

    try:
        process.wait_until(ready, startup_timeout_s, "ready models")
        yield peer
    finally:
        client.close()
        process.stop()
        shutil.rmtree(scratch, ignore_errors=True)
        # PyTriton names its shared-memory regions after the server process; a killed server leaves them.
        for region in Path("/dev/shm").glob(f"pytrtion{process.pid}-*"):
            region.unlink(missing_ok=True)


def new_access_token() -> str:
    return secrets.token_urlsafe(16)
