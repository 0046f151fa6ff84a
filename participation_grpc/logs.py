"""Log output: LOG_FORMAT json (one object per line) or text, and the request id on every line a
call writes.

A record may carry `fields` (a dict, e.g. the access line's): json puts them beside the message,
text appends them as key=value. Lines written while a call runs (its errors, its flood summary
line) carry that call's request_id.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

from participation_grpc.settings import Settings

# Set by the access log when a call starts; each call runs in a task of its own, so it never
# needs resetting and never leaks into another call.
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
# The pid tells the lines of WORKERS processes apart.
_TEXT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
# Built once: json.dumps with arguments builds a new encoder for every line.
_JSON = json.JSONEncoder(ensure_ascii=False, default=str)


def configure(settings: Settings) -> None:
    """The process's one handler (stderr) in LOG_FORMAT at LOG_LEVEL; replaces any before."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    handler.addFilter(add_request_id)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # No format here shows them, and every record (an access line per call) would look them up.
    logging.logThreads = False
    logging.logMultiprocessing = False


def add_request_id(record: logging.LogRecord) -> bool:
    """A handler filter: the running call's request id on every record it writes."""
    if not hasattr(record, "request_id"):
        record.request_id = request_id.get()
    return True


class JsonFormatter(logging.Formatter):
    """{"time", "level", "pid", "logger", "message", [request_id], [fields...], [exception]}."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname,
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", "")
        if rid:
            line["request_id"] = rid
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _JSON.encode(line)


class TextFormatter(logging.Formatter):
    """The classic line, then the fields (or the request id) as key=value, before any traceback."""

    def __init__(self) -> None:
        super().__init__(_TEXT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        fields = getattr(record, "fields", None)
        if fields:
            return text + "".join(f" {key}={value}" for key, value in fields.items())
        rid = getattr(record, "request_id", "")
        return f"{text} request_id={rid}" if rid else text


_second: list[Any] = [None, ""]  # the last second formatted, and its text


def _utc(created: float) -> str:
    seconds = int(created)
    if _second[0] != seconds:
        _second[:] = [seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))]
    return f"{_second[1]}.{int((created - seconds) * 1000):03d}Z"
