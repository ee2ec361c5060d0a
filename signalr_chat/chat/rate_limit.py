"""A sliding-window limit on messages per user (or per anonymous connection)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Protocol


class RateLimiter:
    """A sliding window of hits per key in this process: how long a key must wait before its next
    message is allowed (0 when it may send now); the in-memory backend of the rate limits."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._next_sweep = clock() + window

    def __len__(self) -> int:
        return len(self._hits)

    def hit(self, key: str) -> float:
        """Count one message; 0 when allowed, else the seconds until the next one is."""
        if self._limit <= 0:
            return 0.0
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
        while hits and hits[0] <= now - self._window:
            hits.popleft()
        if len(hits) >= self._limit:
            return hits[0] + self._window - now
        hits.append(now)
        return 0.0

    def _sweep(self, now: float) -> None:
        """Drop keys with no hit inside the window, so idle users cost nothing."""
        self._next_sweep = now + self._window
        cutoff = now - self._window
        for key in [k for k, hits in self._hits.items() if not hits or hits[-1] <= cutoff]:
            del self._hits[key]

    def forget(self, key: str) -> None:
        self._hits.pop(key, None)


class RateLimits(Protocol):
    """Counts messages per conversation key; in this process, or in Redis for every instance."""

    async def hit(self, key: str) -> float:
        """Count one message; 0 when allowed, else the seconds until the next one is."""
        ...

    async def forget(self, key: str) -> None:
        """The key's owner is gone (an anonymous connection closed)."""
        ...

    async def close(self) -> None: ...


class InMemoryRateLimits:
    """`RateLimits` counted by this process alone."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def hit(self, key: str) -> float:
        return self.limiter.hit(key)

    async def forget(self, key: str) -> None:
        self.limiter.forget(key)

    async def close(self) -> None:
        return None
