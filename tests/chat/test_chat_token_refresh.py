"""The chat serves authentication refresh and closes expired connections by default
(AUTH_TOKEN_REFRESH), and neither with the setting off; the stock 11.0.0 client's side of it
is tests/js/chat/token_refresh.test.mjs."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from signalr_chat.app.application import CHAT_PATHS, create_app
from signalr_chat.app.drain import GracefulDrain
from signalr_chat.app.settings import Settings
from signalr_chat.hosting import DRAIN
from tests.support.chat_fixtures import JWT_SECRET, offline_settings

pytestmark = pytest.mark.timeout(60)


def settings(**extra: Any) -> Settings:
    return offline_settings(auth_jwt_secret=JWT_SECRET, **extra)


def closes_on_expiry(settings: Settings) -> set[bool]:
    drain = create_app(settings)[DRAIN]
    assert isinstance(drain, GracefulDrain)
    return {endpoint.options.close_on_authentication_expiration for endpoint in drain.endpoints}


def bearer(user: str, lifetime: float) -> dict[str, str]:
    token = jwt.encode({"sub": user, "exp": int(time.time() + lifetime)}, JWT_SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


def test_on_by_default_and_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings().auth_token_refresh is True
    assert closes_on_expiry(settings()) == {True}
    assert closes_on_expiry(settings(auth_token_refresh=False)) == {False}
    monkeypatch.setenv("AUTH_TOKEN_REFRESH", "false")
    assert Settings(_env_file=None).auth_token_refresh is False  # type: ignore[call-arg]


@pytest.mark.parametrize("path", CHAT_PATHS)
async def test_the_chat_serves_refresh_by_default(aiohttp_client: Any, path: str) -> None:
    client = await aiohttp_client(create_app(settings()))
    async with client.post(f"{path}/negotiate?negotiateVersion=1", headers=bearer("alice", 600)) as response:
        document = await response.json()
    assert 598 <= document["tokenLifetimeSeconds"] <= 600
    headers = {**bearer("alice", 1200), "X-SignalR-Connection-Token": document["connectionToken"]}
    async with client.post(f"{path}/refresh", headers=headers) as response:
        assert response.status == 200
        assert 1198 <= (await response.json())["tokenLifetimeSeconds"] <= 1200


@pytest.mark.parametrize("path", CHAT_PATHS)
async def test_with_the_setting_off_tokens_are_checked_only_when_presented(aiohttp_client: Any, path: str) -> None:
    client = await aiohttp_client(create_app(settings(auth_token_refresh=False)))
    async with client.post(f"{path}/negotiate?negotiateVersion=1", headers=bearer("alice", 600)) as response:
        document = await response.json()
    assert "tokenLifetimeSeconds" not in document
    headers = {**bearer("alice", 1200), "X-SignalR-Connection-Token": document["connectionToken"]}
    async with client.post(f"{path}/refresh", headers=headers) as response:
        assert response.status == 404
