"""TLS and mTLS on the gRPC port, with certificates the tests make; settings checked at start."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from participation_grpc.settings import ConfigError, Settings
from tests.certs import Authority, Pair
from tests.conftest import serving, test_settings

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
SERVING = health_pb2.HealthCheckResponse.SERVING


async def _run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def _check(address: str, credentials: grpc.ChannelCredentials | None) -> int:
    """Health Check over TLS (or plaintext when credentials is None); the status it answers."""
    channel = (
        grpc.aio.secure_channel(address, credentials)
        if credentials is not None
        else grpc.aio.insecure_channel(address)
    )
    async with channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        return int(reply.status)


def _trusting(ca: Path, client: Pair | None = None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    cert, key = client.read()
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(), private_key=key, certificate_chain=cert
    )


def _readme_openssl_command() -> list[str]:
    """The certificate command of README's TLS section, as a new user would paste it."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"^(openssl req -x509 (?:.*\\\n)*.*)$", readme, re.M)
    assert found, "README.md shows no `openssl req -x509` command"
    return shlex.split(found[1].replace("\\\n", " "))


async def test_the_readmes_self_signed_certificate_serves_tls_to_grpcurl(
    database_url: str, tmp_path: Path
) -> None:
    code, _, err = await _run(*_readme_openssl_command(), cwd=tmp_path)
    assert code == 0, err
    cert, key = tmp_path / "tls-cert.pem", tmp_path / "tls-key.pem"
    settings = test_settings(database_url, tls_cert_file=str(cert), tls_key_file=str(key))
    async with serving(settings) as service:
        code, out, err = await _run(
            str(BIN / "grpcurl"), "-cacert", str(cert), service.address, "grpc.health.v1.Health/Check"
        )
        assert code == 0, err
        assert '"status": "SERVING"' in out
        # The same port refuses plaintext: nothing is served unencrypted by mistake.
        code, _, err = await _run(
            str(BIN / "grpcurl"),
            "-plaintext",
            "-max-time",
            "5",
            service.address,
            "grpc.health.v1.Health/Check",
        )
        assert code != 0


async def test_mtls_admits_clients_with_a_certificate_of_the_ca_and_refuses_the_others(
    database_url: str, tmp_path: Path
) -> None:
    ca = Authority(tmp_path)
    stranger = Authority(tmp_path, "another CA")
    server = ca.server()
    settings = test_settings(
        database_url,
        tls_cert_file=str(server.cert),
        tls_key_file=str(server.key),
        tls_client_ca_file=str(ca.cert),
    )
    async with serving(settings) as service:
        assert await _check(service.address, _trusting(ca.cert, ca.client())) == SERVING
        for refused in (_trusting(ca.cert), _trusting(ca.cert, stranger.client("intruder")), None):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _check(service.address, refused)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_tls_without_a_client_ca_needs_no_client_certificate(database_url: str, tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    server = ca.server()
    settings = test_settings(database_url, tls_cert_file=str(server.cert), tls_key_file=str(server.key))
    async with serving(settings) as service:
        assert await _check(service.address, _trusting(ca.cert)) == SERVING
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _check(service.address, _trusting(Authority(tmp_path, "other").cert))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # the server is not trusted


def test_tls_settings_are_checked_at_start_naming_the_variable_and_the_file(tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    server, other = ca.server(), ca.server("other")
    missing = tmp_path / "nowhere.pem"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = {
        "TLS_CERT_FILE": ({"TLS_CERT_FILE": missing, "TLS_KEY_FILE": server.key}, str(missing)),
        "TLS_KEY_FILE": ({"TLS_CERT_FILE": server.cert, "TLS_KEY_FILE": missing}, str(missing)),
        "TLS_CLIENT_CA_FILE": (
            {"TLS_CERT_FILE": server.cert, "TLS_KEY_FILE": server.key, "TLS_CLIENT_CA_FILE": garbage},
            str(garbage),
        ),
    }
    for variable, (env, path) in cases.items():
        with pytest.raises(ConfigError) as caught:
            Settings.from_environ({k: str(v) for k, v in env.items()})
        assert variable in str(caught.value) and path in str(caught.value)
    refusals = [
        ({"TLS_KEY_FILE": server.key}, "TLS_CERT_FILE is required"),
        ({"TLS_CERT_FILE": server.cert}, "TLS_KEY_FILE is required"),
        ({"TLS_CLIENT_CA_FILE": ca.cert}, "TLS_CLIENT_CA_FILE needs TLS_CERT_FILE"),
        ({"TLS_CERT_FILE": garbage, "TLS_KEY_FILE": server.key}, "holds no PEM certificate"),
        ({"TLS_CERT_FILE": server.cert, "TLS_KEY_FILE": garbage}, "no unencrypted PEM private"),
        ({"TLS_CERT_FILE": server.cert, "TLS_KEY_FILE": other.key}, "is not the key of"),
    ]
    for env, message in refusals:
        with pytest.raises(ConfigError, match=message):
            Settings.from_environ({k: str(v) for k, v in env.items()})
    assert Settings.from_environ({}).tls is None  # unset: plaintext


async def test_serve_refuses_a_missing_certificate_file_with_exit_code_2(tmp_path: Path) -> None:
    missing = tmp_path / "cert.pem"
    env = {
        **os.environ,
        "DATABASE_URL": "postgresql://127.0.0.1:1/none",
        "TLS_CERT_FILE": str(missing),
        "TLS_KEY_FILE": str(tmp_path / "key.pem"),
    }
    code, _, err = await _run(str(BIN / "participation-grpc"), "serve", env=env)
    assert code == 2
    assert f"TLS_CERT_FILE: cannot read {missing}" in err
