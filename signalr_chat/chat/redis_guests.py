"""Guest identities every instance knows (HISTORY_STORE=redis), so an anonymous visitor's
page keeps its conversations when its connection lands on another instance.

A guest is a key with the TTL, renewed whenever the page presents the id (UseGuestSession,
after each connect); their conversations are in the anonymous Redis store, whose keys
expire the same TTL after their last change, so Redis forgets both by itself.
"""

from __future__ import annotations

import secrets

from .guests import GuestSessions
from .redis_history import NAMESPACE, bounded, connect


class SharedGuestSessions:
    def __init__(self, url: str, ttl: float, *, prefix: str = "", timeout: float = 5.0) -> None:
        self._ttl_ms = int(ttl * 1000)
        self._timeout = timeout
        self._prefix = f"{prefix}{NAMESPACE}guest:"
        self._redis = connect(url, timeout)

    async def use(self, guest_id: object) -> str:
        """The guest's id, kept alive; a new one for a missing, malformed or expired id."""
        if isinstance(guest_id, str) and GuestSessions.valid(guest_id):
            key = self._prefix + guest_id
            if await bounded(lambda: self._redis.pexpire(key, self._ttl_ms), self._timeout):
                return guest_id
        fresh = secrets.token_urlsafe(24)
        await bounded(lambda: self._redis.set(self._prefix + fresh, 1, px=self._ttl_ms), self._timeout)
        return fresh

    async def close(self) -> None:
        await self._redis.aclose()
