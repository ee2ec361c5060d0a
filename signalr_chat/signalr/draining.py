"""Draining a hub endpoint: new connections are refused, invocations in flight may finish.

A load balancer stops sending new clients once readiness fails, but some arrive before
it notices: they get 503 and a text the stock clients show, and reconnect elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .hub_connection import HubConnectionContext

if TYPE_CHECKING:
    from .endpoint import HubEndpoint

#: The body of the 503 a draining endpoint answers a negotiate with; @microsoft/signalr
#: reports it as "Failed to complete negotiation with the server: Error: Server is
#: shutting down: Status code '503'".
SHUTTING_DOWN = "Server is shutting down"


def in_flight(endpoint: HubEndpoint) -> set[asyncio.Task[None]]:
    """The tasks of every hub method and server stream running on the endpoint."""
    tasks: set[asyncio.Task[None]] = set()
    for connection in endpoint.connections:
        application = connection.application
        if isinstance(application, HubConnectionContext):
            tasks.update(application.invocations.tasks)
            tasks.update(application.streams.values())
    return tasks


async def wait_for_invocations(endpoints: Iterable[HubEndpoint], timeout: float) -> bool:
    """Wait until no invocation runs (those started meanwhile count too); False at the timeout."""
    endpoints = list(endpoints)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        tasks = set().union(*(in_flight(endpoint) for endpoint in endpoints))
        if not tasks:
            return True
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        await asyncio.wait(tasks, timeout=remaining)
