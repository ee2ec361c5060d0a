"""The per-user rate limit shared by instances through a real Redis: one user's messages on
two instances count against one limit, and with Redis down each instance counts alone
(nobody is refused, nothing hangs). Through two server processes: test_chat_scale_out.py."""

from __future__ import annotations

import asyncio

from signalr_chat.chat.rate_limit import RateLimiter
from signalr_chat.chat.redis_rate_limit import SharedRateLimiter
from tests.support.redis_server import RedisServer

NEVER = 30.0


def instance(redis_server: RedisServer) -> SharedRateLimiter:
    return SharedRateLimiter(redis_server.url, 3, 60, timeout=0.5, fallback=RateLimiter(3, 60))


async def test_one_limit_across_instances_then_each_alone_while_redis_is_down(redis_server: RedisServer) -> None:
    a, b = instance(redis_server), instance(redis_server)
    try:
        assert [await a.hit("user:ann"), await b.hit("user:ann"), await a.hit("user:ann")] == [0, 0, 0]
        wait = await b.hit("user:ann")
        assert 58 < wait <= 60, "the fourth message within the window, on either instance, waits for the first to age"
        assert await b.hit("user:bob") == 0, "per user"

        redis_server.kill()
        allowed = await asyncio.wait_for(asyncio.gather(*(a.hit("user:ann") for _ in range(3))), NEVER)
        assert allowed == [0, 0, 0], "counted by the instance alone while Redis is away"
        assert await asyncio.wait_for(a.hit("user:ann"), NEVER) > 0, "and still limited, per instance"
    finally:
        await a.close()
        await b.close()
