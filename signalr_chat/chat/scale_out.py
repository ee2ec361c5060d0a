"""What HISTORY_STORE=redis builds: the history store and the replies every instance shares.

Apart from the modules that import redis, so that a missing `redis` extra is one clear
startup error rather than an ImportError from deep inside.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..ai import ConfigurationError
from ..settings import Settings
from .history import HistoryStore
from .rate_limit import RateLimiter

if TYPE_CHECKING:
    from .redis_guests import SharedGuestSessions
    from .redis_rate_limit import SharedRateLimiter
    from .shared_replies import SharedReplies


def redis_history_store(settings: Settings, *, ttl: float | None = None) -> HistoryStore:
    """HISTORY_STORE=redis: the store every instance shares (the `redis` extra must be installed)."""
    assert settings.redis_url is not None  # the settings refuse history_store=redis without it
    try:
        from .redis_history import RedisHistoryStore
    except ModuleNotFoundError as missing:
        if missing.name is None or missing.name.partition(".")[0] != "redis":
            raise
        raise ConfigurationError(
            "HISTORY_STORE=redis needs the redis extra (redis is missing): pip install 'signalr-chat[redis]'"
        ) from None
    return RedisHistoryStore(
        settings.redis_url.get_secret_value(),
        settings.max_history_messages,
        prefix=settings.redis_channel_prefix,
        timeout=settings.redis_timeout,
        ttl=ttl,
    )


def shared_replies(settings: Settings) -> SharedReplies:
    """With HISTORY_STORE=redis, replies in flight are shared too (after `redis_history_store`,
    which has checked that the extra is there)."""
    from .shared_replies import SharedReplies

    assert settings.redis_url is not None
    return SharedReplies(
        settings.redis_url.get_secret_value(), prefix=settings.redis_channel_prefix, timeout=settings.redis_timeout
    )


def shared_rate_limiter(settings: Settings) -> SharedRateLimiter:
    """Signed-in users' rate limit, counted in Redis by every instance."""
    from .redis_rate_limit import SharedRateLimiter

    assert settings.redis_url is not None
    return SharedRateLimiter(
        settings.redis_url.get_secret_value(),
        settings.rate_limit_messages,
        settings.rate_limit_window_seconds,
        prefix=settings.redis_channel_prefix,
        timeout=settings.redis_timeout,
        fallback=RateLimiter(settings.rate_limit_messages, settings.rate_limit_window_seconds),
    )


def shared_guest_sessions(settings: Settings) -> SharedGuestSessions:
    """Guests known to every instance, forgotten GUEST_TTL_SECONDS after their last visit."""
    from .redis_guests import SharedGuestSessions

    assert settings.redis_url is not None
    return SharedGuestSessions(
        settings.redis_url.get_secret_value(),
        settings.guest_ttl_seconds,
        prefix=settings.redis_channel_prefix,
        timeout=settings.redis_timeout,
    )
