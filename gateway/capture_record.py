"""The capture record: one JSON object per served request, written by `gateway.capture`, read by replay.

Format 1 (one object per line of a `.jsonl` file):

    {"format": 1,
     "time_s": <epoch seconds the request was captured>,
     "request": {"request_id", "member_id", "count", "workflow", "context": {str: str}},
     "workflow_version": str,
     "serving": {"release", "arm", "table_pins": {table: version}, "model_routes": {model: route}},
     "table_versions": {table: version},
     "degraded": bool,
     "sources": {source: [candidate id, ...]},
     "calls": [{"model", "route", "target", "version", "rows": TENSOR | null,
                "inputs": {name: TENSOR}, "outputs": {name: TENSOR}}, ...],
     "utility_weights": {head: weight},
     "feed": {"item_id": [int, ...], "utility": [float, ...] | null}}

TENSOR is {"dtype": numpy dtype name, "shape": [int, ...], "data": base64 of the raw little-endian,
C-order bytes}: a replay feeds a model bit-identical inputs. `calls` are in call order (the second pass
last); `rows` holds the candidate ids of a call's input rows. `sources` names, per first-pass source, the
candidates it produced: from the merged candidates' provenance (every producer of every merged item),
or, without a merge, from each source's own slot.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from remix.context import Context, ModelUse
from remix.steps.candidates import Candidates
from remix.steps.keys import MERGED, UTILITY_WEIGHTS, source_key

FORMAT = 1
CAPTURE_GLOB = "capture-*.jsonl"


class CaptureFormatError(ValueError):
    """A capture line that is not a record of a format this code reads; the message names file and line."""


@dataclass(frozen=True)
class CapturedCall:
    """One model call as captured: `target` is 'engine/model[/version]' of what answered it."""

    model: str
    route: str
    target: str
    version: str
    rows: np.ndarray | None
    inputs: Mapping[str, np.ndarray]
    outputs: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class CapturedFeed:
    item_id: np.ndarray
    utility: np.ndarray | None


@dataclass(frozen=True)
class Captured:
    """A captured request, read back. `where` is 'file:line' (for messages)."""

    request_id: str
    member_id: int
    count: int
    workflow: str
    context: Mapping[str, str]
    workflow_version: str
    time_s: float
    release: str
    arm: str
    table_pins: Mapping[str, str]
    model_routes: Mapping[str, str]
    table_versions: Mapping[str, str]
    degraded: bool
    sources: Mapping[str, np.ndarray]
    calls: tuple[CapturedCall, ...]
    utility_weights: Mapping[str, float]
    feed: CapturedFeed
    where: str = ""


# -- writing ------------------------------------------------------------------------------------------------


def capture_record(ctx: Context, feed: Candidates, workflow_version: str, *, time_s: float) -> dict[str, Any]:
    """The record of a finished request (format 1, see the module doc), as plain JSON values.

    Pure: reads `ctx` and `feed`, changes nothing, so it may run on another thread once the request is
    done (nothing writes a finished request's context). `time_s`: when it was captured, epoch seconds.
    """
    request = ctx.request
    serving = ctx.serving
    weights = ctx.get_or(UTILITY_WEIGHTS, {})
    return {
        "format": FORMAT,
        "time_s": time_s,
        "request": {
            "request_id": request.request_id,
            "member_id": request.member_id,
            "count": request.count,
            "workflow": request.workflow,
            "context": dict(request.context),
        },
        "workflow_version": workflow_version,
        "serving": {
            "release": serving.release,
            "arm": serving.arm,
            "table_pins": dict(serving.table_pins),
            "model_routes": dict(serving.model_routes),
        },
        "table_versions": dict(ctx.table_versions),
        "degraded": ctx.degraded,
        "sources": _sources(ctx, feed),
        "calls": [_call(use) for use in ctx.models],
        "utility_weights": {head: float(weight) for head, weight in weights.items()},
        "feed": {
            "item_id": feed.item_id.tolist(),
            "utility": None if feed.utility is None else feed.utility.astype(np.float64).tolist(),
        },
    }


def encode_tensor(array: np.ndarray) -> dict[str, Any]:
    """{"dtype", "shape", "data"}: the raw little-endian C-order bytes, base64. Object (string) tensors
    are refused (TypeError): they have no raw bytes to keep."""
    if array.dtype.hasobject:
        raise TypeError(f"cannot capture a tensor of dtype {array.dtype}")
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    data = np.ascontiguousarray(little).tobytes()
    return {"dtype": array.dtype.name, "shape": list(array.shape), "data": base64.b64encode(data).decode("ascii")}


def _sources(ctx: Context, feed: Candidates) -> dict[str, list[int]]:
    if ctx.has(MERGED):
        merged = ctx.get(MERGED)
        masks = merged.sources_mask
        return {name: merged.item_id[(masks >> bit) & 1 == 1].tolist() for bit, name in enumerate(merged.source_names)}
    return {name: ctx.get(source_key(name)).item_id.tolist() for name in feed.source_names if ctx.has(source_key(name))}


def _call(use: ModelUse) -> dict[str, Any]:
    return {
        "model": use.model,
        "route": use.route,
        "target": use.target,
        "version": use.version,
        "rows": None if use.rows is None else encode_tensor(np.asarray(use.rows)),
        "inputs": {name: encode_tensor(np.asarray(value)) for name, value in use.inputs.items()},
        "outputs": {name: encode_tensor(np.asarray(value)) for name, value in use.outputs.items()},
    }


# -- reading ------------------------------------------------------------------------------------------------


def capture_files(paths: Iterable[Path]) -> list[Path]:
    """`paths` with every directory replaced by its capture files (sorted by name); FileNotFoundError
    naming the first path that does not exist."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(path.glob(CAPTURE_GLOB)))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"capture file {path} does not exist")
    return files


def read_captures(paths: Iterable[Path]) -> Iterator[Captured]:
    """Every record of the capture files (or directories of them) `paths`, in file and line order.

    A last line without its newline is a record cut short by a crash and is skipped; any other line that
    is not a format-1 record raises `CaptureFormatError` naming the file and line.
    """
    for path in capture_files(paths):
        with path.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                where = f"{path}:{number}"
                if not line.strip():
                    continue
                try:
                    raw = orjson.loads(line)
                except orjson.JSONDecodeError as error:
                    if not line.endswith(b"\n"):
                        return  # cut short while being written
                    raise CaptureFormatError(f"{where}: not JSON ({error})") from None
                yield decode_record(raw, where)


def decode_record(raw: Any, where: str = "") -> Captured:
    """A record (parsed JSON) as a `Captured`; CaptureFormatError for an unknown format or a bad field."""
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise CaptureFormatError(f"{where}: capture format {found!r} is not one this code reads ({FORMAT})")
    try:
        request = raw["request"]
        serving = raw["serving"]
        feed = raw["feed"]
        return Captured(
            request_id=str(request["request_id"]),
            member_id=int(request["member_id"]),
            count=int(request["count"]),
            workflow=str(request["workflow"]),
            context=dict(request["context"]),
            workflow_version=str(raw["workflow_version"]),
            time_s=float(raw["time_s"]),
            release=str(serving["release"]),
            arm=str(serving["arm"]),
            table_pins=dict(serving["table_pins"]),
            model_routes=dict(serving["model_routes"]),
            table_versions=dict(raw["table_versions"]),
            degraded=bool(raw["degraded"]),
            sources={name: np.asarray(ids, dtype=np.int64) for name, ids in raw["sources"].items()},
            calls=tuple(_decode_call(call) for call in raw["calls"]),
            utility_weights={head: float(weight) for head, weight in raw["utility_weights"].items()},
            feed=CapturedFeed(
                item_id=np.asarray(feed["item_id"], dtype=np.int64),
                utility=None if feed["utility"] is None else np.asarray(feed["utility"], dtype=np.float32),
            ),
            where=where,
        )
    except (KeyError, TypeError, ValueError, binascii.Error) as error:
        raise CaptureFormatError(f"{where}: bad capture record: {type(error).__name__}: {error}") from None


def decode_tensor(raw: Mapping[str, Any]) -> np.ndarray:
    """The array `encode_tensor` wrote, bit for bit, in native byte order (read-only)."""
    dtype = np.dtype(str(raw["dtype"]))
    shape = tuple(int(d) for d in raw["shape"])
    data = base64.b64decode(str(raw["data"]), validate=True)
    array = np.frombuffer(data, dtype=dtype.newbyteorder("<")).reshape(shape)
    return array.astype(dtype, copy=False)


def _decode_call(raw: Mapping[str, Any]) -> CapturedCall:
    return CapturedCall(
        model=str(raw["model"]),
        route=str(raw["route"]),
        target=str(raw["target"]),
        version=str(raw["version"]),
        rows=None if raw["rows"] is None else decode_tensor(raw["rows"]),
        inputs={name: decode_tensor(value) for name, value in raw["inputs"].items()},
        outputs={name: decode_tensor(value) for name, value in raw["outputs"].items()},
    )
