"""The token relay's floor: the raw floor server plus `SendMessage`, relaying the upstream's
stream over the WebSocket with nothing in between.

One aiohttp client request per chat (no connection limit), each SSE line decoded with
orjson and its delta sent as a `ReceiveStreamToken` record, the shape the chat page
receives, then `ReceiveStreamEnd` and the Completion. No history, no rate limit, no SDK.

Run as `python -m bench.relay_floor --port 0 --upstream http://127.0.0.1:PORT/v1`.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from . import floor_server, procfs


class RelayFloor(floor_server.Floor):
    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.url = upstream.rstrip("/") + "/chat/completions"
        self.session: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def invoke(
        self, peer: floor_server.Peer, target: str, arguments: list[Any], invocation_id: str | None
    ) -> None:
        if target != "SendMessage":
            await super().invoke(peer, target, arguments, invocation_id)
            return
        task = asyncio.get_running_loop().create_task(self.relay(peer, str(arguments[0]), invocation_id))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def relay(self, peer: floor_server.Peer, text: str, invocation_id: str | None) -> None:
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        body = {"model": "bench", "messages": [{"role": "user", "content": text}], "stream": True}
        binary = peer.binary
        try:
            async with self.session.post(self.url, json=body, headers={"Authorization": "Bearer x"}) as response:
                async for line in response.content:
                    if not line.startswith(b"data: "):
                        continue
                    data = line[6:].strip()
                    if data == b"[DONE]":
                        break
                    for choice in orjson.loads(data)["choices"]:
                        content = choice["delta"].get("content")
                        if content:
                            await peer.send(floor_server.invocation(binary, "ReceiveStreamToken", [content]))
            await peer.send(floor_server.invocation(binary, "ReceiveStreamEnd", []))
            if invocation_id is not None:
                await peer.send(floor_server.completion(binary, invocation_id, None))
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            return  # the client left: the response closes and the upstream stream with it


async def serve(port: int, upstream: str) -> None:
    floor = RelayFloor(upstream)
    app = web.Application()
    app.router.add_post("/hub/negotiate", floor.negotiate)
    app.router.add_route("*", "/hub", floor.connect)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"listening on http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    procfs.raise_nofile()
    procfs.install_uvloop()
    asyncio.run(serve(args.port, args.upstream))


if __name__ == "__main__":
    main()
