"""Hypothesis against a live gateway: arbitrary GetFeed and ModelInfer requests, and random bytes on the
wire for every method. Every answer is a status a client may get, no detail leaks internals, nothing is
logged at ERROR or with a traceback, and the gateway still answers SERVING afterwards."""

from __future__ import annotations

import math
from typing import Any

import grpc
import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2, service_pb2_grpc

from engines.oip_datatypes import LITTLE_ENDIAN
from quasar.v1 import feed_pb2, feed_pb2_grpc
from tests.fuzz.conftest import ThreadedGateway, assert_clean

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

INT64 = st.integers(-(2**63), 2**63 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)


@settings(FUZZ, max_examples=60)
@given(
    request_id=st.text(max_size=160),
    member_id=st.one_of(st.integers(1, 800), INT64),
    count=st.one_of(st.integers(0, 12), INT32),
    workflow=st.one_of(st.sampled_from(["", "feed"]), st.text(max_size=24)),
    context=st.dictionaries(st.text(max_size=24), st.text(max_size=64), max_size=20),
    debug=st.booleans(),
)
def test_get_feed_with_arbitrary_fields(
    fuzz_gateway: ThreadedGateway,
    request_id: str,
    member_id: int,
    count: int,
    workflow: str,
    context: dict[str, str],
    debug: bool,
) -> None:
    request = feed_pb2.GetFeedRequest(
        request_id=request_id, member_id=member_id, count=count, workflow=workflow, context=context, debug=debug
    )
    stub = feed_pb2_grpc.FeedServiceStub(fuzz_gateway.channel)
    code, detail, response = fuzz_gateway.call(stub.GetFeed, request)
    event(code.name)
    assert_clean(code, detail, [request_id, workflow, *context, *context.values()])
    if code is grpc.StatusCode.OK:
        assert len(response.items) <= (count or 50)
    assert not fuzz_gateway.logs.problems()


DATATYPES = [*sorted(LITTLE_ENDIAN), "BYTES", "BF16", "", "fp32", "FP128"]
ABSURD_DIMS = st.sampled_from([2**31, 2**40, 2**62, 2**63 - 1, -1, -(2**63)])


@st.composite
def plausible_tensors(draw: st.DrawFn) -> tuple[str, str, list[int], bytes | None, list[Any] | None]:
    """The demo models' input (FP32 `features`, 8 or 77 wide) with a row count, sometimes the wrong width
    and sometimes NaN, infinity or a float32 extreme in it: these reach the router and the engines."""
    rows = draw(st.integers(0, 40))
    width = draw(st.sampled_from([8, 8, 77, 77, 7, 78]))
    values = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).normal(size=(rows, width)).astype("<f4")
    if rows and draw(st.booleans()):
        values[draw(st.integers(0, rows - 1)), 0] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 3.4e38, -3.4e38]))
    return "features", "FP32", [rows, width], values.tobytes(), None


@st.composite
def tensors(draw: st.DrawFn) -> tuple[str, str, list[int], bytes | None, list[Any] | None]:
    """(name, datatype, shape, raw bytes or None, typed values or None): sane and absurd ones mixed."""
    name = draw(st.one_of(st.sampled_from(["features", "x"]), st.text(max_size=12)))
    datatype = draw(st.one_of(st.sampled_from(DATATYPES), st.text(max_size=6)))
    shape = draw(
        st.one_of(
            st.tuples(st.integers(0, 6), st.sampled_from([8, 77, 1, 0])).map(list),
            st.lists(st.one_of(st.integers(-2, 9), ABSURD_DIMS), max_size=5),
            st.lists(st.just(1), min_size=33, max_size=70),
        )
    )
    itemsize = LITTLE_ENDIAN[datatype].itemsize if datatype in LITTLE_ENDIAN else 4
    count = math.prod(shape) if all(dim >= 0 for dim in shape) else -1
    how = draw(st.sampled_from(["exact", "exact", "random-bytes", "off-by-one", "typed", "typed-wrong-count"]))
    if how == "exact" and 0 <= count * itemsize <= 1 << 16:
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        if datatype in ("FP16", "FP32", "FP64"):
            values = rng.normal(size=count).astype(LITTLE_ENDIAN[datatype])
            if count and draw(st.booleans()):  # NaN, infinity and the extremes, somewhere
                values[draw(st.integers(0, count - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e300]))
            return name, datatype, shape, values.tobytes(), None
        return name, datatype, shape, rng.bytes(count * itemsize), None
    if how == "off-by-one" and 0 <= count * itemsize <= 1 << 16:
        return name, datatype, shape, b"\x00" * (count * itemsize + draw(st.sampled_from([-1, 1]))), None
    if how.startswith("typed"):
        size = max(0, min(count, 64)) + (draw(st.integers(1, 3)) if how == "typed-wrong-count" else 0)
        values = draw(st.lists(st.one_of(INT64.filter(lambda v: v >= 0), st.floats()), min_size=size, max_size=size))
        return name, datatype, shape, None, values
    return name, datatype, shape, draw(st.binary(max_size=128)), None


def _fill_typed(tensor: Any, datatype: str, values: list[Any]) -> None:
    """Put `values` in whichever typed field the datatype reads, clipped to what the field can hold."""
    fields = {
        "BOOL": ("bool_contents", bool),
        "UINT8": ("uint_contents", lambda v: int(v) % 2**32 if math.isfinite(v) else 0),
        "UINT32": ("uint_contents", lambda v: int(v) % 2**32 if math.isfinite(v) else 0),
        "INT8": ("int_contents", lambda v: int(v) % 2**31 if math.isfinite(v) else 0),
        "INT32": ("int_contents", lambda v: int(v) % 2**31 if math.isfinite(v) else 0),
        "INT64": ("int64_contents", lambda v: int(v) % 2**63 if math.isfinite(v) else 0),
        "UINT64": ("uint64_contents", lambda v: int(v) % 2**64 if math.isfinite(v) else 0),
        "FP64": ("fp64_contents", float),
    }
    field, convert = fields.get(datatype, ("fp32_contents", lambda v: float(np.float32(v))))
    with np.errstate(over="ignore"):  # beyond float32's range becomes infinity: one more hostile value
        getattr(tensor.contents, field).extend(convert(v) for v in values)


@settings(FUZZ, max_examples=120)
@given(
    model=st.integers(0, 9).flatmap(
        lambda n: st.sampled_from(["feed_ranker", "first_pass", "feed_ranker_whole"]) if n < 8 else st.text(max_size=16)
    ),
    version=st.sampled_from(["", "", "", "", "1"]),
    request_id=st.text(max_size=20),
    inputs=st.one_of(st.lists(plausible_tensors(), min_size=1, max_size=1), st.lists(tensors(), max_size=3)),
    outputs=st.one_of(
        st.just([]), st.lists(st.one_of(st.sampled_from(["scores", "score"]), st.text(max_size=8)), max_size=2)
    ),
    routing_key=st.one_of(
        st.none(), st.none(), INT64, st.integers(0, 99).map(str), st.text(max_size=24), st.booleans()
    ),
    extra_raw=st.sampled_from([0, 0, 0, -1, 1]),
)
def test_model_infer_with_absurd_tensors(
    fuzz_gateway: ThreadedGateway,
    model: str,
    version: str,
    request_id: str,
    inputs: list[tuple[str, str, list[int], bytes | None, list[Any] | None]],
    outputs: list[str],
    routing_key: int | str | bool | None,
    extra_raw: int,
) -> None:
    request = service_pb2.ModelInferRequest(model_name=model, model_version=version, id=request_id)
    raws = []
    for name, datatype, shape, raw, typed in inputs:
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        if typed is not None:
            _fill_typed(tensor, datatype, typed)
        raws.append(raw or b"")
    if any(raw is not None for *_, raw, _typed in inputs):
        # sometimes one raw entry too many or too few
        request.raw_input_contents.extend(raws[: len(raws) + extra_raw] if extra_raw < 0 else raws + [b""] * extra_raw)
    for name in outputs:
        request.outputs.add(name=name)
    if isinstance(routing_key, bool):
        request.parameters["routing_key"].bool_param = routing_key
    elif isinstance(routing_key, int):
        request.parameters["routing_key"].int64_param = routing_key
    elif isinstance(routing_key, str):
        request.parameters["routing_key"].string_param = routing_key
    stub = service_pb2_grpc.GRPCInferenceServiceStub(fuzz_gateway.channel)
    code, detail, _ = fuzz_gateway.call(stub.ModelInfer, request)
    event(code.name)
    echoed = [model, version, request_id, *outputs, *(name for name, *_ in inputs), *(t[1] for t in inputs)]
    assert_clean(code, detail, echoed)
    assert not fuzz_gateway.logs.problems()


@settings(FUZZ, max_examples=60)
@given(
    model_width=st.sampled_from([("first_pass", 8, "score"), ("feed_ranker", 77, "scores")]),
    rows=st.integers(0, 64),
    seed=st.integers(0, 2**32 - 1),
    poison=st.one_of(st.none(), st.sampled_from([np.nan, np.inf, -np.inf])),
    routing_key=st.one_of(st.none(), INT64),
)
def test_model_infer_near_valid_requests(
    fuzz_gateway: ThreadedGateway,
    model_width: tuple[str, int, str],
    rows: int,
    seed: int,
    poison: float | None,
    routing_key: int | None,
) -> None:
    """Valid tensors of any row count (zero included) score one row each; one non-finite value is refused."""
    model, width, output = model_width
    features = np.random.default_rng(seed).normal(size=(rows, width)).astype("<f4")
    if poison is not None and rows:
        features[rows // 2, width // 2] = poison
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name="features", datatype="FP32", shape=[rows, width])
    request.raw_input_contents.append(features.tobytes())
    if routing_key is not None:
        request.parameters["routing_key"].int64_param = routing_key
    stub = service_pb2_grpc.GRPCInferenceServiceStub(fuzz_gateway.channel)
    code, detail, response = fuzz_gateway.call(stub.ModelInfer, request)
    event(code.name)
    assert_clean(code, detail)
    if poison is not None and rows:
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert detail == "input 'features' holds 1 non-finite values of " + str(rows * width)
    else:
        assert code is grpc.StatusCode.OK, detail
        [out] = response.outputs
        assert out.name == output
        assert out.shape[0] == rows
    assert not fuzz_gateway.logs.problems()


UNARY_METHODS = [
    "/quasar.v1.FeedService/GetFeed",
    "/inference.GRPCInferenceService/ModelInfer",
    "/inference.GRPCInferenceService/ModelMetadata",
    "/inference.GRPCInferenceService/ModelConfig",
    "/inference.GRPCInferenceService/ModelReady",
    "/inference.GRPCInferenceService/ModelStatistics",
    "/inference.GRPCInferenceService/ServerMetadata",
    "/quasar.v1.AdminService/GetRoutes",
    "/grpc.health.v1.Health/Check",
]


@settings(FUZZ, max_examples=150)
@given(method=st.sampled_from(UNARY_METHODS), body=st.binary(max_size=300))
def test_random_bytes_on_the_wire(fuzz_gateway: ThreadedGateway, method: str, body: bytes) -> None:
    code, detail = fuzz_gateway.raw(method, body)
    event(code.name)
    assert_clean(code, detail, _strings_in(body))
    assert not fuzz_gateway.logs.problems()


def test_the_gateway_is_serving_after_the_fuzzing(fuzz_gateway: ThreadedGateway) -> None:
    """Runs after the fuzz tests above (file order): the server survived them and still answers."""
    fuzz_gateway.assert_serving()
    stub = feed_pb2_grpc.FeedServiceStub(fuzz_gateway.channel)
    assert len(stub.GetFeed(feed_pb2.GetFeedRequest(member_id=5, count=3), timeout=10).items) == 3
    assert not fuzz_gateway.logs.problems()


def _strings_in(body: bytes) -> list[str]:
    """Strings a random body may carry that a valid message's error could quote back: every decodable
    run of the body, so quoting the client's own bytes is never taken for a leak."""
    text = body.decode("utf-8", errors="replace")
    return [text[i:j] for i in range(len(text)) for j in range(i + 1, min(len(text), i + 40) + 1)][:5000]
