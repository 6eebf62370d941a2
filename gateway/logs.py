"""Process logging: structured JSON lines (or plain text) on stderr."""

from __future__ import annotations

import logging
import sys
from typing import Literal

from pythonjsonlogger.orjson import OrjsonFormatter

ACCESS_LOGGER = "quasar.requests"


def configure_logging(level: str, log_format: Literal["json", "text"]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(
            # orjson: one access-log line per request is on by default, so its encoder is on the request path.
            OrjsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
