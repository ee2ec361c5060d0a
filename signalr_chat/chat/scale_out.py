"""What HISTORY_STORE=redis builds: the chat's backends that every instance shares, on the
process's one Redis client.

Apart from the modules that import redis, so that a missing `redis` extra is one clear
startup error rather than an ImportError from deep inside.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from pydantic import SecretStr

from ..hosting.errors import ConfigurationError
from .guests import Guests
from .history import HistoryStore
from .rate_limit import RateLimiter, RateLimits

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .service import Backends


class ScaleOutSettings(Protocol):
    """What the shared backends read of the chat's settings (the app's `Settings` has them all)."""

    redis_url: SecretStr | None
    redis_timeout: float
    redis_channel_prefix: str
    max_history_messages: int
    rate_limit_messages: int
    rate_limit_window_seconds: float
    guest_ttl_seconds: float
    guest_new_window_seconds: float


def open_redis(settings: ScaleOutSettings, missing_extra: str) -> Redis:
    """The process's one Redis client (one pool): the backplane's and the chat's, bounded by
    REDIS_TIMEOUT, idle connections checked every 30 s. `missing_extra`: the error without
    the `redis` extra."""
    assert settings.redis_url is not None
    try:
        from .redis_history import connect
    except ModuleNotFoundError as missing:
        if missing.name is None or missing.name.partition(".")[0] != "redis":
            raise
        raise ConfigurationError(f"{missing_extra} (redis is missing): pip install 'signalr-chat[redis]'") from None
    return connect(settings.redis_url.get_secret_value(), settings.redis_timeout)


#: The startup error for HISTORY_STORE=redis without the extra.
HISTORY_NEEDS_REDIS = "HISTORY_STORE=redis needs the redis extra"


def redis_address_limits(
    settings: ScaleOutSettings, redis: Redis, *, new_guests: int, messages: int
) -> tuple[RateLimits, RateLimits]:
    """The per-address counts (new guests, anonymous messages), in Redis for every instance;
    each instance counts alone while Redis does not answer."""
    from .redis_rate_limit import SharedRateLimiter

    prefix, timeout = settings.redis_channel_prefix, settings.redis_timeout
    counts: list[RateLimits] = []
    for limit, window in (
        (new_guests, settings.guest_new_window_seconds),
        (messages, settings.rate_limit_window_seconds),
    ):
        fallback = RateLimiter(limit, window)
        counts.append(SharedRateLimiter(redis, limit, window, prefix=prefix, timeout=timeout, fallback=fallback))
    return counts[0], counts[1]


def redis_backends(
    settings: ScaleOutSettings, redis: Redis, local_limits: RateLimits, *, signed_in_history: HistoryStore | None
) -> tuple[Backends, Backends, Guests]:
    """Signed-in users' and anonymous visitors' backends, and the guests, in Redis: history
    (guests' expiring), replies in flight, and signed-in users' rate limit (an anonymous one
    stays per instance). `signed_in_history`: a store chosen instead (none without sign-in)."""
    from .redis_guests import SharedGuestSessions
    from .redis_history import RedisHistoryStore
    from .redis_rate_limit import SharedRateLimiter
    from .service import Backends
    from .shared_replies import SharedReplies

    prefix, timeout = settings.redis_channel_prefix, settings.redis_timeout
    keep = settings.max_history_messages
    replies = SharedReplies(redis, prefix=prefix, timeout=timeout)
    limits = SharedRateLimiter(
        redis,
        settings.rate_limit_messages,
        settings.rate_limit_window_seconds,
        prefix=prefix,
        timeout=timeout,
        fallback=RateLimiter(settings.rate_limit_messages, settings.rate_limit_window_seconds),
    )
    users = signed_in_history or RedisHistoryStore(redis, keep, prefix=prefix, timeout=timeout)
    guests_history = RedisHistoryStore(redis, keep, prefix=prefix, timeout=timeout, ttl=settings.guest_ttl_seconds)
    guests = SharedGuestSessions(redis, settings.guest_ttl_seconds, prefix=prefix, timeout=timeout)
    return Backends(users, limits, replies), Backends(guests_history, local_limits, replies), guests
