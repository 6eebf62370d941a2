"""Log lines are single JSON objects carrying the request fields."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from gateway.logs import ACCESS_LOGGER, configure_logging


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root_logger")
def test_json_lines_carry_request_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    logging.getLogger(ACCESS_LOGGER).info(
        "GetFeed", extra={"request_id": "r-1", "workflow": "feed", "outcome": "ok", "latency_ms": 7.25}
    )
    logging.getLogger("quiet").debug("below the level")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["message"] == "GetFeed"
    assert record["level"] == "INFO"
    assert record["logger"] == ACCESS_LOGGER
    assert (record["request_id"], record["workflow"], record["outcome"], record["latency_ms"]) == (
        "r-1",
        "feed",
        "ok",
        7.25,
    )
    assert "time" in record
    # The request path's JSON goes through orjson (a named dependency), not the standard library's encoder.
    assert type(logging.getLogger().handlers[0].formatter).__name__ == "OrjsonFormatter"


@pytest.mark.usefixtures("restore_root_logger")
def test_text_format(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("warning", "text")
    logging.getLogger("x").warning("plain %s", "words")
    assert capsys.readouterr().err.strip().endswith("WARNING x plain words")
