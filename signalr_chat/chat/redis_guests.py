"""Guest identities every instance knows (HISTORY_STORE=redis), so an anonymous visitor's
page keeps its conversations when its connection lands on another instance.

A guest is a key with the TTL, renewed whenever the page presents the id (UseGuestSession,
after each connect); their conversations are in the anonymous Redis store, whose keys
expire the same TTL after their last change, so Redis forgets both by itself.
"""

from __future__ import annotations

from redis.asyncio import Redis

from .guests import GuestSessions, new_guest_id
from .redis_history import NAMESPACE, RedisUser


class SharedGuestSessions(RedisUser):
    """`Guests` in Redis: Redis forgets an expired id by itself, so nothing is swept here."""

    def __init__(self, redis: str | Redis, ttl: float, *, prefix: str = "", timeout: float = 5.0) -> None:
        super().__init__(redis, timeout)
        self._ttl_ms = int(ttl * 1000)
        self._prefix = f"{prefix}{NAMESPACE}guest:"

    async def renew(self, guest_id: object) -> bool:
        """Whether Redis knows the id (then kept alive): an id no instance issued is no key."""
        if not (isinstance(guest_id, str) and GuestSessions.valid(guest_id)):
            return False
        key = self._prefix + guest_id
        return bool(await self._call(lambda: self._redis.pexpire(key, self._ttl_ms)))

    async def issue(self) -> str:
        fresh = new_guest_id()
        await self._call(lambda: self._redis.set(self._prefix + fresh, 1, px=self._ttl_ms))
        return fresh

    async def use(self, guest_id: object) -> str:
        """The guest's id, kept alive; a new one for a missing, malformed or expired id."""
        if await self.renew(guest_id):
            assert isinstance(guest_id, str)
            return guest_id
        return await self.issue()

    def touch(self, guest_id: str) -> None:
        """Renewed by `use` only (the page presents its id after each connect)."""

    async def expired(self) -> list[str]:
        return []

    async def forget(self, guest_id: str) -> None:
        await self._call(lambda: self._redis.delete(self._prefix + guest_id))
