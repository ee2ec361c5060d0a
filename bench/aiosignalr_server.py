"""aiosignalr 0.1.1 (the Python peer) serving the benchmark's hub, as its README shows.

It runs in its own virtualenv (`.venv-bench`, see `benchvenv.py`): aiosignalr pins
`websockets<17`, which the main venv cannot hold. This module imports nothing from the
project, only the standard library, uvloop and aiosignalr.

Run as `.venv-bench/bin/python -m bench.aiosignalr_server --port 0`.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
from typing import Any

from aiosignalr.server import Hub, SignalRServer  # type: ignore[import-not-found,unused-ignore]


class BenchHub(Hub):  # type: ignore[misc,unused-ignore]
    def echo(self, message: Any) -> Any:  # aiosignalr runs it in a task per invocation either way
        return message

    async def echoasync(self, message: Any) -> Any:
        return message

    async def broadcast(self, stamp: int, payload: Any) -> None:
        await self.clients.all_.send("Broadcast", stamp, payload)

    async def joingroup(self, group: str) -> None:
        await self.groups.add(group)

    async def sendtogroup(self, group: str, stamp: int, payload: Any) -> None:
        await self.clients.group(group).send("Group", stamp, payload)


async def serve(port: int) -> None:
    server = SignalRServer(BenchHub)
    host, bound = await server.serve("127.0.0.1", port, path="/hub")
    print(f"listening on http://{host}:{bound}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = 200_000
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, max(hard, limit)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
