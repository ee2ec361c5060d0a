"""The azure scenario's service: the tests' double of Azure SignalR Service, and what it says.

The double (tests/support/azure_service.py) is started as a bench server of kind `azure-double`,
pinned to core 1 beside the load generator, as redis-server is in the scale-out scenario:
the service's side of the traffic (holding the clients' sockets, fanning broadcasts out)
is another machine's work in production, never the app server's core.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from . import servers

#: Any 44 characters do (the emulator's well-known key, as the tests use).
ACCESS_KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH"
#: Server connections per hub: the SDK's default, as the app servers keep them.
SERVER_CONNECTIONS = 5


def start() -> servers.Server:
    return servers.start("azure-double", core=servers.CLIENT_CORE)


def connection_string(double: servers.Server) -> str:
    return f"Endpoint=http://127.0.0.1;Port={double.port};AccessKey={ACCESS_KEY};Version=1.0;"


def _get(double: servers.Server, path: str, timeout: float = 30) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{double.port}{path}", timeout=timeout) as response:
        return json.loads(response.read())


def wait_servers(double: servers.Server, hubs: tuple[str, ...], timeout: float = 20.0) -> None:
    """Until one app server holds all its server connections to each hub (else an error)."""
    for hub in hubs:
        query = f"hub={hub}&count=1&connections={SERVER_CONNECTIONS}&timeout={timeout}"
        try:
            _get(double, f"/_double/wait-servers?{query}", timeout + 10)
        except OSError as exc:  # 408: the app server never connected (its key, its hub name)
            raise RuntimeError(f"no app server connected to the double's hub {hub}: {exc}") from None


def figures(double: servers.Server) -> dict[str, Any]:
    """What the double has seen so far: service messages received by type (all app servers
    summed), the clients it holds, and anything it refused or could not take."""
    state = _get(double, "/_double/state")
    received: dict[str, int] = {}
    for by_type in state["received"].values():
        for name, count in by_type.items():
            received[name] = received.get(name, 0) + int(count)
    return {
        "received": received,
        "clients": len(state["clients"]),
        "problems": len(state["refusals"]) + len(state["protocol_errors"]) + len(state["stray"]),
    }


def received_during(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """Service messages the app servers sent between two `figures`, by type."""
    names = set(before["received"]) | set(after["received"])
    counts = {n: after["received"].get(n, 0) - before["received"].get(n, 0) for n in sorted(names)}
    return {n: c for n, c in counts.items() if c}
