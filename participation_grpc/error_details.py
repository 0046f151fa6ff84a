"""For clients: the google.rpc details a failed call carries (ErrorInfo, RetryInfo, BadRequest).

Works with the errors of sync and asyncio stubs alike, and needs only grpcio and
googleapis-common-protos (the client package's own dependencies), so a sibling service can ask
`error_info(exc).reason` without the server's dependencies.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

DOMAIN = "participation"  # ErrorInfo.domain of every error the service answers
_STATUS_KEY = "grpc-status-details-bin"
D = TypeVar("D", bound=Message)


class FailedCall(Protocol):
    """A grpc.RpcError of a sync stub (also a grpc.Call) or a grpc.aio.AioRpcError."""

    def trailing_metadata(self) -> Any: ...


def status(error: FailedCall) -> status_pb2.Status | None:
    """The google.rpc.Status in the call's trailers; None when the call carried none."""
    trailers: Iterable[tuple[str, str | bytes]] = error.trailing_metadata() or ()
    for key, value in trailers:
        if key == _STATUS_KEY and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None


def detail(error: FailedCall, kind: type[D]) -> D | None:
    """The first detail of this message type, e.g. detail(exc, error_details_pb2.QuotaFailure)."""
    found = status(error)
    for item in found.details if found else ():
        if item.Is(kind.DESCRIPTOR):
            message = kind()
            item.Unpack(message)
            return message
    return None


def error_info(error: FailedCall) -> error_details_pb2.ErrorInfo | None:
    """Why the call failed: `reason` (e.g. ACTIVITY_NOT_FOUND) and the ids in `metadata`."""
    return detail(error, error_details_pb2.ErrorInfo)


def retry_delay(error: FailedCall) -> timedelta | None:
    """How long to wait before trying again (RATE_LIMITED, DATABASE_BUSY); None: no advice."""
    info = detail(error, error_details_pb2.RetryInfo)
    return info.retry_delay.ToTimedelta() if info else None


def field_violations(error: FailedCall) -> dict[str, str]:
    """INVALID_ARGUMENT's BadRequest as {request field: what is wrong with it}."""
    bad = detail(error, error_details_pb2.BadRequest)
    return {v.field: v.description for v in bad.field_violations} if bad else {}
