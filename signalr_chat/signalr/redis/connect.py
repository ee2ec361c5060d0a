"""A redis-py asyncio client from a URL: redis://, rediss://, unix://, or Redis Sentinel.

redis-py reads the first three itself. Sentinel has no URL in redis-py, so this module reads
python-socketio's and Celery's form, `redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]`:
the sentinels to ask, the name of the monitored master, and the database. The password is
the master's; sentinels are asked without one. Failover is redis-py's: a connection to a
master that went away reconnects to whichever server the sentinels now name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

SENTINEL_SCHEME = "redis+sentinel"


@dataclass(frozen=True)
class SentinelAddress:
    """A `redis+sentinel://` URL read: the sentinels to ask, the master's name, the database and credentials."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def parse_sentinel_url(url: str) -> SentinelAddress:
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"not a {SENTINEL_SCHEME}:// URL")
    credentials, _, hosts = parts.netloc.rpartition("@")
    username, _, password = credentials.partition(":") if credentials else ("", "", "")
    sentinels = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            raise ValueError(f"sentinels are host:port, comma-separated, not {host!r}")
        sentinels.append((name.strip("[]"), int(port)))
    service, _, db = parts.path.strip("/").partition("/")
    if not service:
        raise ValueError("the URL names no service (the master's name): redis+sentinel://host:port/service")
    if db and not db.isdigit():
        raise ValueError(f"the database is a number, not {db!r}")
    return SentinelAddress(
        sentinels,
        unquote(service),
        int(db or 0),
        unquote(username) or None,
        unquote(password) or None,
    )


def client_from_url(url: str, timeout: float, **options: Any) -> aioredis.Redis:
    """A client whose every socket wait is bounded by `timeout`, with one quick retry (a
    connection Redis closed when it restarted); anything more is the caller's to handle.

    `options` (redis-py's) apply to every connection to the server, not to sentinels.
    """
    bounded: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    options = {**bounded, "retry": Retry(NoBackoff(), 1), **options}
    if urlsplit(url).scheme != SENTINEL_SCHEME:
        return aioredis.Redis.from_url(url, **options)
    address = parse_sentinel_url(url)
    sentinel = Sentinel(address.sentinels, sentinel_kwargs=bounded, **bounded)
    master: aioredis.Redis = sentinel.master_for(
        address.service, db=address.db, username=address.username, password=address.password, **options
    )
    return master
