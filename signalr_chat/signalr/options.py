"""Server options, with ASP.NET Core SignalR's defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class TransportKind(Enum):
    WEBSOCKETS = "WebSockets"
    SERVER_SENT_EVENTS = "ServerSentEvents"
    LONG_POLLING = "LongPolling"


ALL_TRANSPORTS = frozenset(TransportKind)
#: ASP.NET Core's startup error for AllowAnyOrigin() with AllowCredentials().
WILDCARD_WITH_CREDENTIALS = (
    "The CORS protocol does not allow specifying a wildcard (any) origin and credentials at the same time. "
    "Configure the CORS policy by listing individual origins if credentials needs to be supported."
)


@dataclass(slots=True)
class HubOptions:
    keep_alive_interval: float = 15.0
    client_timeout: float = 30.0
    handshake_timeout: float = 15.0
    #: Per message; a WebSocket frame or POST body may batch several.
    max_message_size: int | None = 32 * 1024
    enable_detailed_errors: bool = False
    #: Plain invocations from one client run one at a time by default; streams never block.
    max_parallel_invocations: int = 1
    stream_buffer_capacity: int = 10
    #: Seconds a client-result call waits; None waits until the client answers or leaves.
    client_result_timeout: float | None = 30.0
    allow_stateful_reconnect: bool = False
    stateful_reconnect_buffer_size: int = 100_000
    #: Inactive negotiated connections, idle long polls and dropped stateful sockets are kept this long.
    disconnect_timeout: float = 15.0
    long_poll_timeout: float = 90.0
    transports: frozenset[TransportKind] = ALL_TRANSPORTS
    #: Origins allowed cross-origin, credentials included, so each must be listed: "*" is refused.
    cors_origins: tuple[str, ...] = ()
    #: Unsent bytes one connection may hold before it is dropped as too slow.
    max_buffer_size: int = 1024 * 1024
    websocket_compression: bool = False
    protocols: tuple[str, ...] = field(default=("json", "messagepack"))

    def __post_init__(self) -> None:
        # the browser client sends credentials, so the CORS answer must name the origin:
        # allowing any origin would let every site call the hub with a user's credentials
        if "*" in self.cors_origins:
            raise ValueError(WILDCARD_WITH_CREDENTIALS)
