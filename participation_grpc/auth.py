"""Bearer tokens: verify a JWT into the Caller it names (contract sections 3, 8); no gRPC."""

from __future__ import annotations

import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import jwt

from participation_grpc.settings import ASYMMETRIC_ALGORITHMS, Settings, load_public_key


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


class TokenVerifier:
    """Verifies access tokens with exactly one configured algorithm and key."""

    def __init__(self, settings: Settings) -> None:
        self._algorithm = settings.jwt_algorithm
        self._key: Any = (
            load_public_key(settings.jwt_public_key or "", self._algorithm)
            if self._algorithm in ASYMMETRIC_ALGORITHMS
            else settings.jwt_secret_key
        )
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_seconds

    def verify(self, authorization: str | None) -> Caller:
        if not authorization or not authorization[: len(_BEARER)].lower() == _BEARER:
            raise AuthError("TOKEN_MISSING", "Missing bearer token in the authorization metadata")
        claims = self._decode(authorization[len(_BEARER) :].strip())
        if claims.get("type", "access") != "access":
            raise AuthError("TOKEN_INVALID", "Only access tokens are accepted")
        try:
            user_id = uuid.UUID(str(claims["sub"]))
        except ValueError:
            raise AuthError("TOKEN_INVALID", "The token subject is not a user id") from None
        return Caller(user_id=user_id, claims=claims)

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
        except jwt.PyJWTError:
            raise AuthError("TOKEN_INVALID", "The token is not valid") from None


def mint_token(settings: Settings, user_id: uuid.UUID, ttl_seconds: int = 3600,
               **claims: Any) -> str:
    """A development access token signed with the configured secret (HS256 only)."""
    if settings.jwt_algorithm != "HS256":
        raise ValueError("tokens can only be minted here for HS256; use the identity service")
    now = int(time.time())
    payload = {"sub": str(user_id), "iat": now, "exp": now + ttl_seconds, "type": "access",
               **claims}
    return jwt.encode(payload, settings.jwt_secret_key, algorithm="HS256")

