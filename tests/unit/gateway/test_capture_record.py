"""The capture record: what a served request leaves on disk, read back bit for bit."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import numpy as np
import orjson
import pytest

from gateway.capture_record import (
    CaptureFormatError,
    capture_record,
    decode_tensor,
    encode_tensor,
    read_captures,
)
from remix.budget import Budget
from remix.context import Context, ModelUse, Serving
from remix.failures import Category, Failure
from remix.request import FeedRequest
from remix.steps.candidates import Candidates
from remix.steps.keys import MERGED, UTILITY_WEIGHTS, source_key


def candidates(ids: list[int], mask: list[int], names: tuple[str, ...]) -> Candidates:
    n = len(ids)
    return Candidates(
        item_id=np.array(ids, np.int64),
        item_type=np.ones(n, np.int8),
        author_id=np.arange(n, dtype=np.int64),
        first_pass_score=np.linspace(1.0, 0.5, n, dtype=np.float32),
        source=np.zeros(n, np.int16),
        sources_mask=np.array(mask, np.uint32),
        source_names=names,
    )


def tricky_inputs() -> dict[str, np.ndarray]:
    """Values a lossy encoding would change: NaN payloads, -0.0, subnormals, int64 extremes, big-endian
    and non-contiguous arrays, float16, a vector input."""
    features = np.array(
        [[np.nan, -0.0, 1e-45, np.float32(1) / 3], [np.inf, -np.inf, 3.4e38, 1.1754942e-38]], np.float32
    )
    return {
        "features": features,
        "strided": np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2],  # not C-contiguous
        "ids": np.array([np.iinfo(np.int64).min, -1, 0, np.iinfo(np.int64).max], np.int64),
        "big_endian": np.array([[1.5, -2.25]], dtype=">f8"),
        "half": np.array([0.1, 65504.0], np.float16),
        "flags": np.array([True, False]),
    }


def make_context(*, merged: bool = True, request_id: str = "r1", rows: int = 3) -> tuple[Context, Candidates]:
    """A finished request: two first_pass calls, a ranker call, merged candidates, a feed."""
    request = FeedRequest(request_id=request_id, member_id=42, count=2, context={"surface": "home"})
    ctx = Context(
        request=request,
        budget=Budget(None),
        serving=Serving(
            release="r7",
            arm="canary",
            table_pins=MappingProxyType({"item": "v2"}),
            model_routes={"ranker": "r7.ranker"},
        ),
    )
    ctx.table_versions.update({"item": "v2", "member": "v9"})
    names = ("network", "trending")
    ids = [101, 102, 103][:rows]
    if merged:
        ctx.set(MERGED, candidates(ids, [0b01, 0b11, 0b10][:rows], names))
    else:
        ctx.set(source_key("network"), candidates([101, 102], [1, 1], ("network",)))
        ctx.set(source_key("trending"), candidates([102, 103], [1, 1], ("trending",)))
    ctx.models.append(
        ModelUse(
            "first_pass",
            "local_xgboost/first_pass",
            "v1",
            route="first_pass",
            rows=np.array([101, 102], np.int64),
            inputs={"x": np.ones((2, 3), np.float32)},
            outputs={"score": np.array([0.5, 0.25], np.float32)},
        )
    )
    ctx.models.append(
        ModelUse(
            "ranker",
            "local_onnx/ranker/3",
            "3",
            route="r7.ranker",
            rows=np.array(ids, np.int64),
            inputs=tricky_inputs(),
            outputs={"scores": np.arange(rows * 2, dtype=np.float32).reshape(rows, 2) / 7},
        )
    )
    ctx.set(UTILITY_WEIGHTS, MappingProxyType({"click": 1.0, "share": 0.5}))
    ctx.degrade(Failure(step="jobs", category=Category.DEPENDENCY, message="slow"))
    feed = candidates([102, 101], [0b11, 0b01], names)
    feed = feed.with_scores(np.zeros((2, 2), np.float32), ("click", "share"), np.array([0.7, 1 / 3], np.float32))
    return ctx, feed


def write_records(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def assert_bit_identical(read: np.ndarray, original: np.ndarray) -> None:
    assert read.dtype == original.dtype.newbyteorder("=")
    assert read.shape == original.shape
    assert np.ascontiguousarray(read).tobytes() == np.ascontiguousarray(original.astype(read.dtype)).tobytes()


def test_a_record_reads_back_with_bit_identical_tensors(tmp_path: Path) -> None:
    ctx, feed = make_context()
    record = capture_record(ctx, feed, "2026.12.1", time_s=1_700_000_000.5)
    (captured,) = read_captures([write_records(tmp_path / "capture-w-1.jsonl", [record])])

    assert (captured.request_id, captured.member_id, captured.count, captured.workflow) == ("r1", 42, 2, "feed")
    assert captured.context == {"surface": "home"}
    assert captured.workflow_version == "2026.12.1"
    assert captured.time_s == 1_700_000_000.5
    assert (captured.release, captured.arm) == ("r7", "canary")
    assert captured.table_pins == {"item": "v2"}
    assert captured.model_routes == {"ranker": "r7.ranker"}
    assert captured.table_versions == {"item": "v2", "member": "v9"}
    assert captured.degraded
    assert captured.utility_weights == {"click": 1.0, "share": 0.5}
    assert [c.model for c in captured.calls] == ["first_pass", "ranker"]
    ranker = captured.calls[-1]
    assert (ranker.route, ranker.target, ranker.version) == ("r7.ranker", "local_onnx/ranker/3", "3")
    assert ranker.rows is not None
    assert ranker.rows.tolist() == [101, 102, 103]
    for name, original in tricky_inputs().items():
        assert_bit_identical(ranker.inputs[name], original)
    assert_bit_identical(ranker.outputs["scores"], ctx.models[-1].outputs["scores"])
    assert captured.feed.item_id.tolist() == [102, 101]
    assert captured.feed.utility is not None
    assert captured.feed.utility.tobytes() == np.array([0.7, 1 / 3], np.float32).tobytes()
    assert captured.where.endswith("capture-w-1.jsonl:1")


def test_sources_come_from_the_merged_provenance() -> None:
    ctx, feed = make_context()
    record = capture_record(ctx, feed, "v", time_s=0.0)
    # 101: network only; 102: both; 103: trending only
    assert record["sources"] == {"network": [101, 102], "trending": [102, 103]}
    assert record["format"] == 1


def test_sources_come_from_the_source_slots_without_a_merge() -> None:
    ctx, feed = make_context(merged=False)
    record = capture_record(ctx, feed, "v", time_s=0.0)
    assert record["sources"] == {"network": [101, 102], "trending": [102, 103]}


def test_a_tensor_encodes_its_raw_little_endian_bytes() -> None:
    value = np.array([1.0, -2.0], dtype=">f4")
    encoded = encode_tensor(value)
    assert encoded["dtype"] == "float32"
    assert encoded["shape"] == [2]
    assert decode_tensor(encoded).tobytes() == np.array([1.0, -2.0], "<f4").tobytes()
    with pytest.raises(TypeError, match="dtype object"):
        encode_tensor(np.array(["a"], dtype=object))


def test_a_directory_reads_its_capture_files_in_name_order(tmp_path: Path) -> None:
    ctx, feed = make_context()
    first = capture_record(ctx, feed, "v", time_s=1.0)
    second = capture_record(ctx, feed, "v", time_s=2.0)
    write_records(tmp_path / "capture-w-20260101T000000Z-000001.jsonl", [second])
    write_records(tmp_path / "capture-w-20260101T000000Z-000000.jsonl", [first])
    (tmp_path / "notes.txt").write_text("not a capture")
    assert [c.time_s for c in read_captures([tmp_path])] == [1.0, 2.0]


def test_a_line_cut_short_at_the_end_is_skipped(tmp_path: Path) -> None:
    ctx, feed = make_context()
    line = orjson.dumps(capture_record(ctx, feed, "v", time_s=1.0))
    path = tmp_path / "capture.jsonl"
    path.write_bytes(line + b"\n" + line[: len(line) // 2])
    assert len(list(read_captures([path]))) == 1


def test_a_bad_line_names_the_file_and_line(tmp_path: Path) -> None:
    ctx, feed = make_context()
    line = orjson.dumps(capture_record(ctx, feed, "v", time_s=1.0))
    path = tmp_path / "capture.jsonl"
    path.write_bytes(line + b"\n{not json\n" + line + b"\n")
    with pytest.raises(CaptureFormatError, match=r"capture\.jsonl:2: not JSON"):
        list(read_captures([path]))


def test_an_unknown_format_is_refused(tmp_path: Path) -> None:
    path = write_records(tmp_path / "capture.jsonl", [{"format": 2}])
    with pytest.raises(CaptureFormatError, match=r"capture\.jsonl:1: capture format 2"):
        list(read_captures([path]))
    broken = write_records(tmp_path / "broken.jsonl", [{"format": 1, "request": {}}])
    with pytest.raises(CaptureFormatError, match=r"broken\.jsonl:1: bad capture record: KeyError"):
        list(read_captures([broken]))


def test_a_missing_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing\.jsonl"):
        list(read_captures([tmp_path / "nothing.jsonl"]))
