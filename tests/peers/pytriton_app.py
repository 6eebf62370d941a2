"""A real Triton Inference Server (from the `nvidia-pytriton` wheel) serving the demo second-pass DNN.

Runs in the Triton venv (`.venv-triton`, made from Debian's /usr/bin/python3.11 by scripts/setup.sh),
never in Quasar's: PyTriton's Python-backend stub needs a Python whose standard library matches it. It
imports nothing of Quasar. Start it through `tests.peers.triton_server.start_triton_peer`, which picks
the ports, waits for readiness and stops it.

Models (all FP32, batch dimension first, dynamic batching):
  `<name>`            input `<input>` [-1, D] -> output `<output>` [-1, K], ONNX Runtime on the .onnx file
  `<name>_slow`       the same, after sleeping `--slow-delay-s` per batch (timeout tests)
  `<name>_malformed`  declares [-1, K] but answers [-1, K - 1] (malformed-output tests; strict=False so
                      PyTriton lets it through, as a buggy model would)

A call to `<name>` also waits while the file `<hold-dir>/<name>` exists (timeout tests hold and release it).

It stops on SIGTERM or SIGINT, and by itself when the process that started it dies.

Restricted endpoints: with `--access-token`, PyTriton's default protected endpoints (model-repository,
statistics, trace, logging, shared-memory) need the header `triton-grpc-protocol-triton-access-token`
(gRPC) or `triton-access-token` (HTTP); without it nothing is restricted (so perf_analyzer can read
server statistics). Inference, metadata and health are never restricted.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig


def _session(path: Path) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _interrupt_when_orphaned() -> None:
    """SIGINT ourselves (a clean stop) if the process that started us dies without stopping us."""
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(1.0)
    # To the main thread, so its wait is interrupted as by Ctrl-C (a signal raised in this thread would
    # surface at an arbitrary point of the main thread's wait and can leave PyTriton's lock held).
    main = threading.main_thread().ident
    assert main is not None
    signal.pthread_kill(main, signal.SIGINT)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, required=True, help="the ranker's .onnx file")
    parser.add_argument("--model-name", default="feed_ranker")
    parser.add_argument("--input-name", default="features")
    parser.add_argument("--output-name", default="scores")
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=1024)
    parser.add_argument("--max-queue-delay-us", type=int, default=200)
    parser.add_argument("--slow-delay-s", type=float, default=1.0)
    parser.add_argument("--access-token", default=None)
    parser.add_argument("--tls-cert", type=Path, default=None, help="serve gRPC over TLS with this certificate")
    parser.add_argument("--tls-key", type=Path, default=None)
    parser.add_argument("--tls-client-ca", type=Path, default=None, help="require client certificates it signed")
    parser.add_argument("--workspace", type=Path, default=None)
    parser.add_argument("--hold-dir", type=Path, default=None, help="`<name>` waits while <hold-dir>/<name> exists")
    args = parser.parse_args(argv)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` writes every thread's stack to the log
    # A shell's background job starts with SIGINT ignored, and so would every stop below: Ctrl-C semantics
    # (KeyboardInterrupt, which PyTriton's `serve` turns into a clean stop) are restored explicitly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    logging.basicConfig(level=logging.WARNING, format="pytriton_app %(levelname)s %(name)s: %(message)s")

    session = _session(args.onnx)
    width = int(session.get_inputs()[0].shape[1])
    objectives = int(session.get_outputs()[0].shape[1])
    input_name, output_name = args.input_name, args.output_name
    onnx_input, onnx_output = session.get_inputs()[0].name, session.get_outputs()[0].name

    def score(features: np.ndarray) -> np.ndarray:
        (scores,) = session.run([onnx_output], {onnx_input: np.ascontiguousarray(features, dtype=np.float32)})
        return np.asarray(scores, dtype=np.float32)

    hold_dir: Path | None = args.hold_dir

    def wait_while_held(model: str) -> None:
        if hold_dir is None or not (hold_dir / model).exists():
            return
        (hold_dir / f"{model}.entered").touch()  # tells the test an execution is now held
        while (hold_dir / model).exists():
            time.sleep(0.005)

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        wait_while_held(args.model_name)
        return {output_name: score(inputs[input_name])}

    @batch
    def infer_slow(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        time.sleep(args.slow_delay_s)
        return {output_name: score(inputs[input_name])}

    @batch
    def infer_malformed(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return {output_name: np.ascontiguousarray(score(inputs[input_name])[:, :-1])}

    tls = {}
    if args.tls_cert is not None:
        tls = {"grpc_use_ssl": True, "grpc_server_cert": str(args.tls_cert), "grpc_server_key": str(args.tls_key)}
        if args.tls_client_ca is not None:
            tls.update(grpc_use_ssl_mutual=True, grpc_root_cert=str(args.tls_client_ca))
    config = TritonConfig(
        **tls,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        http_address="127.0.0.1",
        grpc_address="127.0.0.1",
        metrics_address="127.0.0.1",
        exit_timeout_secs=5,
        log_verbose=0,
    )
    security = (
        TritonSecurityConfig(access_token=args.access_token)
        if args.access_token
        else TritonSecurityConfig(restricted_endpoints=[])
    )
    model_config = ModelConfig(
        max_batch_size=args.max_batch_size,
        batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us),
    )
    inputs = [Tensor(name=input_name, dtype=np.float32, shape=(width,))]
    outputs = [Tensor(name=output_name, dtype=np.float32, shape=(objectives,))]
    with Triton(config=config, workspace=args.workspace, security_config=security) as triton:
        for suffix, fn, strict in (
            ("", infer, True),
            ("_slow", infer_slow, True),
            ("_malformed", infer_malformed, False),
        ):
            triton.bind(
                model_name=args.model_name + suffix,
                infer_func=fn,
                inputs=inputs,
                outputs=outputs,
                config=model_config,
                strict=strict,
            )
        # SIGTERM (the launcher's stop) leaves `serve` like Ctrl-C does, so the context exit stops Triton
        # and its stubs cleanly instead of orphaning them.
        signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
        threading.Thread(target=_interrupt_when_orphaned, daemon=True).start()
        print(f"pytriton_app serving grpc={args.grpc_port} http={args.http_port}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            triton.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
