"""Sign-in with HS256 bearer tokens (JWT), checked by PyJWT.

The `sub` claim is the user id, so a user's history follows them across connections;
`name` is shown where a name is wanted. The browser clients pass the token with
`accessTokenFactory`, which puts it in the header or, for WebSockets and SSE, the
`access_token` query parameter. A token's `exp` is the user's `expires_at`: where the hub closes
connections on authentication expiration, a connection ends there unless its client refreshes
the token first.
"""

from __future__ import annotations

import logging

import jwt
from aiohttp import web

from ..signalr import TokenValidator, User
from ..signalr.untrusted import Untrusted

log = logging.getLogger(__name__)


def jwt_validator(secret: str, *, audience: str | None = None, issuer: str | None = None) -> TokenValidator:
    async def validate(token: str, request: web.Request) -> User | None:
        try:
            claims = jwt.decode(
                token,
                secret,
                algorithms=["HS256"],
                audience=audience,
                issuer=issuer,
                options={"require": ["sub", "exp"], "verify_aud": audience is not None},
            )
        except jwt.PyJWTError as exc:
            log.info("refused a bearer token: %s", Untrusted(exc))
            return None
        # `exp` is required: the connection's authentication ends there (closed then, unless the
        # client refreshes it, where the hub serves authentication refresh)
        return User(str(claims["sub"]), claims, expires_at=float(claims["exp"]))

    return validate
