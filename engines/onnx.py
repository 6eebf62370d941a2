"""ONNX Runtime in process: the embedded DNN backend. The only module that imports onnxruntime."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from engines._local import Loaded, ModelTable, RunOn, call_offloaded
from engines._offload import Offloader
from engines._signature import check_inputs, check_outputs
from engines.base import Engine, LoadsModels
from engines.errors import BadInput, EngineError
from engines.types import ModelMetadata, ModelRef, Tensors, TensorSpec

_PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")

# ONNX Runtime's type strings -> numpy dtype names (TensorSpec.dtype).
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
}


class OnnxEngine:
    """Serves ONNX models from local files with ONNX Runtime (CUDA first when available, else CPU).

    `models` maps model name -> .onnx path. Each model serves one version: the model's
    `metadata_props['version']` when set, else the first 12 hex digits of the file's sha256; a
    `ModelRef` naming another version gets `ModelNotFound`. Inputs are checked against the session's
    signature before any work is queued (`BadInput`), outputs after (`BadOutput`). Inference runs on
    the event loop, or in the shared `Offloader` when `run_on` is threads (auto: threads when the first
    provider is a GPU one, whose calls wait on the device); keep `intra_op_threads` at 1 and scale with
    processes (or offloader workers) instead, so the threads in use stay bounded.
    """

    def __init__(
        self,
        name: str,
        models: Mapping[str, Path],
        offloader: Offloader,
        *,
        intra_op_threads: int = 1,
        providers: Sequence[str] | None = None,
        run_on: RunOn = "auto",
    ) -> None:
        self.name = name
        self._paths = dict(models)
        self._offloader = offloader
        self._intra_op_threads = intra_op_threads
        self._providers = list(providers) if providers is not None else None
        self._run_on = run_on
        self._inline = run_on == "loop"  # auto is resolved by start(), from the providers
        self._models: ModelTable[Any] = ModelTable(name)  # runtime: ort.InferenceSession (untyped SDK)

    @property
    def providers(self) -> list[str]:
        """Execution providers sessions are created with, best first."""
        if self._providers is not None:
            return self._providers
        available = ort.get_available_providers()
        return [provider for provider in _PREFERRED_PROVIDERS if provider in available]

    async def start(self) -> None:
        """Load every session off the loop; raises `EngineUnavailable` naming the model that failed."""
        providers = self.providers
        if self._run_on == "auto":
            self._inline = not providers or providers[0] == "CPUExecutionProvider"
        await self._models.load(self._offloader, self._paths, lambda model, path: self._load(model, path, providers))

    async def load_model(self, name: str, path: Path) -> None:
        """Load `path` as model `name` while serving (see `engines.base.LoadsModels`)."""
        providers = self.providers
        await self._models.load_one(self._offloader, name, path, lambda model, p: self._load(model, p, providers))

    async def ready(self) -> bool:
        return self._models.ready

    async def metadata(self, model: ModelRef) -> ModelMetadata:
        return self._models.get(model).metadata

    async def infer(self, model: ModelRef, inputs: Tensors, *, timeout_s: float | None = None) -> dict[str, np.ndarray]:
        loaded = self._models.get(model)
        where = {"target": self.name, "model": str(model)}
        check_inputs(loaded.metadata, inputs, **where)
        output_names = [spec.name for spec in loaded.metadata.outputs]

        def translate(error: Exception) -> EngineError | None:
            # The signature check passed, so this is a constraint only ONNX Runtime knows (e.g. a symbolic
            # dimension shared by two inputs): still the caller's inputs.
            if isinstance(error, InvalidArgument):
                return BadInput(f"rejected by ONNX Runtime: {error}", **where)
            return None

        values = await call_offloaded(
            self._offloader,
            loaded.runtime.run,
            output_names,
            dict(inputs),
            timeout_s=timeout_s,
            translate=translate,
            inline=self._inline,
            **where,
        )
        return check_outputs(loaded.metadata, dict(zip(output_names, values, strict=True)), **where)

    async def close(self) -> None:
        """Drop the sessions; calls already running keep theirs until they return. The offloader is not ours."""
        self._models.close()

    def _load(self, model: str, path: Path, providers: list[str]) -> Loaded[Any]:
        """Runs in a worker thread. Reads once, so the version hash and the session see the same bytes."""
        data = Path(path).read_bytes()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session = ort.InferenceSession(data, sess_options=options, providers=providers)
        declared = session.get_modelmeta().custom_metadata_map.get("version")
        metadata = ModelMetadata(
            name=model,
            version=declared or hashlib.sha256(data).hexdigest()[:12],
            inputs=tuple(_spec(arg) for arg in session.get_inputs()),
            outputs=tuple(_spec(arg) for arg in session.get_outputs()),
        )
        return Loaded(runtime=session, metadata=metadata)


def _spec(arg: Any) -> TensorSpec:
    # Symbolic ('batch') and unknown (None) dimensions are variable: -1.
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in arg.shape)
    return TensorSpec(name=arg.name, dtype=_DTYPES.get(arg.type, arg.type), shape=shape)


if TYPE_CHECKING:  # mypy proves the protocol is met, so drift fails CI rather than a caller
    _conforms: type[Engine] = OnnxEngine
    _loads: type[LoadsModels] = OnnxEngine
