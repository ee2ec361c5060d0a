"""Guest identities: an anonymous visitor's conversations, kept across reloads of their page.

The server issues an unguessable id (it is the guest's only credential, like a session
cookie); the page keeps it in localStorage and presents it after each connect. A guest
unseen for `ttl` seconds is forgotten, with their conversations.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Protocol

#: What a guest id looks like: token_urlsafe(24) gives 32 characters of [A-Za-z0-9_-].
_ID_LENGTH = 32
_ID_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class Guests(Protocol):
    """Guest ids: in this process, or in Redis for every instance."""

    async def renew(self, guest_id: object) -> bool:
        """Whether `guest_id` is a guest this store issued and still knows; kept alive if so
        (a forged, edited or expired id is not: nothing is looked up by what it claims)."""
        ...

    async def issue(self) -> str:
        """A new guest's id."""
        ...

    async def use(self, guest_id: object) -> str:
        """The guest's id, kept alive; a new one for a missing, malformed or expired id."""
        ...

    def touch(self, guest_id: str) -> None:
        """The guest was seen (a store that renews ids only in `use` ignores it)."""
        ...

    async def expired(self) -> list[str]:
        """Forgets and returns the guests unseen for longer than the TTL (whose conversations
        the caller then forgets); none where the store forgets them by itself."""
        ...

    async def forget(self, guest_id: str) -> None:
        """The guest asked for their data to be deleted: the id is never taken back again."""
        ...

    async def close(self) -> None: ...


def new_guest_id() -> str:
    return secrets.token_urlsafe(24)


class GuestSessions:
    """`Guests` in this process: a guest unseen for `ttl` seconds is forgotten."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._last_seen: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._last_seen)

    async def renew(self, guest_id: object) -> bool:
        if not (isinstance(guest_id, str) and self.valid(guest_id)):
            return False
        now = self._clock()
        seen = self._last_seen.get(guest_id)
        if seen is None or now - seen > self._ttl:
            return False
        self._last_seen[guest_id] = now
        return True

    async def issue(self) -> str:
        fresh = new_guest_id()
        self._last_seen[fresh] = self._clock()
        return fresh

    async def use(self, guest_id: object) -> str:
        if await self.renew(guest_id):
            assert isinstance(guest_id, str)
            return guest_id
        return await self.issue()

    def touch(self, guest_id: str) -> None:
        if guest_id in self._last_seen:
            self._last_seen[guest_id] = self._clock()

    async def expired(self) -> list[str]:
        cutoff = self._clock() - self._ttl
        gone = [guest for guest, seen in self._last_seen.items() if seen < cutoff]
        for guest in gone:
            del self._last_seen[guest]
        return gone

    async def forget(self, guest_id: str) -> None:
        self._last_seen.pop(guest_id, None)

    async def close(self) -> None:
        self._last_seen.clear()

    @staticmethod
    def valid(guest_id: str) -> bool:
        """Shaped like an id the server issues (anything else is never looked up)."""
        return len(guest_id) == _ID_LENGTH and set(guest_id) <= _ID_CHARACTERS
