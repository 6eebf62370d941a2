"""TF Serving conformance peer: a test server that speaks TensorFlow Serving's gRPC API and runs real
SavedModels with TensorFlow. It is NOT TensorFlow Serving (no `tensorflow_model_server` binary can be
installed here); it implements the parts of the API Quasar uses, with TF Serving's messages and codes:

  PredictionService.Predict            inputs as `tensor_content` or per-element `*_val` fields; answers
                                       with `tensor_content` (or `*_val` fields with --reply-fields)
  ModelService.GetModelStatus          every loaded version, AVAILABLE
  PredictionService.GetModelMetadata   `signature_def`: the SignatureDefMap of the SavedModel's MetaGraph

Models are directories in TF Serving's versioned layout (`<base>/<version>/saved_model.pb`); every
numeric version directory is loaded (TF Serving's `all` version policy). A request names a version, a
version label (`--label`), or nothing (the highest version). Errors follow TF Serving: unknown model or
version -> NOT_FOUND, unknown version label -> INVALID_ARGUMENT "Unrecognized servable version label",
bad inputs -> INVALID_ARGUMENT, unknown signature -> FAILED_PRECONDITION.

Test behaviours, per served model name (`--behaviour NAME=KIND[:ARG]`), so one process serves the good
model and its faulty twins:
  slow:SECONDS       answer after sleeping
  malformed:shape    drop the last column of every output
  malformed:dtype    answer float64 where the signature says float32
  malformed:size     tensor_content shorter than tensor_shape says
  malformed:missing  answer under another output name
  malformed:nan      fill outputs with NaN
  reply:fields       answer with per-element `*_val` fields instead of `tensor_content`
A call also waits while the file `<hold-dir>/<model name>` exists (timeout tests hold and release it).

Prints `LISTENING <port>` once serving; stops on SIGTERM/SIGINT, or when its parent process dies.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_VALUE_FIELDS = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_BOOL: "bool_val",
}


class PeerError(Exception):
    """An error answered to the client with this gRPC code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Version:
    number: int
    path: Path
    loaded: Any  # the restored object; kept alive for its variables
    signatures: Any  # signature name -> concrete function
    signature_defs: Any  # SignatureDefMap proto, as stored in saved_model.pb


@dataclass
class Model:
    name: str
    versions: dict[int, Version]
    labels: dict[str, int] = field(default_factory=dict)
    behaviour: str = ""

    def resolve(self, spec: Any) -> Version:
        """The version a ModelSpec asks for, with TF Serving's codes and messages when there is none."""
        if spec.HasField("version"):
            version = self.versions.get(spec.version.value)
            if version is None:
                raise PeerError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Servable not found for request: Specific({self.name}, {spec.version.value})",
                )
            return version
        if spec.version_label:
            number = self.labels.get(spec.version_label)
            if number is None or number not in self.versions:
                raise PeerError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {spec.version_label}"
                )
            return self.versions[number]
        return self.versions[max(self.versions)]


def load_model(name: str, base: Path) -> Model:
    versions = {}
    for path in sorted(base.iterdir()):
        if not path.name.isdigit() or not (path / "saved_model.pb").is_file():
            continue
        stored = saved_model_pb2.SavedModel()
        stored.ParseFromString((path / "saved_model.pb").read_bytes())
        graph = next(g for g in stored.meta_graphs if "serve" in g.meta_info_def.tags)
        defs = get_model_metadata_pb2.SignatureDefMap()
        for key, signature in graph.signature_def.items():
            defs.signature_def[key].CopyFrom(signature)
        loaded = tf.saved_model.load(str(path))
        versions[int(path.name)] = Version(int(path.name), path, loaded, loaded.signatures, defs)
    if not versions:
        raise SystemExit(f"no version directory with saved_model.pb under {base}")
    return Model(name=name, versions=versions)


class Peer:
    def __init__(self, models: dict[str, Model], *, hold_dir: Path | None, reply_fields: bool) -> None:
        self.models = models
        self.hold_dir = hold_dir
        self.reply_fields = reply_fields

    def model(self, spec: Any) -> Model:
        model = self.models.get(spec.name)
        if model is None:
            raise PeerError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({spec.name})")
        return model

    async def predict(self, request: Any) -> Any:
        model = self.model(request.model_spec)
        version = model.resolve(request.model_spec)
        signature_name = request.model_spec.signature_name or "serving_default"
        if signature_name not in version.signatures:
            raise PeerError(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{signature_name}" not found.')
        signature_def = version.signature_defs.signature_def[signature_name]
        inputs = decode_inputs(request.inputs, signature_def)
        wanted = list(request.output_filter) or list(signature_def.outputs)
        unknown = [name for name in wanted if name not in signature_def.outputs]
        if unknown:
            raise PeerError(
                grpc.StatusCode.INVALID_ARGUMENT, f"output tensor alias not found in signature: {unknown[0]}"
            )
        await self.wait_while_held(model.name)
        kind, _, arg = model.behaviour.partition(":")
        if kind == "slow":
            await asyncio.sleep(float(arg))
        function = version.signatures[signature_name]
        try:
            results = await asyncio.to_thread(lambda: {k: v.numpy() for k, v in function(**inputs).items()})
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
            raise PeerError(grpc.StatusCode.INVALID_ARGUMENT, str(error).splitlines()[0]) from error
        reply = predict_pb2.PredictResponse()
        reply.model_spec.name = model.name
        reply.model_spec.version.value = version.number
        reply.model_spec.signature_name = signature_name
        for name in wanted:
            value = results[name]
            out_name = name
            if kind == "malformed":
                value, out_name = malform(arg, value, name)
            reply.outputs[out_name].CopyFrom(self.encode(value, fields=self.reply_fields or kind == "reply"))
            if kind == "malformed" and arg == "size":
                content = reply.outputs[out_name].tensor_content
                reply.outputs[out_name].tensor_content = content[: len(content) // 2]
        return reply

    async def wait_while_held(self, name: str) -> None:
        if self.hold_dir is None:
            return
        # The flag is a file another process sets: there is no event to wait on.
        while (self.hold_dir / name).exists():  # noqa: ASYNC110
            await asyncio.sleep(0.005)

    def encode(self, value: np.ndarray, *, fields: bool) -> Any:
        if not fields:
            return tf.make_tensor_proto(value)  # numeric tensors: dtype, shape, tensor_content
        proto = tensor_pb2.TensorProto(dtype=tf.as_dtype(value.dtype).as_datatype_enum)
        proto.tensor_shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(dim=[{"size": n} for n in value.shape]))
        getattr(proto, _VALUE_FIELDS[proto.dtype]).extend(value.ravel().tolist())
        return proto

    def metadata(self, request: Any) -> Any:
        model = self.model(request.model_spec)
        version = model.resolve(request.model_spec)
        fields = list(request.metadata_field)
        if fields != ["signature_def"]:
            raise PeerError(grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field(s) {fields} not supported")
        reply = get_model_metadata_pb2.GetModelMetadataResponse()
        reply.model_spec.name = model.name
        reply.model_spec.version.value = version.number
        reply.metadata["signature_def"].Pack(version.signature_defs)
        return reply

    def status(self, request: Any) -> Any:
        model = self.models.get(request.model_spec.name)
        if model is None:
            raise PeerError(
                grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {request.model_spec.name}"
            )
        if request.model_spec.HasField("version") or request.model_spec.version_label:
            numbers = [model.resolve(request.model_spec).number]
        else:
            numbers = sorted(model.versions)
        reply = get_model_status_pb2.GetModelStatusResponse()
        for number in numbers:
            status = reply.model_version_status.add()
            status.version = number
            status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return reply


def decode_inputs(protos: Any, signature_def: Any) -> dict[str, Any]:
    """Request tensors as TensorFlow tensors, checked against the signature like TF Serving does."""
    sent, expected = set(protos), set(signature_def.inputs)
    if sent != expected:
        raise PeerError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input size does not match signature: {len(sent)}!={len(expected)} len({sorted(sent)}) != "
            f"len({sorted(expected)}). Sent extra: {sorted(sent - expected)}. "
            f"Missing but required: {sorted(expected - sent)}.",
        )
    tensors = {}
    for name, info in signature_def.inputs.items():
        proto = protos[name]
        if proto.dtype != info.dtype:
            raise PeerError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Expects arg[0] to be {tf.as_dtype(info.dtype).name} but {tf.as_dtype(proto.dtype).name} is provided",
            )
        shape = [dim.size for dim in proto.tensor_shape.dim]
        if proto.tensor_content:
            needed = math.prod(shape) * tf.as_dtype(proto.dtype).size
            if len(proto.tensor_content) != needed:
                raise PeerError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Could not parse input {name}: tensor_content holds {len(proto.tensor_content)} bytes, "
                    f"shape {shape} needs {needed}",
                )
        try:
            value = tf.make_ndarray(proto)  # tensor_content or the *_val fields, like TensorFlow's FromProto
        except (ValueError, TypeError) as error:
            raise PeerError(grpc.StatusCode.INVALID_ARGUMENT, f"Could not parse input {name}: {error}") from error
        declared = tf.TensorShape(info.tensor_shape)
        if not declared.is_compatible_with(value.shape):
            raise PeerError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input {name} has shape {list(value.shape)}, which is incompatible with {declared}",
            )
        tensors[name] = tf.constant(value)
    return tensors


def malform(kind: str, value: np.ndarray, name: str) -> tuple[np.ndarray, str]:
    if kind == "shape":
        return np.ascontiguousarray(value[..., :-1]), name
    if kind == "dtype":
        return value.astype(np.float64), name
    if kind == "missing":
        return value, name + "_renamed"
    if kind == "nan":
        return np.full_like(value, np.nan), name
    if kind == "size":
        return value, name
    raise SystemExit(f"unknown malformation {kind!r}")


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    def __init__(self, peer: Peer) -> None:
        self.peer = peer

    async def Predict(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await answer(context, self.peer.predict(request))

    async def GetModelMetadata(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await answer(context, _ready(self.peer.metadata, request))


class ModelService(model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
    def __init__(self, peer: Peer) -> None:
        self.peer = peer

    async def GetModelStatus(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await answer(context, _ready(self.peer.status, request))


async def _ready(fn: Any, request: Any) -> Any:
    return fn(request)


async def answer(context: grpc.aio.ServicerContext[Any, Any], work: Any) -> Any:
    try:
        return await work
    except PeerError as error:
        await context.abort(error.code, str(error))


def parse_pairs(values: Sequence[str], what: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key or not rest:
            raise SystemExit(f"--{what} wants NAME=VALUE, got {value!r}")
        pairs.append((key, rest))
    return pairs


async def serve(args: argparse.Namespace) -> None:
    models = {name: load_model(name, Path(base)) for name, base in parse_pairs(args.model, "model")}
    for key, number in parse_pairs(args.label, "label"):
        name, _, label = key.partition(":")
        models[name].labels[label] = int(number)
    for name, behaviour in parse_pairs(args.behaviour, "behaviour"):
        models[name].behaviour = behaviour
    peer = Peer(models, hold_dir=args.hold_dir, reply_fields=args.reply_fields)
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(peer), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(peer), server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}") if args.tls_cert is None else _add_tls_port(server, args)
    if port == 0:
        raise SystemExit(f"cannot bind 127.0.0.1:{args.port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"LISTENING {port}", flush=True)
    watchdog = asyncio.create_task(_stop_when_orphaned(stop))
    await stop.wait()
    watchdog.cancel()
    await server.stop(grace=1.0)


def _add_tls_port(server: grpc.aio.Server, args: argparse.Namespace) -> int:
    """TLS on the port (TF Serving's --ssl_config_file equivalent); mutual when a client CA is given."""
    ca = args.tls_client_ca.read_bytes() if args.tls_client_ca else None
    credentials = grpc.ssl_server_credentials(
        [(args.tls_key.read_bytes(), args.tls_cert.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )
    return server.add_secure_port(f"127.0.0.1:{args.port}", credentials)


async def _stop_when_orphaned(stop: asyncio.Event) -> None:
    """Stop if the process that started us dies without stopping us (e.g. a test run killed hard)."""
    parent = os.getppid()
    while os.getppid() == parent:  # noqa: ASYNC110 - no event tells us our parent died
        await asyncio.sleep(1.0)
    stop.set()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="TF Serving conformance peer (a test server, not TF Serving)")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free one; the port is printed")
    parser.add_argument("--model", action="append", default=[], help="NAME=BASE_PATH (repeatable)")
    parser.add_argument("--label", action="append", default=[], help="NAME:LABEL=VERSION (repeatable)")
    parser.add_argument("--behaviour", action="append", default=[], help="NAME=slow:S | malformed:KIND")
    parser.add_argument("--hold-dir", type=Path, default=None)
    parser.add_argument("--reply-fields", action="store_true", help="answer with *_val fields, not tensor_content")
    parser.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate: serve TLS instead of plaintext")
    parser.add_argument("--tls-key", type=Path, default=None, help="PEM key of --tls-cert")
    parser.add_argument("--tls-client-ca", type=Path, default=None, help="PEM CA: require client certificates")
    args = parser.parse_args(argv)
    if not args.model:
        parser.error("at least one --model NAME=BASE_PATH")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
