"""What an app server behind Azure SignalR Service can tune: the SDK's ServiceOptions, with its defaults."""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass


def _user_agent() -> str:
    python = ".".join(map(str, sys.version_info[:3]))
    return f"signalr-chat/0.1.0 (Python {python}; {platform.system()}; {platform.machine()})"


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    """ASP.NET Core's `ServiceOptions` and `GracefulShutdownOptions`, as far as they apply here."""

    #: The client's address from the `X-Forwarded-For` values the service passes in OpenConnection
    #: (the service is the proxy: it appends the address its client connected from). None: the
    #: rightmost hop, the address the service itself saw (what a client sends ahead of it is
    #: ignored). An app that knows proxies in front of the service walks past them here.
    client_address: Callable[[Sequence[str]], str | None] | None = None
    #: Server connections per hub (the SDK's InitialHubServerConnectionCount).
    connection_count: int = 5
    #: Cap on connections per hub, counting those the service asks for when it rebalances.
    max_connection_count: int | None = None
    #: ServerStickyMode: "Preferred" or "Required" make the service route a client to the server
    #: that answered its negotiate (the token's `asrs.s.sn`); "Disabled" lets it pick any.
    server_sticky_mode: str = "Disabled"
    #: Prefixes every hub's name on the service: one service shared by several applications.
    application_name: str | None = None
    #: Lifetime of the tokens we sign (server connections, clients' redirect tokens).
    access_token_lifetime: float = 3600.0
    access_token_algorithm: str = "HS256"
    #: On shutdown, ask the service to move our clients to other servers (GracefulShutdown
    #: mode MigrateClients); False drops them (mode Off with a fin, so the service knows at once).
    migrate_on_shutdown: bool = True
    #: How long the shutdown handshake and the clients' move may take.
    shutdown_timeout: float = 30.0
    #: Our pings; the service's silence for `service_timeout` ends a server connection.
    keep_alive_interval: float = 5.0
    service_timeout: float = 30.0
    #: The "status" ping, over one connection per hub.
    status_interval: float = 10.0
    #: How long a group join or leave waits for the service's Ack.
    ack_timeout: float = 10.0
    user_agent: str = _user_agent()

    def __post_init__(self) -> None:
        if self.connection_count < 0:
            raise ValueError("connection_count must be 0 or more")
        if self.server_sticky_mode not in ("Disabled", "Preferred", "Required"):
            raise ValueError("server_sticky_mode must be Disabled, Preferred or Required")
        if self.access_token_algorithm not in ("HS256", "HS512"):
            raise ValueError("access_token_algorithm must be HS256 or HS512")
