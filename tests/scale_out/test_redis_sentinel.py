"""Redis Sentinel: the URL, and the backplane following a real failover.

A master, a replica and one sentinel, each a real redis-server on a free loopback port.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from signalr_chat.signalr.protocol import JSON
from signalr_chat.signalr.redis import RedisHubLifetimeManager
from signalr_chat.signalr.redis.connect import SentinelAddress, parse_sentinel_url
from tests.hubs.test_lifetime import FakeConnection
from tests.scale_out.test_redis_lifetime import texts, until
from tests.support.listening import free_port, wait_for_port
from tests.support.redis_server import REDIS_SERVER, RedisServer


def test_the_url_names_sentinels_service_database_and_password() -> None:
    assert parse_sentinel_url("redis+sentinel://:s%40cret@h1:26379,[::1]:26380/mymaster/2") == SentinelAddress(
        [("h1", 26379), ("::1", 26380)], "mymaster", 2, None, "s@cret"
    )
    assert parse_sentinel_url("redis+sentinel://h:1/svc") == SentinelAddress([("h", 1)], "svc")


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("redis+sentinel://h:1", "names no service"),
        ("redis+sentinel://h/svc", "host:port"),
        ("redis+sentinel://h:1/svc/x", "database is a number"),
        ("redis://h:1/0", r"not a redis\+sentinel"),
    ],
)
def test_a_bad_url_says_what_is_wrong(url: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_sentinel_url(url)


class Sentinel:
    def __init__(self, master_port: int) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sentinel-test-"))
        conf = self.dir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
            "sentinel down-after-milliseconds mymaster 500\n"
            "sentinel failover-timeout mymaster 2000\n"
        )
        self.process = subprocess.Popen(
            [REDIS_SERVER, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port, self.process)  # type: ignore[arg-type]

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def sentinel_setup() -> Iterator[tuple[RedisServer, RedisServer, Sentinel]]:
    master, replica = RedisServer(), RedisServer()
    master.start()
    replica.start()
    sentinel = Sentinel(master.port)
    try:
        yield master, replica, sentinel
    finally:
        sentinel.close()
        replica.close()
        master.close()


async def test_the_backplane_follows_a_failover(sentinel_setup: tuple[RedisServer, RedisServer, Sentinel]) -> None:
    master, replica, sentinel = sentinel_setup
    direct = aioredis.from_url(replica.url)
    await direct.replicaof("127.0.0.1", master.port)
    asking = aioredis.from_url(f"redis://127.0.0.1:{sentinel.port}")

    async def ready() -> bool:
        """The replica is in sync and the sentinel knows it (it reads the master's INFO every 10 s)."""
        synced = (await direct.info("replication")).get("master_link_status") == "up"
        known = await asking.execute_command("SENTINEL", "REPLICAS", "mymaster")
        return synced and bool(known)

    deadline = time.monotonic() + 30
    while not await ready():
        assert time.monotonic() < deadline, "the replica never got known to the sentinel"
        await asyncio.sleep(0.2)
    await asking.aclose()
    await direct.aclose()
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster"
    a, b = (RedisHubLifetimeManager(url, timeout=1.0) for _ in range(2))
    for m in (a, b):
        m.configure("Tests.Hub", ["json"])
        await m.start()
    b1 = FakeConnection("b1", JSON)
    await b.on_connected(b1)
    try:
        assert a.connected and b.connected
        await a.send_all("Before", ())
        await until(lambda: texts(b1) == ["Before:"])

        master.kill()  # the sentinel promotes the replica; both managers reconnect to it
        deadline = time.monotonic() + 30
        while True:
            try:
                await a.send_all("After", ())
                break
            except ConnectionError:
                assert time.monotonic() < deadline, "no failover within 30 s"
                await asyncio.sleep(0.2)
        await until(lambda: "After:" in texts(b1), timeout=30)
        info = await aioredis.from_url(replica.url).info("replication")
        assert info["role"] == "master"
    finally:
        await a.aclose()
        await b.aclose()
