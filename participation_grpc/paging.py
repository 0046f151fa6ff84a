"""AIP-158 paging: page sizes and opaque, signed keyset page tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from typing import Any

from google.protobuf.message import Message

from participation_grpc.errors import invalid_argument


def page_size(requested: int) -> int:
    """The requested size, refused when negative. 0 (the default) and sizes above the maximum
    are the procedures' to settle (activity.pa_page_size): the numbers live there only."""
    if requested < 0:
        raise invalid_argument("page_size", "must not be negative")
    return requested


class PageTokens:
    """Keyset positions sealed with an HMAC and bound to the request that produced them.

    A token carries the sort key of the last row of its page (chosen by the procedure), so the
    next page starts after it without OFFSET. The signature makes forged tokens fail, and the
    binding (method, caller and filters) makes a token useless with other filters.
    """

    def __init__(self, key: bytes) -> None:
        self._key = hashlib.sha256(b"participation page tokens|" + key).digest()

    def encode(self, after: dict[str, Any] | None, binding: str) -> str:
        if after is None:
            return ""
        body = json.dumps({"a": after, "b": binding}, separators=(",", ":")).encode()
        return f"{_b64(body)}.{_b64(self._sign(body))}"

    def decode(self, token: str, binding: str) -> dict[str, Any] | None:
        if not token:
            return None
        try:
            body_text, signature = token.split(".")
            body = _unb64(body_text)
            valid = hmac.compare_digest(_unb64(signature), self._sign(body))
            payload = json.loads(body) if valid else None
        except ValueError:
            payload = None
        # Signed but not of this shape (another version's token, a key reused elsewhere): just
        # as unusable as a forged one.
        if (
            not isinstance(payload, dict)
            or payload.get("b") != binding
            or not isinstance(payload.get("a"), dict)
        ):
            raise invalid_argument("page_token", "is not a token issued for this request")
        after: dict[str, Any] = payload["a"]
        return after

    @staticmethod
    def binding(caller_id: uuid.UUID, request: Message) -> str:
        """What a token is valid for: this method, this caller and these filters (the page
        size may change between pages, so it is not part of it)."""
        filters = type(request)()
        filters.CopyFrom(request)
        filters.ClearField("page_token")
        filters.ClearField("page_size")
        digest = hashlib.sha256(filters.SerializeToString(deterministic=True)).hexdigest()[:32]
        return f"{request.DESCRIPTOR.name}:{caller_id}:{digest}"

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
