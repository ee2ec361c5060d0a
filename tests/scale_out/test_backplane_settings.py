"""The scale-out settings and what the app makes of them, against a real `redis-server`.

REDIS_URL (schemes, never shown with its password), REDIS_CHANNEL_PREFIX and HUB_NAME as the
channels a real Redis sees, the missing `redis` extra as a clear startup error, /readyz and
the `signalr_chat.server.backplane.connected` gauge following Redis killed and restarted.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from pydantic import ValidationError

from signalr_chat.app.application import create_app
from signalr_chat.app.backplane import CONNECTED_GAUGE
from signalr_chat.app.drain import GracefulDrain
from signalr_chat.app.settings import DEFAULT_HUB_NAME, Settings
from signalr_chat.chat import ChatHub
from signalr_chat.hosting import ConfigurationError
from signalr_chat.hosting.server import DRAIN
from signalr_chat.signalr import HubLifetimeManager, InMemoryHubLifetimeManager
from signalr_chat.signalr.hubs.endpoint import default_hub_name
from signalr_chat.signalr.redis import RedisHubLifetimeManager
from tests.support.chat_fixtures import offline_env, offline_settings
from tests.support.conditions import until
from tests.support.listening import free_port
from tests.support.paths import ROOT
from tests.support.redis_server import RedisServer

PASSWORD = "hunter2-redis-password"


class TestSettings:
    @pytest.mark.parametrize(
        "url",
        [
            "redis://127.0.0.1:6379/0",
            f"redis://:{PASSWORD}@cache.internal:6380/2",
            f"rediss://app:{PASSWORD}@cache.redis.cache.windows.net:6380",
            "unix:///run/redis/redis.sock?db=1",
            f"redis+sentinel://:{PASSWORD}@10.0.0.1:26379,10.0.0.2:26379/mymaster/1",
        ],
    )
    def test_redis_url_schemes(self, url: str) -> None:
        settings = offline_settings(redis_url=url)
        assert settings.redis_url is not None and settings.redis_url.get_secret_value() == url
        assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.model_dump())
        location = settings.redis_location()
        assert location is not None and PASSWORD not in location and "app:" not in location

    def test_location_keeps_what_an_operator_needs(self) -> None:
        settings = offline_settings(redis_url=f"rediss://app:{PASSWORD}@cache.internal:6380/2")
        assert settings.redis_location() == "rediss://cache.internal:6380/2"
        assert offline_settings(redis_url="unix:///run/redis.sock").redis_location() == "unix:///run/redis.sock"

    def test_other_schemes_are_refused_without_echoing_the_url(self) -> None:
        with pytest.raises(ValidationError) as raised:
            offline_settings(redis_url=f"http://user:{PASSWORD}@cache:6379")
        schemes = "redis://, rediss://, unix:// or redis+sentinel://"
        assert f"REDIS_URL must start with {schemes}, not http" in str(raised.value)
        assert PASSWORD not in str(raised.value)

    def test_empty_redis_url_is_unset(self) -> None:
        assert offline_settings(redis_url="").redis_url is None

    def test_defaults(self) -> None:
        settings = offline_settings()
        assert settings.redis_url is None
        assert settings.redis_channel_prefix == ""
        assert settings.redis_timeout == 5.0
        assert settings.hub_name == DEFAULT_HUB_NAME == default_hub_name(ChatHub), "map_hub's own default"

    def test_timeout_must_be_positive(self) -> None:
        with pytest.raises(ValidationError):
            offline_settings(redis_timeout=0)


def test_missing_redis_extra_is_a_clear_startup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # as in an install without the extra: `import redis` fails
    monkeypatch.setitem(sys.modules, "redis", None)
    for name in [n for n in sys.modules if n.startswith(("redis.", "signalr_chat.signalr.redis"))]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ConfigurationError, match=r"pip install 'signalr-chat\[redis\]'") as raised:
        create_app(offline_settings(redis_url=f"redis://:{PASSWORD}@127.0.0.1:9/0"))
    assert "REDIS_URL" in str(raised.value) and PASSWORD not in str(raised.value)


def chat_lifetimes(settings: Settings) -> set[HubLifetimeManager]:
    drain = create_app(settings)[DRAIN]
    assert isinstance(drain, GracefulDrain)
    return {endpoint.lifetime for endpoint in drain.endpoints}


def test_redis_url_chooses_the_redis_backplane_for_both_paths() -> None:
    assert {type(m) for m in chat_lifetimes(offline_settings())} == {InMemoryHubLifetimeManager}
    [backplane] = chat_lifetimes(offline_settings(redis_url="redis://127.0.0.1:9/0", hub_name="Chat.Hubs.ChatHub"))
    assert isinstance(backplane, RedisHubLifetimeManager)
    assert backplane.hub_name == "Chat.Hubs.ChatHub"
    # .NET peers' clients may speak either: every send carries both, under these names
    assert [p.name for p in backplane.protocols] == ["json", "messagepack"]


def test_the_server_process_says_how_to_install_the_extra() -> None:
    """`python -m signalr_chat` with REDIS_URL and no redis-py: one line, the command, exit 1."""
    run_without_redis = "import sys; sys.modules['redis'] = None; from signalr_chat.__main__ import main; main()"
    env = offline_env(redis_url=f"redis://:{PASSWORD}@127.0.0.1:9/0", port=str(free_port()))
    result = subprocess.run(
        [sys.executable, "-c", run_without_redis], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: REDIS_URL needs the Redis backplane's extra (redis is missing): pip install 'signalr-chat[redis]'"
    )
    assert "Traceback" not in result.stderr and PASSWORD not in result.stderr


async def channels(redis_server: RedisServer) -> set[str]:
    client = aioredis.from_url(redis_server.url, decode_responses=True)
    try:
        return set(await client.pubsub_channels())
    finally:
        await client.aclose()


async def test_without_redis_url_nothing_reaches_redis(aiohttp_client: Any, redis_server: RedisServer) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(create_app(offline_settings()))
    assert (await client.get("/readyz")).status == 200
    assert await channels(redis_server) == set()


@pytest.mark.parametrize(
    ("prefix", "hub"),
    [("", DEFAULT_HUB_NAME), ("MyApp", "Chat.Hubs.ChatHub")],
    ids=["defaults", "dotnet-peer"],
)
async def test_prefix_and_hub_name_make_the_channels(
    aiohttp_client: Any, redis_server: RedisServer, prefix: str, hub: str
) -> None:
    settings = offline_settings(redis_url=redis_server.url, redis_channel_prefix=prefix, hub_name=hub)
    await aiohttp_client(create_app(settings))
    expected = f"{prefix}{hub}:all"  # StackExchange.Redis: the prefix, raw, then SignalR's channel

    async def subscribed() -> bool:
        return expected in await channels(redis_server)

    await until(subscribed, f"a subscription to {expected}", timeout=15)
    assert all(c.startswith(f"{prefix}{hub}:") for c in await channels(redis_server))


async def test_readyz_follows_redis_and_the_gauge_too(aiohttp_client: Any, redis_server: RedisServer) -> None:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    try:
        settings = offline_settings(redis_url=redis_server.url, redis_timeout=1)
        client: TestClient[Any, Any] = await aiohttp_client(create_app(settings, meter_provider=meter_provider))

        def gauge() -> list[int]:
            data = reader.get_metrics_data()
            return [
                int(point.value)
                for resource in (data.resource_metrics if data else ())
                for scope in resource.scope_metrics
                for metric in scope.metrics
                if metric.name == CONNECTED_GAUGE
                for point in metric.data.data_points
            ]

        async def ready() -> bool:
            return (await client.get("/readyz")).status == 200

        async def not_ready() -> bool:
            return (await client.get("/readyz")).status == 503

        await until(ready, "ready once subscribed to Redis", timeout=15)
        assert gauge() == [1]

        redis_server.kill()
        await until(not_ready, "503 while Redis is gone", timeout=15)
        answer = await client.get("/readyz")
        assert await answer.json() == {
            "status": "not ready",
            "problems": {"backplane": f"not connected to Redis at redis://127.0.0.1:{redis_server.port}/0"},
        }
        assert gauge() == [0]
        assert (await client.get("/healthz")).status == 200, "Redis's trouble is not the process's: alive"

        redis_server.restart()
        await until(ready, "ready again once Redis is back", timeout=15)
        assert gauge() == [1]
    finally:
        meter_provider.shutdown()


async def test_readyz_is_503_while_redis_hangs(aiohttp_client: Any, redis_server: RedisServer) -> None:
    """SIGSTOP: the socket stays open and nothing answers; the backplane's health check notices."""
    settings = offline_settings(redis_url=redis_server.url, redis_timeout=1)
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))

    async def status(expected: int) -> bool:
        return (await client.get("/readyz")).status == expected

    await until(lambda: status(200), "ready once subscribed to Redis", timeout=15)
    redis_server.pause()
    try:
        await until(lambda: status(503), "503 while Redis does not answer", timeout=15)
    finally:
        redis_server.resume()
    await until(lambda: status(200), "ready again once Redis answers", timeout=15)
