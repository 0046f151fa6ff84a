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
    filtered = pb.ListParticipantsRequest(activity_id=REQUEST.activity_id, role=2)
    assert PageTokens.binding(CALLER, bigger) == PageTokens.binding(CALLER, REQUEST)
    assert PageTokens.binding(CALLER, filtered) != PageTokens.binding(CALLER, REQUEST)
    assert PageTokens.binding(uuid.uuid4(), REQUEST) != PageTokens.binding(CALLER, REQUEST)


def test_page_token_secret_overrides_derived_key() -> None:
    derived = Settings(jwt_secret_key="s" * 40)
    assert _page_token_key(derived) == b"s" * 40
    assert _page_token_key(Settings.from_environ({"PAGE_TOKEN_SECRET": "p" * 40})) == b"p" * 40
