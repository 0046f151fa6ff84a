"""Bearer tokens: verify a JWT into the Caller it names (contract sections 3, 8); no gRPC."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import jwt

from participation_grpc.settings import Settings


@dataclass(frozen=True)
class Caller:
    """The end user a call acts for: the token's `sub`, never anything from the request."""

    user_id: uuid.UUID
    claims: dict[str, Any] = field(default_factory=dict, compare=False)


class AuthError(Exception):
    """A refused token; `reason` is TOKEN_MISSING, TOKEN_INVALID or TOKEN_EXPIRED."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# Set by the authentication interceptor for the duration of one call.
current_caller: ContextVar[Caller] = ContextVar("current_caller")

_BEARER = "bearer "
_YEAR_10000 = 253_402_300_800  # 10000-01-01T00:00:00Z


class TokenVerifier:
    """Verifies access tokens with exactly one configured algorithm and key.

    Callers send the same token on every call for its whole lifetime, so verified tokens are
    remembered (a bounded map keyed by the token itself, each entry kept no longer than the
    token's `exp`): a repeated call costs a dictionary lookup instead of a signature check.
    """

    def __init__(
        self, settings: Settings, cache_size: int = 10_000, clock: Callable[[], float] = time.time
    ) -> None:
        self._algorithm = settings.jwt_algorithm
        self._key: Any = settings.jwt_key
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_seconds
        self._clock = clock
        self._cache_size = cache_size
        self._verified: dict[str, tuple[Caller, float]] = {}

    def verify(self, authorization: str | None) -> Caller:
        if not authorization or not authorization[: len(_BEARER)].lower() == _BEARER:
            raise AuthError("TOKEN_MISSING", "Missing bearer token in the authorization metadata")
        token = authorization[len(_BEARER) :].strip()
        known = self._verified.get(token)
        if known is not None and self._clock() < known[1]:
            return known[0]
        caller, expires_at = self._check(token)
        if len(self._verified) >= self._cache_size:
            self._forget_some()
        self._verified[token] = (caller, expires_at)
        return caller

    def _check(self, token: str) -> tuple[Caller, float]:
        claims = self._decode(token)
        if claims.get("type", "access") != "access":
            raise AuthError("TOKEN_INVALID", "Only access tokens are accepted")
        user_id = _user_id(claims["sub"])
        for name in ("exp", "nbf", "iat"):
            if name in claims and not _is_numeric_date(claims[name]):
                raise AuthError("TOKEN_INVALID", f"The token's {name} is not a valid time")
        return Caller(user_id=user_id, claims=claims), float(claims["exp"])

    def _forget_some(self) -> None:
        """Drop expired entries; when all are live, the oldest tenth (dicts keep insertion order)."""
        now = self._clock()
        self._verified = {t: v for t, v in self._verified.items() if v[1] > now}
        if len(self._verified) >= self._cache_size:
            for token in list(self._verified)[: max(1, self._cache_size // 10)]:
                del self._verified[token]

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                self._key,
                algorithms=[self._algorithm],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": self._audience is not None,
                    "verify_iss": self._issuer is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("TOKEN_EXPIRED", "The token has expired") from None
        except (jwt.PyJWTError, ValueError, TypeError, OverflowError):
            raise AuthError("TOKEN_INVALID", "The token is not valid") from None


def _user_id(sub: object) -> uuid.UUID:
    """`sub` in canonical UUID text only: uuid.UUID alone would also take braces, URNs and bare
    hex, and one user would then have several spellings."""
    text = sub if isinstance(sub, str) else ""
    try:
        user_id = uuid.UUID(text) if len(text) == 36 else None
    except ValueError:
        user_id = None
    if user_id is None or str(user_id) != text.lower():
        raise AuthError("TOKEN_INVALID", "The token subject is not a user id")
    return user_id


def _is_numeric_date(value: object) -> bool:
    """A JWT NumericDate (RFC 7519) this service can mean: a finite number of seconds between
    1970 and the year 10000, so `exp: 1e308` is no token that never expires."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < _YEAR_10000


def mint_token(settings: Settings, user_id: uuid.UUID, ttl_seconds: int = 3600, **claims: Any) -> str:
    """A development access token signed with the configured secret (HS256 only)."""
    if settings.jwt_algorithm != "HS256":
        raise ValueError("tokens can only be minted here for HS256; use the identity service")
    now = int(time.time())
    payload = {"sub": str(user_id), "iat": now, "exp": now + ttl_seconds, "type": "access", **claims}
    return jwt.encode(payload, settings.jwt_secret_key, algorithm="HS256")
