"""What tools ask a server without a token: reflection in both protocols (buf curl speaks either,
grpcurl picks one) and health Check, Watch and List."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from participation_grpc.health import SERVICE_NAME
from tests.conftest import Service

BIN = Path(sys.executable).parent
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _run(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.parametrize("protocol", ["grpc-v1", "grpc-v1alpha"])
async def test_buf_curl_finds_the_methods_through_either_reflection_protocol(
    service: Service, protocol: str
) -> None:
    # The same buf curl for both calls: plain gRPC over HTTP/2, reflection by `protocol`.
    buf_curl = [
        str(BIN / "buf"),
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "--reflect-protocol",
        protocol,
    ]
    code, out, err = await _run(
        *buf_curl,
        f"http://{service.address}/grpc.health.v1.Health/List",
    )
    assert code == 0, err
    assert set(json.loads(out)["statuses"]) == {"", SERVICE_NAME}
    code, out, err = await _run(
        *buf_curl,
        "--list-methods",
        f"http://{service.address}",
    )
    assert code == 0, err
    assert f"{SERVICE_NAME}/JoinActivity" in out.split()


async def test_grpcurl_lists_and_describes_both_reflection_services(service: Service) -> None:
    code, out, err = await _run(str(BIN / "grpcurl"), "-plaintext", service.address, "list")
    assert code == 0, err
    assert {"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} <= set(
        out.split()
    )
    code, out, err = await _run(
        str(BIN / "grpcurl"),
        "-plaintext",
        service.address,
        "describe",
        "grpc.reflection.v1.ServerReflectionRequest",
    )
    assert code == 0, err
    assert "list_services" in out


async def test_health_check_watch_and_list_agree(service: Service) -> None:
    health = health_pb2_grpc.HealthStub(service.channel)
    listed = await health.List(health_pb2.HealthListRequest())
    assert {name: reply.status for name, reply in listed.statuses.items()} == {
        "": SERVING,
        SERVICE_NAME: SERVING,
    }
    for name in ("", SERVICE_NAME):
        assert (await health.Check(health_pb2.HealthCheckRequest(service=name))).status == SERVING
    watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert (await watch.read()).status == SERVING
    await service.app.health.enter_graceful_shutdown()  # as SIGTERM does
    assert (await watch.read()).status == NOT_SERVING
    listed = await health.List(health_pb2.HealthListRequest())
    assert {reply.status for reply in listed.statuses.values()} == {NOT_SERVING}
    watch.cancel()
