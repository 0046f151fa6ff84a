"""Idempotent writes (contract 10) outside the procedures: which calls the rate limiter lets
through as replays, and the pruning of replies past their 24 h.

The procedures store a write's reply with its change and answer a retry from it themselves
(sql/procedures/02_request_replies.sql). Only the limiter runs before them, so it asks the
database first, with one primary-key probe, and only for calls that carry a request_id: calls
without one pay nothing.
"""

from __future__ import annotations

from participation_grpc import procedures
from participation_grpc.db import Database
from participation_grpc.errors import ServiceError
from participation_grpc.pipeline import Call
from participation_grpc.retention import Pruner
from participation_grpc.validation import uuid_field


class ReplayCheck:
    """LimitStep's exemption: true when the call repeats a stored one of the same caller and RPC
    (it changes nothing, or is refused as REQUEST_ID_REUSED, also without a change)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def __call__(self, call: Call) -> bool:
        value = getattr(call.request, "request_id", "")
        if not value or not isinstance(value, str) or call.caller is None:
            return False
        try:
            request_id = uuid_field(value, "request_id")
        except ServiceError:
            return False  # charged like any bad request; the servicer names the field
        return await procedures.is_replay(self._db, call.caller.user_id, request_id, call.name)


def reply_pruner(db: Database) -> Pruner:
    async def batch(limit: int) -> int:
        return await procedures.prune_request_replies(db, limit)

    return Pruner("request replies", batch)
