"""Configuration, built once from an environment mapping; the only reader of os.environ."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

# Obviously a development value: production refuses to start with it (check_production).
DEV_JWT_SECRET = "dev-only-insecure-jwt-secret-do-not-use-in-production"
ASYMMETRIC_ALGORITHMS = ("RS256", "ES256")
MIN_SECRET_BYTES = 32


class ConfigError(Exception):
    """A setting is missing or wrong; the message names the variable."""


@dataclass(frozen=True)
class RateLimits:
    """Calls per minute, per user, for each class of RPC (contract section 3)."""

    write: int = 10
    bulk: int = 5
    confirm: int = 20
    read: int = 60


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    redis_url: str | None = None
    # Not from the environment: how long a Redis call may take before the in-process limiter
    # decides instead, and how long to wait before asking an unreachable Redis again.
    redis_timeout_seconds: float = 0.25
    redis_retry_seconds: float = 2.0
    jwt_secret_key: str = DEV_JWT_SECRET
    jwt_algorithm: str = "HS256"
    jwt_public_key: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: int = 30
    # Signs page tokens. Unset: derived from JWT_SECRET_KEY (HS256), which every replica shares;
    # with RS256/ES256 the only shared key material is public, so set it there.
    page_token_secret: str | None = None
    grpc_host: str = "0.0.0.0"
    grpc_port: int = 50051
    rate_limit_enabled: bool = True
    rate_limits: RateLimits = field(default_factory=RateLimits)
    log_level: str = "INFO"
    environment: str = "development"
    shutdown_grace_seconds: float = 10.0
    db_pool_min_size: int = 2
    db_pool_max_size: int = 20

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = {k: v for k, v in (os.environ if environ is None else environ).items() if v != ""}
        settings = cls(
            database_url=env.get("DATABASE_URL"),
            redis_url=_redis_url(env),
            jwt_secret_key=env.get("JWT_SECRET_KEY", "" if _prod(env) else DEV_JWT_SECRET),
            jwt_algorithm=_choice(env, "JWT_ALGORITHM", "HS256", ("HS256", *ASYMMETRIC_ALGORITHMS)),
            jwt_public_key=env.get("JWT_PUBLIC_KEY"),
            jwt_issuer=env.get("JWT_ISSUER"),
            jwt_audience=env.get("JWT_AUDIENCE"),
            jwt_leeway_seconds=_int(env, "JWT_LEEWAY_SECONDS", 30, minimum=0),
            page_token_secret=env.get("PAGE_TOKEN_SECRET"),
            grpc_host=env.get("GRPC_HOST", "0.0.0.0"),
            grpc_port=_int(env, "GRPC_PORT", 50051, minimum=0),
            rate_limit_enabled=_bool(env, "RATE_LIMIT_ENABLED", True),
            rate_limits=RateLimits(
                write=_int(env, "RATE_LIMIT_WRITE_PER_MINUTE", 10, minimum=1),
                bulk=_int(env, "RATE_LIMIT_BULK_PER_MINUTE", 5, minimum=1),
                confirm=_int(env, "RATE_LIMIT_CONFIRM_PER_MINUTE", 20, minimum=1),
                read=_int(env, "RATE_LIMIT_READ_PER_MINUTE", 60, minimum=1),
            ),
            log_level=_choice(env, "LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            environment=env.get("ENVIRONMENT", "development").lower(),
            shutdown_grace_seconds=float(_int(env, "SHUTDOWN_GRACE_SECONDS", 10, minimum=0)),
            db_pool_min_size=_int(env, "DB_POOL_MIN_SIZE", 2, minimum=0),
            db_pool_max_size=_int(env, "DB_POOL_MAX_SIZE", 20, minimum=1),
        )
        settings.check_keys()
        return settings

    def check_keys(self) -> None:
        """Fail fast on signing keys that cannot work, or that production must not use."""
        if self.jwt_algorithm in ASYMMETRIC_ALGORITHMS:
            if not self.jwt_public_key or "BEGIN PUBLIC KEY" not in self.jwt_public_key:
                raise ConfigError("JWT_PUBLIC_KEY must hold a PEM public key when "
                                  f"JWT_ALGORITHM={self.jwt_algorithm}")
            load_public_key(self.jwt_public_key, self.jwt_algorithm)
            return
        if not self.is_production:
            return
        if not self.jwt_secret_key:
            raise ConfigError("JWT_SECRET_KEY is required when ENVIRONMENT=production")
        if self.jwt_secret_key == DEV_JWT_SECRET:
            raise ConfigError("JWT_SECRET_KEY is the development default; set a real secret")
        if len(self.jwt_secret_key.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(f"JWT_SECRET_KEY must be at least {MIN_SECRET_BYTES} bytes")


def load_public_key(pem: str, algorithm: str) -> Any:
    """The key verifying RS256 / ES256 tokens; one that cannot serve the algorithm stops start-up
    rather than every call."""
    try:
        # Environment files often carry a PEM on one line with literal \n separators.
        key = serialization.load_pem_public_key(pem.replace("\\n", "\n").encode())
    except ValueError:
        raise ConfigError("JWT_PUBLIC_KEY is not a readable PEM public key") from None
    if algorithm == "RS256" and isinstance(key, rsa.RSAPublicKey):
        return key
    # ES256 is ECDSA on P-256 only (RFC 7518, section 3.4).
    if (algorithm == "ES256" and isinstance(key, ec.EllipticCurvePublicKey)
            and isinstance(key.curve, ec.SECP256R1)):
        return key
    raise ConfigError(f"JWT_PUBLIC_KEY is not a key for JWT_ALGORITHM={algorithm}")


def _prod(env: Mapping[str, str]) -> bool:
    return env.get("ENVIRONMENT", "").lower() == "production"


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}")
    return value


def _redis_url(env: Mapping[str, str]) -> str | None:
    url = env.get("REDIS_URL")
    if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
    return url


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, default).upper()
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value
