"""Authentication: a pluggable validator turns a bearer token into a user."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True, slots=True)
class User:
    id: str
    claims: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.claims.get("name", self.id))


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
