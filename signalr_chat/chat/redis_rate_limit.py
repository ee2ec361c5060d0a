"""The per-user rate limit, shared by every instance (HISTORY_STORE=redis), with `limits`.

A moving window, like the in-process `RateLimiter`: the same N messages per window, but
counted in Redis (by `limits`' scripts), so a user whose messages land on several instances
cannot multiply the limit by their number. When Redis does not answer within the timeout,
the instance counts on its own until it does: the limit then holds per instance, and no
message is refused (or hangs) because Redis is away.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, cast

from limits import RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .rate_limit import RateLimiter
from .redis_history import NAMESPACE, RedisUser

log = logging.getLogger(__name__)


class SharedRateLimiter(RedisUser):
    """`RateLimits` counted in Redis by every instance."""

    def __init__(
        self,
        redis: str | Redis,
        limit: int,
        window: float,
        *,
        prefix: str = "",
        timeout: float = 5.0,
        fallback: RateLimiter,
    ) -> None:
        super().__init__(redis, timeout)  # the chat's pool, so Sentinel URLs and the timeouts are the chat's
        self._limit = limit
        self._fallback = fallback
        storage = RedisStorage(
            "async+redis://",
            implementation="redispy",
            key_prefix=f"{prefix}{NAMESPACE}limits",
            # limits' options are typed as scalars; redis-py's bridge takes a pool too
            connection_pool=cast(Any, self._redis.connection_pool),
        )
        self._limiter = MovingWindowRateLimiter(storage)
        #: `limits` counts whole seconds: a window of 1.5 s is counted as 2 s.
        self._item = RateLimitItemPerSecond(max(limit, 1), max(1, math.ceil(window)))

    async def hit(self, key: str) -> float:
        """Count one message; 0 when allowed, else the seconds until the next one is."""
        if self._limit <= 0:
            return 0.0
        try:
            async with asyncio.timeout(self._timeout):
                if await self._limiter.hit(self._item, key):
                    return 0.0
                stats = await self._limiter.get_window_stats(self._item, key)
        except (TimeoutError, RedisError) as exc:
            log.warning("rate limit counted on this instance only: Redis did not answer (%r)", exc)
            return self._fallback.hit(key)
        return max(stats.reset_time - time.time(), 0.001)

    async def forget(self, key: str) -> None:
        """Redis forgets a window by itself when it ends."""
        self._fallback.forget(key)
