"""One access line per call, and the call's request id (taken from x-request-id or made here,
returned in the response's initial metadata, failed calls included)."""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

import grpc

from participation_grpc import logs

if TYPE_CHECKING:
    from participation_grpc.pipeline import Call

HEADER = "x-request-id"
MAX_REQUEST_ID = 128
log = logging.getLogger("participation_grpc.access")


class AccessLog:
    """The pipeline observer writing the access line: request_id, method, code, reason,
    duration_ms, user_id, peer (and trace_id when tracing is on), at INFO on
    participation_grpc.access."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self._logger = logger

    async def started(self, call: Call) -> None:
        # 128 random bits as 32 hex digits (str(uuid4()) costs five times as much).
        rid = _incoming(call.context.invocation_metadata()) or os.urandom(16).hex()
        call.request_id = rid
        logs.request_id.set(rid)
        try:
            # Now, before anything can fail the call: an answer with a status only (a refusal)
            # would otherwise carry no initial metadata at all.
            await call.context.send_initial_metadata(((HEADER, rid),))
        except Exception:  # the call is already over (the client went away); logged anyway
            pass

    def sent(self, call: Call) -> None:
        pass

    def finished(self, call: Call, code: grpc.StatusCode, reason: str) -> None:
        if not self._logger.isEnabledFor(logging.INFO):
            return
        method = call.method[1:]
        fields = {
            "request_id": call.request_id,
            "method": method,
            "code": code.name,
            "reason": reason,
            "duration_ms": round((time.monotonic() - call.started) * 1000, 3),
            "user_id": str(call.caller.user_id) if call.caller is not None else "",
            "peer": call.context.peer(),
        }
        if call.trace_id:
            fields["trace_id"] = call.trace_id
        # Built directly: Logger.info would walk the stack for a caller nobody reads.
        record = logging.LogRecord(
            self._logger.name, logging.INFO, __file__, 0, "%s %s", (method, code.name), None
        )
        record.fields = fields
        record.request_id = call.request_id
        self._logger.handle(record)


def _incoming(metadata: object) -> str | None:
    """The caller's request id when it is one we can log safely: 1-128 visible ASCII
    characters, no spaces (anything else is replaced by a fresh id)."""
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == HEADER:
            if (
                isinstance(value, str)
                and 0 < len(value) <= MAX_REQUEST_ID
                and value.isascii()
                and value.isprintable()
                and " " not in value
            ):
                return value
            return None
    return None
