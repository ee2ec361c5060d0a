"""The chat's Redis backplane (REDIS_URL): chosen by the settings, watched by /readyz and a gauge.

The backplane is the hub layer's `RedisHubLifetimeManager`; this module is what a deployment
adds around it. A clear startup error when the `redis` extra is missing. A readiness check:
an instance whose subscription to Redis is down would miss every broadcast from the others,
so the load balancer should send new clients elsewhere until it is back. And the gauge
`signalr_chat.server.backplane.connected` (1 or 0), for the dashboards and alerts.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar, Protocol

from opentelemetry import metrics

from ..hosting.errors import ConfigurationError
from ..hosting.health import Health
from ..signalr.connections.telemetry import SERVER_METER
from .settings import Settings

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ..signalr.redis import RedisHubLifetimeManager

log = logging.getLogger(__name__)

BACKPLANE_CHECK = "backplane"
#: The startup error for REDIS_URL without the extra.
BACKPLANE_NEEDS_REDIS = "REDIS_URL needs the Redis backplane's extra"
CONNECTED_GAUGE = "signalr_chat.server.backplane.connected"


class Backplane(Protocol):
    """What readiness and the gauge read of a backplane."""

    @property
    def connected(self) -> bool: ...


def create_backplane(settings: Settings, client: Redis | None = None) -> RedisHubLifetimeManager | None:
    """The Redis lifetime manager REDIS_URL asks for; None without REDIS_URL (one instance, in memory).

    `client`: the process's Redis client, shared with the chat (opened later when None, by
    `open_redis`); the manager then leaves closing it to the process."""
    if settings.redis_url is None:
        return None
    try:
        from ..signalr.redis import RedisHubLifetimeManager
    except ModuleNotFoundError as missing:
        if missing.name is None or missing.name.partition(".")[0] != "redis":
            raise
        raise ConfigurationError(
            f"{BACKPLANE_NEEDS_REDIS} (redis is missing): pip install 'signalr-chat[redis]'"
        ) from None
    log.info("Redis backplane at %s, hub %s", settings.redis_location(), settings.hub_name)
    return RedisHubLifetimeManager(
        client if client is not None else settings.redis_url.get_secret_value(),
        channel_prefix=settings.redis_channel_prefix,
        hub_name=settings.hub_name,
        timeout=settings.redis_timeout,
        coalesce_window=settings.redis_coalesce_window_ms / 1000,
    )


def add_readiness_check(health: Health, backplane: Backplane, location: str) -> None:
    """Not ready while the subscription to Redis is down; the body names where Redis was expected."""
    problem = f"not connected to Redis at {location}"
    health.add_check(BACKPLANE_CHECK, lambda: None if backplane.connected else problem)


class BackplaneTelemetry:
    """The connected gauge; one per meter provider (an instrument is created once), any number of backplanes."""

    #: By the provider's id; each instance holds its provider, so an id is never reused.
    _instances: ClassVar[dict[int, BackplaneTelemetry]] = {}

    @classmethod
    def create(cls, meter_provider: metrics.MeterProvider) -> BackplaneTelemetry:
        instance = cls._instances.get(id(meter_provider))
        if instance is None:
            instance = cls._instances[id(meter_provider)] = cls(meter_provider)
        return instance

    def __init__(self, meter_provider: metrics.MeterProvider) -> None:
        self.meter_provider = meter_provider
        # weak: an app that is gone (tests make many) stops being observed
        self._backplanes: weakref.WeakSet[Backplane] = weakref.WeakSet()
        meter_provider.get_meter(SERVER_METER).create_observable_gauge(
            CONNECTED_GAUGE,
            callbacks=[self._observe],
            unit="1",
            description="1 while the Redis backplane's subscription is up, 0 while it is down.",
        )

    def watch(self, backplane: Backplane) -> None:
        self._backplanes.add(backplane)

    def _observe(self, _options: metrics.CallbackOptions) -> Iterator[metrics.Observation]:
        for backplane in self._backplanes:
            yield metrics.Observation(1 if backplane.connected else 0)
