"""`pip install participation-grpc` as a sibling service does: the stubs, the proto and
error_details, with only the client's dependencies at their declared floors, against the real
server."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import grpc
import pytest

from participation_grpc import error_details
from participation_grpc.auth import mint_token
from participation_grpc.settings import RateLimits
from participation_grpc.v1 import participation_pb2 as pb
from tests.conftest import Service, serving, test_settings
from tests.seed import user_and_activity
from tests.wheel import build_wheel

ROOT = Path(__file__).resolve().parent.parent
CLIENT_DEPENDENCIES = {"grpcio", "protobuf", "googleapis-common-protos"}
SERVER_ONLY = {
    "asyncpg",
    "redis",
    "pyjwt",
    "cryptography",
    "grpcio-status",
    "grpcio-health-checking",
    "grpcio-reflection",
}
# Run by the fresh virtualenv's interpreter: a sync client, as another team would write it.
CLIENT = """
import json, sys
import grpc
from importlib.resources import files
from participation_grpc import error_details
from participation_grpc.v1 import participation_pb2 as pb, participation_pb2_grpc as rpc

address, token, activity = sys.argv[1:4]
stub = rpc.ParticipationServiceStub(grpc.insecure_channel(address))
auth = (("authorization", "Bearer " + token),)

def failure(call):
    try:
        call()
    except grpc.RpcError as exc:
        info = error_details.error_info(exc)
        delay = error_details.retry_delay(exc)
        return {"code": exc.code().name, "reason": info.reason, "domain": info.domain,
                "metadata": dict(info.metadata), "fields": error_details.field_violations(exc),
                "retry_seconds": delay.total_seconds() if delay else None}
    return None

out = {
    "unauthenticated": failure(lambda: stub.JoinActivity(pb.JoinActivityRequest(activity_id=activity))),
    "invalid": failure(lambda: stub.JoinActivity(pb.JoinActivityRequest(activity_id="nope"), metadata=auth)),
    "joined": pb.ParticipationStatus.Name(stub.JoinActivity(
        pb.JoinActivityRequest(activity_id=activity), metadata=auth).participation_status),
    "limited": failure(lambda: stub.LeaveActivity(pb.LeaveActivityRequest(activity_id=activity),
                                                  metadata=auth)),
    "proto": (files("participation_grpc.protos") / "participation/v1/participation.proto").read_text()[:4000],
    "server_modules": sorted(m for m in sys.modules
                             if m.split(".")[0] in ("asyncpg", "redis", "jwt", "grpc_status", "grpc_health")),
}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("client-wheel"))


def _requirements(wheel: Path) -> list[str]:
    """The wheel's Requires-Dist lines without an extra: what `pip install participation-grpc` pulls."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode()
    return [
        line.split(":", 1)[1].strip()
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:") and ";" not in line
    ]


def _floor(requirement: str) -> str:
    """grpcio>=1.85.1 -> grpcio==1.85.1: the oldest version the wheel claims to work with."""
    found = re.match(r"([A-Za-z0-9_.-]+).*?>=\s*([0-9][^,\s]*)", requirement)
    assert found, f"{requirement} has no floor"
    return f"{found[1]}=={found[2]}"


@pytest.fixture(scope="module")
def client_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding the wheel with every dependency at its declared floor."""
    venv = tmp_path_factory.mktemp("client-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    floors = venv / "floors.txt"
    floors.write_text("\n".join(_floor(r) for r in _requirements(wheel)) + "\n")
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "-c",
            str(floors),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    return venv


def test_the_package_depends_on_the_client_libraries_only(wheel: Path) -> None:
    names = {re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0].lower() for r in _requirements(wheel)}
    assert names == CLIENT_DEPENDENCIES


def test_floor_install_holds_no_server_dependency(client_venv: Path) -> None:
    listed = subprocess.run(
        [
            str(client_venv / "bin" / "python"),
            "-m",
            "pip",
            "list",
            "--format",
            "json",
            "--disable-pip-version-check",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    installed = {p["name"].lower(): p["version"] for p in json.loads(listed)}
    assert not SERVER_ONLY & set(installed)
    assert installed["protobuf"].startswith("7.") and installed["grpcio"] == "1.85.1"


@pytest.mark.parametrize("argv", [[], ["serve"], ["migrate"], ["--help"]])
def test_the_command_without_the_server_extra_says_what_to_install(
    client_venv: Path, argv: list[str]
) -> None:
    """The client package installs the console script too; it cannot serve, and says so."""
    ran = subprocess.run(
        [str(client_venv / "bin" / "participation-grpc"), *argv],
        capture_output=True,
        text=True,
        cwd=client_venv,
    )
    assert ran.returncode == 2, ran.stderr
    assert ran.stdout == "" and "Traceback" not in ran.stderr
    [line] = ran.stderr.splitlines()
    assert "pip install 'participation-grpc[server]'" in line and "asyncpg" in line, line


async def test_floor_install_calls_the_server_and_reads_the_error_details(
    client_venv: Path, database_url: str
) -> None:
    user, activity = await user_and_activity(database_url)
    # A write budget of 2: the invalid call and the join count, the leave is refused.
    settings = test_settings(database_url, rate_limit_enabled=True, rate_limits=RateLimits(write=2))
    async with serving(settings) as service:
        proc = await asyncio.create_subprocess_exec(
            str(client_venv / "bin" / "python"),
            "-c",
            CLIENT,
            service.address,
            mint_token(settings, user),
            str(activity),
            cwd=client_venv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    assert result["unauthenticated"]["code"] == "UNAUTHENTICATED"
    assert result["unauthenticated"]["reason"] == "TOKEN_MISSING"
    assert result["invalid"]["code"] == "INVALID_ARGUMENT"
    assert result["invalid"]["domain"] == "participation"
    assert set(result["invalid"]["fields"]) == {"activity_id"}
    assert result["joined"] == "PARTICIPATION_STATUS_REGISTERED"
    limited = result["limited"]
    assert (limited["code"], limited["reason"]) == ("RESOURCE_EXHAUSTED", "RATE_LIMITED")
    assert limited["metadata"]["limit_class"] == "write" and limited["retry_seconds"] > 0
    assert "package participation.v1;" in result["proto"]
    assert result["server_modules"] == []


async def test_error_details_read_an_asyncio_stubs_failure(service: Service) -> None:
    user = await service.seed.user()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.call("JoinActivity", user, pb.JoinActivityRequest(activity_id="nope"))
    info = error_details.error_info(caught.value)
    assert info is not None and (info.domain, info.reason) == (error_details.DOMAIN, "INVALID_ARGUMENT")
    assert "activity_id" in error_details.field_violations(caught.value)
    assert error_details.retry_delay(caught.value) is None


async def test_error_details_are_none_when_the_failure_carries_no_status() -> None:
    """A call that never reached the service (nothing listens there) has no google.rpc.Status."""
    async with grpc.aio.insecure_channel("127.0.0.1:1") as channel:
        stub: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/participation.v1.ParticipationService/JoinActivity"
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub(b"", timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_details.status(caught.value) is None and error_details.error_info(caught.value) is None
    assert error_details.field_violations(caught.value) == {}


def test_image_and_make_install_the_server_extra() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "'.[server]'" in dockerfile and "'participation-grpc[server]'" in dockerfile
    assert "-e '.[server,dev]'" in (ROOT / "Makefile").read_text()
