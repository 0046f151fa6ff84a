"""Page tokens: issued and checked by the service's key, bound to the request."""

import uuid

import grpc
import pytest

from participation_grpc.app import _page_token_key
from participation_grpc.errors import ServiceError
from participation_grpc.paging import PageTokens
from participation_grpc.settings import Settings
from participation_grpc.v1 import participation_pb2 as pb

CALLER = uuid.uuid4()
REQUEST = pb.ListParticipantsRequest(activity_id=str(uuid.uuid4()), page_size=5)


def test_token_round_trips_with_the_key_that_issued_it() -> None:
    tokens = PageTokens(b"one key")
    binding = tokens.binding(CALLER, REQUEST)
    after = {"r": 2, "j": "2026-01-01T00:00:00+00:00", "u": str(uuid.uuid4())}
    assert tokens.decode(tokens.encode(after, binding), binding) == after


def test_token_from_another_key_is_refused() -> None:
    binding = PageTokens.binding(CALLER, REQUEST)
    token = PageTokens(b"one key").encode({"r": 1}, binding)
    with pytest.raises(ServiceError) as caught:
        PageTokens(b"another key").decode(token, binding)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == ["page_token"]


def test_binding_ignores_page_size_but_not_filters_or_caller() -> None:
    bigger = pb.ListParticipantsRequest(activity_id=REQUEST.activity_id, page_size=50)
    filtered = pb.ListParticipantsRequest(
        activity_id=REQUEST.activity_id, role=pb.PARTICIPANT_ROLE_CO_ORGANIZER
    )
    assert PageTokens.binding(CALLER, bigger) == PageTokens.binding(CALLER, REQUEST)
    assert PageTokens.binding(CALLER, filtered) != PageTokens.binding(CALLER, REQUEST)
    assert PageTokens.binding(uuid.uuid4(), REQUEST) != PageTokens.binding(CALLER, REQUEST)


def test_page_token_secret_overrides_derived_key() -> None:
    derived = Settings(jwt_secret_key="s" * 40)
    assert _page_token_key(derived) == b"s" * 40
    assert _page_token_key(Settings.from_environ({"PAGE_TOKEN_SECRET": "p" * 40})) == b"p" * 40


def _signed(key: bytes, payload: object) -> str:
    """A token with the service's own format and key around any payload (what a token of
    another version, or a key reused elsewhere, would look like)."""
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    body = json.dumps(payload, separators=(",", ":")).encode()
    sealing = hashlib.sha256(b"participation page tokens|" + key).digest()
    return f"{b64(body)}.{b64(hmac.new(sealing, body, hashlib.sha256).digest()[:16])}"


@pytest.mark.parametrize(
    "payload",
    [
        {"b": "BINDING"},  # no position at all: was a KeyError, answered INTERNAL
        {"a": None, "b": "BINDING"},
        {"a": [1, 2], "b": "BINDING"},
        {"a": "x", "b": "BINDING"},
        ["a", "b"],
        "BINDING",
    ],
)
def test_a_signed_token_without_a_position_is_invalid_argument(payload: object) -> None:
    tokens = PageTokens(b"one key")
    binding = tokens.binding(CALLER, REQUEST)
    if isinstance(payload, dict):
        payload = {k: (binding if v == "BINDING" else v) for k, v in payload.items()}
    token = _signed(b"one key", payload)
    assert tokens.decode(_signed(b"one key", {"a": {"r": 1}, "b": binding}), binding) == {"r": 1}
    with pytest.raises(ServiceError) as caught:
        tokens.decode(token, binding)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == ["page_token"]
