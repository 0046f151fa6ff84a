"""Authentication as callers see it: every kind of token, every key type, every RPC."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from google.protobuf import descriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from participation_grpc.auth import TokenVerifier
from participation_grpc.health import SERVICE_NAME
from participation_grpc.settings import DEV_JWT_SECRET, ConfigError, Settings
from participation_grpc.v1 import participation_pb2 as pb
from participation_grpc.v1 import participation_pb2_grpc
from tests.conftest import Service, expect_error, serving
from tests.conftest import test_settings as settings_for
from tests.postgres import scratch_database

Code = grpc.StatusCode
# 64 bytes: long enough that even the refused HS512 token is signed with a proper key.
SECRET = "a-test-secret-long-enough-for-hs256-and-hs512-0123456789abcdefgh"
ISSUER, AUDIENCE = "https://auth.example.test", "participation"
USER = str(uuid.uuid4())
SERVICE = pb.DESCRIPTOR.services_by_name["ParticipationService"]
DROP = object()  # a claim left out of the token


def _pem(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_EC_KEY = ec.generate_private_key(ec.SECP256R1())

# The configurations a server is started with; tokens below are checked against one of them.
CONFIGS: dict[str, dict[str, Any]] = {
    "hs256": {"jwt_secret_key": SECRET},
    "iss_aud": {"jwt_secret_key": SECRET, "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE},
    "rs256": {"jwt_algorithm": "RS256", "jwt_public_key": _pem(RSA_KEY), "jwt_secret_key": ""},
    "es256": {"jwt_algorithm": "ES256", "jwt_public_key": _pem(EC_KEY), "jwt_secret_key": ""},
    "no_leeway": {"jwt_secret_key": SECRET, "jwt_leeway_seconds": 0},
    "long_leeway": {"jwt_secret_key": SECRET, "jwt_leeway_seconds": 120},
}


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    payload = {"sub": USER, "iat": now, "exp": now + 600, "type": "access"}
    for name, value in changes.items():
        if value is DROP:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


def later(seconds: int) -> int:
    return int(time.time()) + seconds


def hs(secret: str = SECRET, algorithm: str = "HS256", **changes: Any) -> str:
    return "Bearer " + jwt.encode(claims(**changes), secret, algorithm=algorithm)


def signed(key: Any, algorithm: str, **changes: Any) -> str:
    return "Bearer " + jwt.encode(claims(**changes), key, algorithm=algorithm)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def alg_none() -> str:
    return f"Bearer {_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims())}."


def hmac_keyed_by_public_key() -> str:
    """The classic confusion attack: HS256 'signed' with the RS256 public key as secret."""
    unsigned = f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(claims())}"
    mac = hmac.new(_pem(RSA_KEY).encode(), unsigned.encode(), hashlib.sha256).digest()
    return f"Bearer {unsigned}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


OK = None
CASES: list[tuple[str, str, Callable[[], str | None], str | None]] = [
    ("valid", "hs256", lambda: hs(), OK),
    ("valid_without_type", "hs256", lambda: hs(type=DROP), OK),
    (
        "valid_with_optional_claims",
        "hs256",
        lambda: hs(
            email="a@example.test", subscription_level="premium", ghost_mode=True, org_id=str(uuid.uuid4())
        ),
        OK,
    ),
    ("scheme_case_insensitive", "hs256", lambda: "bearer " + hs()[7:], OK),
    ("no_metadata", "hs256", lambda: None, "TOKEN_MISSING"),
    ("empty_value", "hs256", lambda: "", "TOKEN_MISSING"),
    ("basic_scheme", "hs256", lambda: "Basic dXNlcjpwYXNzd29yZA==", "TOKEN_MISSING"),
    ("token_scheme", "hs256", lambda: "Token " + hs()[7:], "TOKEN_MISSING"),
    ("jwt_without_scheme", "hs256", lambda: hs()[7:], "TOKEN_MISSING"),
    ("garbage", "hs256", lambda: "Bearer garbage", "TOKEN_INVALID"),
    ("three_garbage_parts", "hs256", lambda: "Bearer a.b.c", "TOKEN_INVALID"),
    ("bad_signature", "hs256", lambda: hs(secret=SECRET + "-other"), "TOKEN_INVALID"),
    ("tampered_payload", "hs256", lambda: _tampered(hs()), "TOKEN_INVALID"),
    ("alg_none", "hs256", alg_none, "TOKEN_INVALID"),
    ("hs512_not_configured", "hs256", lambda: hs(algorithm="HS512"), "TOKEN_INVALID"),
    ("rs256_not_configured", "hs256", lambda: signed(RSA_KEY, "RS256"), "TOKEN_INVALID"),
    ("expired", "hs256", lambda: hs(exp=later(-120)), "TOKEN_EXPIRED"),
    ("expired_within_leeway", "hs256", lambda: hs(exp=later(-10)), OK),
    ("nbf_in_future", "hs256", lambda: hs(nbf=later(120)), "TOKEN_INVALID"),
    ("nbf_within_leeway", "hs256", lambda: hs(nbf=later(10)), OK),
    ("iat_in_future", "hs256", lambda: hs(iat=later(120)), "TOKEN_INVALID"),
    ("no_exp", "hs256", lambda: hs(exp=DROP), "TOKEN_INVALID"),
    ("exp_not_a_number", "hs256", lambda: hs(exp="tomorrow"), "TOKEN_INVALID"),
    ("no_sub", "hs256", lambda: hs(sub=DROP), "TOKEN_INVALID"),
    ("empty_sub", "hs256", lambda: hs(sub=""), "TOKEN_INVALID"),
    ("sub_not_uuid", "hs256", lambda: hs(sub="alice"), "TOKEN_INVALID"),
    ("sub_a_number", "hs256", lambda: hs(sub=12345), "TOKEN_INVALID"),
    ("sub_in_braces", "hs256", lambda: hs(sub="{" + USER + "}"), "TOKEN_INVALID"),
    ("sub_as_urn", "hs256", lambda: hs(sub="urn:uuid:" + USER), "TOKEN_INVALID"),
    ("sub_without_dashes", "hs256", lambda: hs(sub=USER.replace("-", "")), "TOKEN_INVALID"),
    ("sub_upper_case", "hs256", lambda: hs(sub=USER.upper()), OK),
    ("exp_1e308", "hs256", lambda: hs(exp=1e308), "TOKEN_INVALID"),
    ("exp_year_10000", "hs256", lambda: hs(exp=253_402_300_800), "TOKEN_INVALID"),
    ("exp_a_fraction", "hs256", lambda: hs(exp=later(600) + 0.5), OK),
    ("nbf_1e308_in_the_past_sense", "hs256", lambda: hs(nbf=-1e308), "TOKEN_INVALID"),
    ("refresh_token", "hs256", lambda: hs(type="refresh"), "TOKEN_INVALID"),
    ("reset_token", "hs256", lambda: hs(type="password_reset"), "TOKEN_INVALID"),
    ("type_null", "hs256", lambda: hs(type=None), "TOKEN_INVALID"),
    ("iss_aud_ignored_when_unset", "hs256", lambda: hs(iss="https://x.test", aud="x"), OK),
    ("iss_aud_match", "iss_aud", lambda: hs(iss=ISSUER, aud=AUDIENCE), OK),
    ("aud_array_with_ours", "iss_aud", lambda: hs(iss=ISSUER, aud=["other", AUDIENCE]), OK),
    ("aud_array_without_ours", "iss_aud", lambda: hs(iss=ISSUER, aud=["a", "b"]), "TOKEN_INVALID"),
    ("wrong_iss", "iss_aud", lambda: hs(iss="https://evil.test", aud=AUDIENCE), "TOKEN_INVALID"),
    ("no_iss", "iss_aud", lambda: hs(aud=AUDIENCE), "TOKEN_INVALID"),
    ("wrong_aud", "iss_aud", lambda: hs(iss=ISSUER, aud="billing"), "TOKEN_INVALID"),
    ("no_aud", "iss_aud", lambda: hs(iss=ISSUER), "TOKEN_INVALID"),
    ("rs256_valid", "rs256", lambda: signed(RSA_KEY, "RS256"), OK),
    ("rs256_other_key", "rs256", lambda: signed(OTHER_RSA_KEY, "RS256"), "TOKEN_INVALID"),
    ("rs256_expired", "rs256", lambda: signed(RSA_KEY, "RS256", exp=later(-120)), "TOKEN_EXPIRED"),
    ("rs256_refresh", "rs256", lambda: signed(RSA_KEY, "RS256", type="refresh"), "TOKEN_INVALID"),
    ("hs256_when_rs256", "rs256", lambda: hs(), "TOKEN_INVALID"),
    ("hs256_keyed_by_public_key", "rs256", hmac_keyed_by_public_key, "TOKEN_INVALID"),
    ("es256_when_rs256", "rs256", lambda: signed(EC_KEY, "ES256"), "TOKEN_INVALID"),
    ("es256_valid", "es256", lambda: signed(EC_KEY, "ES256"), OK),
    ("es256_other_key", "es256", lambda: signed(OTHER_EC_KEY, "ES256"), "TOKEN_INVALID"),
    ("rs256_when_es256", "es256", lambda: signed(RSA_KEY, "RS256"), "TOKEN_INVALID"),
    ("no_leeway_expired_5s_ago", "no_leeway", lambda: hs(exp=later(-5)), "TOKEN_EXPIRED"),
    ("no_leeway_nbf_in_5s", "no_leeway", lambda: hs(nbf=later(5)), "TOKEN_INVALID"),
    ("long_leeway_expired_90s_ago", "long_leeway", lambda: hs(exp=later(-90)), OK),
    ("long_leeway_nbf_in_90s", "long_leeway", lambda: hs(nbf=later(90)), OK),
]


def _tampered(authorization: str) -> str:
    header, _, signature = authorization[7:].split(".")
    return f"Bearer {header}.{_b64(claims(sub=str(uuid.uuid4())))}.{signature}"


@pytest.fixture(scope="module")
async def module_database_url(template: tuple[str, str]) -> AsyncIterator[str]:
    """One migrated database for this module's servers: these tests only read from it."""
    dsn, template_name = template
    async with scratch_database(dsn, "participation_auth", template_name) as url:
        yield url


Channels = Callable[[str], Awaitable[grpc.aio.Channel]]


@pytest.fixture(scope="module")
async def channel_to(module_database_url: str) -> AsyncIterator[Channels]:
    """A channel to a server started (once per module) with one of CONFIGS."""
    channels: dict[str, grpc.aio.Channel] = {}
    async with contextlib.AsyncExitStack() as servers:

        async def get(config: str) -> grpc.aio.Channel:
            if config not in channels:
                started = await servers.enter_async_context(
                    serving(settings_for(module_database_url, **CONFIGS[config]))
                )
                channels[config] = started.channel
            return channels[config]

        yield get


def metadata(authorization: str | None) -> tuple[tuple[str, str], ...]:
    return () if authorization is None else (("authorization", authorization),)


def method_call(
    channel: grpc.aio.Channel, method: descriptor.MethodDescriptor
) -> tuple[grpc.aio.UnaryUnaryMultiCallable[Any, Any], Any]:
    """A callable for any RPC and a request whose every id is malformed."""
    request_class = getattr(pb, method.input_type.name)
    response_class = getattr(pb, method.output_type.name)
    call = channel.unary_unary(
        f"/{SERVICE.full_name}/{method.name}",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    request = request_class(
        **{
            f.name: "not-a-uuid"
            for f in method.input_type.fields
            if f.name.endswith("_id") and f.type == f.TYPE_STRING
        }
    )
    return call, request


@pytest.mark.parametrize(
    ("config", "authorization", "reason"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
async def test_token(
    channel_to: Channels, config: str, authorization: Callable[[], str | None], reason: str | None
) -> None:
    stub = participation_pb2_grpc.ParticipationServiceStub(await channel_to(config))
    call = stub.ListUserActivities(pb.ListUserActivitiesRequest(), metadata=metadata(authorization()))
    if reason is None:
        await call
    else:
        await expect_error(call, Code.UNAUTHENTICATED, reason)


@pytest.mark.parametrize("method", list(SERVICE.methods), ids=lambda m: m.name)
async def test_every_rpc_needs_a_token(channel_to: Channels, method: descriptor.MethodDescriptor) -> None:
    call, request = method_call(await channel_to("hs256"), method)
    await expect_error(call(request), Code.UNAUTHENTICATED, "TOKEN_MISSING")


@pytest.mark.parametrize("method", list(SERVICE.methods), ids=lambda m: m.name)
async def test_authentication_comes_before_request_validation(
    channel_to: Channels, method: descriptor.MethodDescriptor
) -> None:
    call, request = method_call(await channel_to("hs256"), method)
    await expect_error(
        call(request, metadata=metadata("Bearer garbage")), Code.UNAUTHENTICATED, "TOKEN_INVALID"
    )
    await expect_error(
        call(request, metadata=metadata(hs(exp=later(-120)))), Code.UNAUTHENTICATED, "TOKEN_EXPIRED"
    )


async def test_health_needs_no_token(channel_to: Channels) -> None:
    stub = health_pb2_grpc.HealthStub(await channel_to("hs256"))
    for service in ("", SERVICE_NAME):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_needs_no_token(channel_to: Channels) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(await channel_to("hs256"))
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    replies = [reply async for reply in stub.ServerReflectionInfo(iter([request]))]
    names = {s.name for s in replies[0].list_services_response.service}
    assert {SERVICE.full_name, "grpc.health.v1.Health"} <= names


async def test_the_caller_is_the_token_subject_whatever_the_optional_claims(service: Service) -> None:
    organizer, joiner = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer)
    token = service.token(
        joiner, email="j@example.test", subscription_level="club", ghost_mode=False, org_id=str(uuid.uuid4())
    )
    reply = await service.stub.JoinActivity(
        pb.JoinActivityRequest(activity_id=str(activity)), metadata=metadata(f"Bearer {token}")
    )
    assert reply.user_id == str(joiner)


# --- configuration -------------------------------------------------------------------------

PRODUCTION = {"ENVIRONMENT": "production", "DATABASE_URL": "postgresql://db.invalid/x"}


@pytest.mark.parametrize(
    "secret", [None, "short-secret", DEV_JWT_SECRET], ids=["missing", "short", "development_default"]
)
def test_production_refuses_an_unsafe_secret(secret: str | None) -> None:
    env = {**PRODUCTION, **({} if secret is None else {"JWT_SECRET_KEY": secret})}
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY"):
        Settings.from_environ(env)


@pytest.mark.parametrize(
    "secret", [None, "short-secret", DEV_JWT_SECRET], ids=["missing", "short", "development_default"]
)
def test_serve_in_production_exits_naming_the_secret(secret: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "ENVIRONMENT"))}
    env.update(PRODUCTION)
    if secret is not None:
        env["JWT_SECRET_KEY"] = secret
    done = subprocess.run(
        [sys.executable, "-m", "participation_grpc", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "JWT_SECRET_KEY" in done.stderr


def test_production_accepts_a_long_secret_and_development_has_a_default() -> None:
    assert Settings.from_environ({**PRODUCTION, "JWT_SECRET_KEY": SECRET}).jwt_secret_key == SECRET
    assert Settings.from_environ({}).jwt_secret_key == DEV_JWT_SECRET


def test_production_with_a_public_key_needs_no_secret() -> None:
    settings = Settings.from_environ(
        {**PRODUCTION, "JWT_ALGORITHM": "rs256", "JWT_PUBLIC_KEY": _pem(RSA_KEY)}
    )
    assert settings.jwt_algorithm == "RS256"


def test_public_key_on_one_line_with_escaped_newlines_is_read() -> None:
    one_line = _pem(EC_KEY).replace("\n", "\\n")
    settings = Settings.from_environ({"JWT_ALGORITHM": "ES256", "JWT_PUBLIC_KEY": one_line})
    caller = TokenVerifier(settings).verify(signed(EC_KEY, "ES256"))
    assert str(caller.user_id) == USER


def test_a_directly_built_settings_cannot_skip_the_checks() -> None:
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY"):
        Settings(environment="production")
    with pytest.raises(ConfigError, match="JWT_PUBLIC_KEY"):
        Settings(jwt_algorithm="RS256", jwt_public_key="not a key")
    with pytest.raises(ConfigError, match="DB_LOCK_TIMEOUT_MS"):
        Settings(db_lock_timeout_ms=0)
    with pytest.raises(ConfigError, match="GRPC_PORT"):
        Settings(grpc_port=-1)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"JWT_ALGORITHM": "RS256"}, "JWT_PUBLIC_KEY"),
        ({"JWT_ALGORITHM": "RS256", "JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\nxx\n"}, "JWT_PUBLIC_KEY"),
        ({"JWT_ALGORITHM": "RS256", "JWT_PUBLIC_KEY": _pem(EC_KEY)}, "JWT_PUBLIC_KEY"),
        ({"JWT_ALGORITHM": "ES256", "JWT_PUBLIC_KEY": _pem(RSA_KEY)}, "JWT_PUBLIC_KEY"),
        (
            {"JWT_ALGORITHM": "ES256", "JWT_PUBLIC_KEY": _pem(ec.generate_private_key(ec.SECP384R1()))},
            "JWT_PUBLIC_KEY",
        ),
        ({"JWT_ALGORITHM": "HS512"}, "JWT_ALGORITHM"),
        ({"JWT_ALGORITHM": "none"}, "JWT_ALGORITHM"),
        ({"JWT_LEEWAY_SECONDS": "-1"}, "JWT_LEEWAY_SECONDS"),
    ],
    ids=[
        "rs256_without_key",
        "unreadable_key",
        "ec_key_for_rs256",
        "rsa_key_for_es256",
        "p384_key_for_es256",
        "hs512",
        "none",
        "negative_leeway",
    ],
)
def test_unusable_token_settings_stop_start_up(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_environ(env)


def test_leeway_defaults_to_thirty_seconds() -> None:
    assert Settings.from_environ({}).jwt_leeway_seconds == 30
