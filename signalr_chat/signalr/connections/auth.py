"""Authentication: a pluggable validator turns a bearer token into a user."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True, slots=True)
class User:
    """Who a connection belongs to, as the validator found them: its id (what sends to a user address),
    the claims, and when the authentication ends (for closing on expiry, and refresh)."""

    id: str
    claims: dict[str, Any] = field(default_factory=dict)
    #: When the authentication behind this user ends, in Unix seconds (a JWT's `exp`); None: it
    #: does not. A connection closes then when `close_on_authentication_expiration` is on, and its
    #: client may replace it first through authentication refresh.
    expires_at: float | None = None

    @property
    def name(self) -> str:
        return str(self.claims.get("name", self.id))

    def expired(self, now: float) -> bool:
        """The authentication has ended at Unix time `now` (a JWT is refused from its `exp` on)."""
        return self.expires_at is not None and self.expires_at <= now

    def lifetime(self, now: float) -> int | None:
        """Whole seconds left at `now`, as ASP.NET Core reports `tokenLifetimeSeconds`; None when
        the authentication does not end or has ended."""
        if self.expires_at is None:
            return None
        left = int(self.expires_at - now)
        return left if left > 0 else None


#: Gets the bearer token; returns the user, or None when the token is not valid (401).
TokenValidator = Callable[[str, web.Request], Awaitable[User | None]]


class Unauthorized(Exception):
    """The request carried a token the validator refused."""


def bearer_token(request: web.Request) -> str | None:
    """Browsers cannot set headers on WebSockets or EventSource, so the query works too."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.query.get("access_token") or None


async def authenticate(request: web.Request, validator: TokenValidator | None) -> User | None:
    """None for anonymous requests; raises Unauthorized for a refused token."""
    token = bearer_token(request)
    if token is None or validator is None:
        return None
    user = await validator(token, request)
    if user is None:
        raise Unauthorized
    return user
