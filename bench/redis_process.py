"""The scale-out scenario's redis-server, and what Redis says about itself.

The server is the tests' `RedisServer` (loopback, a free port, no persistence), pinned to
core 1 beside the load generator, never on the servers' core.
"""

from __future__ import annotations

from typing import Any

import redis

from tests.support.redis_server import RedisServer

from . import servers


def start() -> RedisServer:
    server = RedisServer(core=servers.CLIENT_CORE)
    server.start()
    return server


def figures(url: str, channel: bytes | None = None) -> dict[str, Any]:
    """What Redis says about itself: memory, channels, PUBLISH calls so far, and the
    subscribers of `channel` (PUBSUB NUMSUB; a hub's `all` channel has one per instance)."""
    with redis.Redis.from_url(url, socket_timeout=5) as client:
        memory: dict[str, Any] = client.info("memory")
        stats: dict[str, Any] = client.info("stats")
        commands: dict[str, Any] = client.info("commandstats")
        result = {
            "used_memory": int(memory["used_memory"]),
            "pubsub_channels": int(stats["pubsub_channels"]),
            "publish_calls": int(commands.get("cmdstat_publish", {}).get("calls", 0)),
        }
        if channel is not None:
            numsub = client.pubsub_numsub(channel)
            result["channel_subscribers"] = int(numsub[0][1]) if numsub else 0
        return result
