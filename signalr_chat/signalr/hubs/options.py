"""Hub options, with ASP.NET Core SignalR's defaults (the connection layer's among them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..connections import ConnectionOptions
from ..connections.options import WILDCARD_WITH_CREDENTIALS
from ..protocol.negotiate import ALL_TRANSPORTS, TransportKind


@dataclass(slots=True)
class HubOptions:
    """One mapped hub's options, with ASP.NET Core SignalR's defaults (table in docs/architecture.md); the
    connection layer gets its part through `connection_options()`."""

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
    #: Unsent bytes one connection may hold before it is dropped as too slow. Senders to one
    #: client wait for it past half of this; one bigger message goes through to a client that keeps up.
    max_buffer_size: int = 1024 * 1024
    #: Seconds a sender waits for a client that takes nothing before the client is dropped.
    send_timeout: float = 30.0
    websocket_compression: bool = False
    protocols: tuple[str, ...] = field(default=("json", "messagepack"))
    #: Close a connection (Close with `allowReconnect`, no error) once its user's authentication
    #: expires (User.expires_at), as ASP.NET Core's CloseOnAuthenticationExpiration.
    close_on_authentication_expiration: bool = False
    #: Serve authentication refresh as ASP.NET Core 11's EnableAuthenticationRefresh: negotiate
    #: reports `tokenLifetimeSeconds`, `POST {path}/refresh` takes a new token of the same user.
    enable_authentication_refresh: bool = False

    def __post_init__(self) -> None:
        # the browser client sends credentials, so the CORS answer must name the origin:
        # allowing any origin would let every site call the hub with a user's credentials
        if "*" in self.cors_origins:
            raise ValueError(WILDCARD_WITH_CREDENTIALS)

    def connection_options(self) -> ConnectionOptions:
        """The part the connection layer uses."""
        size = self.max_message_size
        return ConnectionOptions(
            transports=self.transports,
            disconnect_timeout=self.disconnect_timeout,
            long_poll_timeout=self.long_poll_timeout,
            cors_origins=self.cors_origins,
            max_buffer_size=self.max_buffer_size,
            websocket_compression=self.websocket_compression,
            # a frame may batch several messages; each message is checked against the limit
            max_frame_size=0 if size is None else max(4 * size, 1024 * 1024),
            allow_stateful_reconnect=self.allow_stateful_reconnect,
            close_on_authentication_expiration=self.close_on_authentication_expiration,
            enable_authentication_refresh=self.enable_authentication_refresh,
        )
