"""The application: static files from wwwroot/ and the hubs, on one aiohttp app."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from .signalr import Hub, map_hub

WWWROOT = Path(__file__).resolve().parent.parent / "wwwroot"


class ChatHub(Hub):
    """A plain broadcast chat; the AI chat replaces it."""

    async def send_message(self, user: str, message: str) -> None:
        await self.clients.all.send("ReceiveMessage", user, message)


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WWWROOT / "index.html")


def create_app() -> web.Application:
    app = web.Application()
    map_hub(app, "/chatHub", ChatHub)
    app.router.add_get("/", _index)
    app.router.add_static("/", WWWROOT, show_index=False)
    return app
