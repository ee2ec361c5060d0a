"""What the connection layer needs to know: transports, buffers and timeouts, per endpoint."""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol.negotiate import ALL_TRANSPORTS, TransportKind


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """ASP.NET Core's HttpConnectionDispatcherOptions, with its defaults."""

    transports: frozenset[TransportKind] = ALL_TRANSPORTS
    #: Inactive negotiated connections, idle long polls and dropped stateful sockets are kept this long.
    disconnect_timeout: float = 15.0
    long_poll_timeout: float = 90.0
    #: Origins allowed cross-origin (credentials included); "*" echoes any origin.
    cors_origins: tuple[str, ...] = ()
    #: Unsent bytes one connection may hold before it is dropped as too slow.
    max_buffer_size: int = 1024 * 1024
    websocket_compression: bool = False
    #: Largest WebSocket frame read (0: no limit); a frame may batch several messages.
    max_frame_size: int = 1024 * 1024
    #: Offer stateful reconnect to clients that ask (the application must support it).
    allow_stateful_reconnect: bool = False
