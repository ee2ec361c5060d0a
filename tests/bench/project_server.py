"""This project, as the benchmark runs it: a hub with the benchmark's methods, or the chat app.

`--app hub` maps `BenchHub` at /hub with default HubOptions; `--app chat` is the real chat
application (settings from the environment, as `python -m signalr_chat` reads them).
Both are served by `signalr_chat.server` on uvloop, like the product. Logging stays at
WARNING, so the access log costs nothing in either.

Run as `python -m tests.bench.project_server --port 0 [--app chat]`.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from aiohttp import web

from signalr_chat.signalr import Hub, HubOptions, map_hub

from . import procfs


class BenchHub(Hub):
    def echo(self, message: Any) -> Any:
        return message

    async def echo_async(self, message: Any) -> Any:
        return message

    async def broadcast(self, stamp: int, payload: Any) -> None:
        await self.clients.all.send("Broadcast", stamp, payload)

    async def join_group(self, group: str) -> None:
        await self.groups.add(self.context.connection_id, group)

    async def send_to_group(self, group: str, stamp: int, payload: Any) -> None:
        await self.clients.group(group).send("Group", stamp, payload)


def create_hub_app() -> web.Application:
    app = web.Application()
    # permessage-deflate only for the deflate scenario, which sets BENCH_DEFLATE=1
    options = HubOptions(websocket_compression=os.environ.get("BENCH_DEFLATE") == "1")
    map_hub(app, "/hub", BenchHub, options=options)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--app", choices=("hub", "chat"), default="hub")
    args = parser.parse_args()
    procfs.raise_nofile()
    from signalr_chat.server import run

    if args.app == "chat":
        from signalr_chat.app import create_app

        app = create_app()  # Settings() from the environment
    else:
        app = create_hub_app()
    run(app, "127.0.0.1", args.port)


if __name__ == "__main__":
    main()
