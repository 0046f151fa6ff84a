"""Configuration, built once from an environment mapping; the only reader of os.environ."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from participation_grpc.tls import TlsFiles

# Obviously a development value: production refuses to start with it (Settings checks).
DEV_JWT_SECRET = "dev-only-insecure-jwt-secret-do-not-use-in-production"
ASYMMETRIC_ALGORITHMS = ("RS256", "ES256")
LOG_FORMATS = ("json", "text")
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

    def __post_init__(self) -> None:
        for name in ("write", "bulk", "confirm", "read"):
            if getattr(self, name) < 1:
                raise ConfigError(f"RATE_LIMIT_{name.upper()}_PER_MINUTE must be at least 1")


@dataclass(frozen=True)
class Settings:
    """Every setting, checked when the object is built (however it is built): a Settings that
    exists is one the service can run with."""

    database_url: str | None = None
    redis_url: str | None = None
    # Not from the environment: how long a Redis call may take before the in-process limiter
    # decides instead (and before the relay counts Redis as down), and how long to wait before
    # asking an unreachable Redis again.
    # The timeout is for a Redis that is gone, not one that is slow to be heard: at 0.25 s a
    # loaded machine (a process starved of CPU, a long GC pause) stalled the event loop past it
    # with Redis healthy, and each replica then counted alone for redis_retry_seconds, letting
    # calls over the shared budget through. A dead Redis refuses the connection at once; only a
    # vanished host makes one probe per back-off wait this long.
    redis_timeout_seconds: float = 2.0
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
    # Between NOT_SERVING and closing, so load balancers stop sending before the port goes away.
    shutdown_pause_seconds: float = 2.0
    db_pool_min_size: int = 2
    db_pool_max_size: int = 20
    db_lock_timeout_ms: int = 2000
    db_statement_timeout_ms: int = 5000
    db_acquire_timeout_ms: int = 2000
    grpc_max_concurrent_rpcs: int = 1000
    grpc_max_message_bytes: int = 1024 * 1024
    grpc_max_connection_age_seconds: float = 300.0
    grpc_max_connection_age_grace_seconds: float = 30.0
    grpc_keepalive_time_seconds: float = 60.0
    grpc_keepalive_timeout_seconds: float = 20.0
    # Participation events (contract 9): kept this many days; relayed to this Redis stream when
    # it is set, through EVENTS_REDIS_URL (REDIS_URL when unset).
    event_retention_days: int = 30
    events_stream: str | None = None
    events_redis_url: str | None = None
    # Not from the environment: how often a process looks for events a lost notification would
    # have announced, and how often a standby replica asks for the relay's lock.
    events_poll_seconds: float = 1.0
    relay_election_seconds: float = 2.0
    # Server processes sharing the port (workers.py); 1 serves in the `serve` process itself.
    workers: int = 1
    metrics_host: str = "0.0.0.0"
    # 0: no /metrics. The environment's default is 9464 (from_environ); a Settings built in code
    # (tests, tools) serves none unless asked, so two of them never fight over the port.
    metrics_port: int = 0
    log_format: str = "text"  # from_environ: json when ENVIRONMENT=production
    # Set: OpenTelemetry traces go there (OTLP over gRPC); the SDK reads its other OTEL_* itself.
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str = "participation-grpc"
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_client_ca_file: str | None = None  # set: clients must present a certificate it signed
    # The verification key, parsed once from the settings above (not a setting of its own).
    jwt_key: Any = field(init=False, repr=False, compare=False)
    # The TLS files' contents, read and checked once (None: plaintext).
    tls: TlsFiles | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, (variable, minimum) in _MINIMUMS.items():
            if getattr(self, name) < minimum:
                raise ConfigError(f"{variable} must be at least {minimum}")
        if self.db_pool_min_size > self.db_pool_max_size:
            raise ConfigError("DB_POOL_MIN_SIZE must not exceed DB_POOL_MAX_SIZE")
        if self.jwt_algorithm not in ("HS256", *ASYMMETRIC_ALGORITHMS):
            raise ConfigError(f"JWT_ALGORITHM must be one of HS256, {', '.join(ASYMMETRIC_ALGORITHMS)}")
        if self.redis_url is not None and not self.redis_url.startswith(_REDIS_SCHEMES):
            raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
        if self.events_redis_url is not None and not self.events_redis_url.startswith(_REDIS_SCHEMES):
            raise ConfigError("EVENTS_REDIS_URL must start with redis://, rediss:// or unix://")
        if self.events_stream is not None and self.relay_redis_url is None:
            raise ConfigError("EVENTS_STREAM needs EVENTS_REDIS_URL or REDIS_URL")
        if self.workers > 1 and self.rate_limit_enabled and not self.redis_url:
            # Each process would keep its own budgets: every limit would be WORKERS times itself.
            raise ConfigError(
                f"WORKERS={self.workers} needs REDIS_URL while rate limits are on "
                "(the in-process limiter would give each worker a full budget); "
                "set REDIS_URL, WORKERS=1 or RATE_LIMIT_ENABLED=false"
            )
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, not {self.log_format!r}")
        if self.metrics_port > 65535:
            raise ConfigError("METRICS_PORT must be at most 65535")
        object.__setattr__(self, "jwt_key", self._verification_key())
        try:
            tls = TlsFiles.read(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        object.__setattr__(self, "tls", tls)

    @property
    def relay_redis_url(self) -> str | None:
        return self.events_redis_url or self.redis_url

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = {k: v for k, v in (os.environ if environ is None else environ).items() if v != ""}
        return cls(
            database_url=env.get("DATABASE_URL"),
            redis_url=env.get("REDIS_URL"),
            jwt_secret_key=env.get("JWT_SECRET_KEY", "" if _prod(env) else DEV_JWT_SECRET),
            jwt_algorithm=_choice(env, "JWT_ALGORITHM", "HS256", ("HS256", *ASYMMETRIC_ALGORITHMS)),
            jwt_public_key=env.get("JWT_PUBLIC_KEY"),
            jwt_issuer=env.get("JWT_ISSUER"),
            jwt_audience=env.get("JWT_AUDIENCE"),
            jwt_leeway_seconds=_int(env, "JWT_LEEWAY_SECONDS", 30),
            page_token_secret=env.get("PAGE_TOKEN_SECRET"),
            grpc_host=env.get("GRPC_HOST", "0.0.0.0"),
            grpc_port=_int(env, "GRPC_PORT", 50051),
            rate_limit_enabled=_bool(env, "RATE_LIMIT_ENABLED", True),
            rate_limits=RateLimits(
                write=_int(env, "RATE_LIMIT_WRITE_PER_MINUTE", 10),
                bulk=_int(env, "RATE_LIMIT_BULK_PER_MINUTE", 5),
                confirm=_int(env, "RATE_LIMIT_CONFIRM_PER_MINUTE", 20),
                read=_int(env, "RATE_LIMIT_READ_PER_MINUTE", 60),
            ),
            log_level=_choice(env, "LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            environment=env.get("ENVIRONMENT", "development").lower(),
            shutdown_grace_seconds=_number(env, "SHUTDOWN_GRACE_SECONDS", 10),
            shutdown_pause_seconds=_number(env, "SHUTDOWN_PAUSE_SECONDS", 2),
            db_pool_min_size=_int(env, "DB_POOL_MIN_SIZE", 2),
            db_pool_max_size=_int(env, "DB_POOL_MAX_SIZE", 20),
            db_lock_timeout_ms=_int(env, "DB_LOCK_TIMEOUT_MS", 2000),
            db_statement_timeout_ms=_int(env, "DB_STATEMENT_TIMEOUT_MS", 5000),
            db_acquire_timeout_ms=_int(env, "DB_ACQUIRE_TIMEOUT_MS", 2000),
            grpc_max_concurrent_rpcs=_int(env, "GRPC_MAX_CONCURRENT_RPCS", 1000),
            grpc_max_message_bytes=_int(env, "GRPC_MAX_MESSAGE_BYTES", 1024 * 1024),
            grpc_max_connection_age_seconds=_number(env, "GRPC_MAX_CONNECTION_AGE_SECONDS", 300),
            grpc_max_connection_age_grace_seconds=_number(env, "GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS", 30),
            grpc_keepalive_time_seconds=_number(env, "GRPC_KEEPALIVE_TIME_SECONDS", 60),
            grpc_keepalive_timeout_seconds=_number(env, "GRPC_KEEPALIVE_TIMEOUT_SECONDS", 20),
            event_retention_days=_int(env, "EVENT_RETENTION_DAYS", 30),
            events_stream=env.get("EVENTS_STREAM"),
            events_redis_url=env.get("EVENTS_REDIS_URL"),
            workers=_int(env, "WORKERS", 1),
            metrics_host=env.get("METRICS_HOST", "0.0.0.0"),
            metrics_port=_int(env, "METRICS_PORT", 9464),
            log_format=env.get("LOG_FORMAT", "json" if _prod(env) else "text").lower(),
            otel_exporter_otlp_endpoint=env.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
            otel_service_name=env.get("OTEL_SERVICE_NAME", "participation-grpc"),
            tls_cert_file=env.get("TLS_CERT_FILE"),
            tls_key_file=env.get("TLS_KEY_FILE"),
            tls_client_ca_file=env.get("TLS_CLIENT_CA_FILE"),
        )

    def _verification_key(self) -> Any:
        """The key tokens are verified with; keys that cannot work, or that production must not
        use, stop the start rather than every call."""
        if self.jwt_algorithm in ASYMMETRIC_ALGORITHMS:
            if not self.jwt_public_key or "BEGIN PUBLIC KEY" not in self.jwt_public_key:
                raise ConfigError(
                    f"JWT_PUBLIC_KEY must hold a PEM public key when JWT_ALGORITHM={self.jwt_algorithm}"
                )
            return load_public_key(self.jwt_public_key, self.jwt_algorithm)
        if self.is_production:
            if not self.jwt_secret_key:
                raise ConfigError("JWT_SECRET_KEY is required when ENVIRONMENT=production")
            if self.jwt_secret_key == DEV_JWT_SECRET:
                raise ConfigError("JWT_SECRET_KEY is the development default; set a real secret")
            if len(self.jwt_secret_key.encode()) < MIN_SECRET_BYTES:
                raise ConfigError(f"JWT_SECRET_KEY must be at least {MIN_SECRET_BYTES} bytes")
        return self.jwt_secret_key


# The lowest value each numeric setting accepts, by field, with the variable that sets it.
_MINIMUMS: dict[str, tuple[str, float]] = {
    "jwt_leeway_seconds": ("JWT_LEEWAY_SECONDS", 0),
    "grpc_port": ("GRPC_PORT", 0),
    "metrics_port": ("METRICS_PORT", 0),
    "shutdown_grace_seconds": ("SHUTDOWN_GRACE_SECONDS", 0),
    "shutdown_pause_seconds": ("SHUTDOWN_PAUSE_SECONDS", 0),
    "db_pool_min_size": ("DB_POOL_MIN_SIZE", 0),
    "db_pool_max_size": ("DB_POOL_MAX_SIZE", 1),
    # Zero would mean "no limit" to PostgreSQL: a stuck lock could stall the service again.
    "db_lock_timeout_ms": ("DB_LOCK_TIMEOUT_MS", 1),
    "db_statement_timeout_ms": ("DB_STATEMENT_TIMEOUT_MS", 1),
    "db_acquire_timeout_ms": ("DB_ACQUIRE_TIMEOUT_MS", 1),
    "grpc_max_concurrent_rpcs": ("GRPC_MAX_CONCURRENT_RPCS", 1),
    "grpc_max_message_bytes": ("GRPC_MAX_MESSAGE_BYTES", 1024),
    "grpc_max_connection_age_seconds": ("GRPC_MAX_CONNECTION_AGE_SECONDS", 1),
    "grpc_max_connection_age_grace_seconds": ("GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS", 0),
    "grpc_keepalive_time_seconds": ("GRPC_KEEPALIVE_TIME_SECONDS", 1),
    "grpc_keepalive_timeout_seconds": ("GRPC_KEEPALIVE_TIMEOUT_SECONDS", 1),
    "workers": ("WORKERS", 1),
    "redis_timeout_seconds": ("redis_timeout_seconds", 0.001),
    "redis_retry_seconds": ("redis_retry_seconds", 0),
    "event_retention_days": ("EVENT_RETENTION_DAYS", 1),
    "events_poll_seconds": ("events_poll_seconds", 0.01),
    "relay_election_seconds": ("relay_election_seconds", 0.01),
}
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


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
    if (
        algorithm == "ES256"
        and isinstance(key, ec.EllipticCurvePublicKey)
        and isinstance(key.curve, ec.SECP256R1)
    ):
        return key
    raise ConfigError(f"JWT_PUBLIC_KEY is not a key for JWT_ALGORITHM={algorithm}")


def _prod(env: Mapping[str, str]) -> bool:
    return env.get("ENVIRONMENT", "").lower() == "production"


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None:
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{name} must be a finite number, not {raw!r}")
    return value


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
