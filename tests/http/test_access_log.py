"""The access log: a line per request at INFO, masked; nothing at all (not even the line's
making) when the level is above INFO, since long polling and SSE make a request per message."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from signalr_chat.hosting.server import RedactingAccessLogger


async def test_a_request_is_logged_at_info_with_its_token_masked(
    aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="pong")

    app = web.Application()
    app.router.add_get("/ping", ping)
    logger = logging.getLogger("test.access")
    server = TestServer(app)
    await server.start_server(access_log_class=RedactingAccessLogger, access_log=logger)
    client = await aiohttp_client(server)
    with caplog.at_level(logging.INFO, "test.access"):
        assert (await client.get("/ping?access_token=secret&x=1")).status == 200
    [line] = [r.getMessage() for r in caplog.records if r.name == "test.access"]
    assert "access_token=***" in line and "secret" not in line and " 200 " in line


def test_above_info_the_access_log_is_off_for_aiohttp() -> None:
    logger = logging.getLogger("test.access.quiet")
    logger.setLevel(logging.WARNING)
    assert RedactingAccessLogger(logger, "").enabled is False
    logger.setLevel(logging.INFO)
    assert RedactingAccessLogger(logger, "").enabled is True
