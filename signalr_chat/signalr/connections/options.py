"""What the connection layer needs to know: transports, buffers and timeouts, per endpoint."""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol.negotiate import ALL_TRANSPORTS, TransportKind

#: ASP.NET Core's startup error for AllowAnyOrigin() with AllowCredentials().
WILDCARD_WITH_CREDENTIALS = (
    "The CORS protocol does not allow specifying a wildcard (any) origin and credentials at the same time. "
    "Configure the CORS policy by listing individual origins if credentials needs to be supported."
)


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """ASP.NET Core's HttpConnectionDispatcherOptions, with its defaults."""

    transports: frozenset[TransportKind] = ALL_TRANSPORTS
    #: Inactive negotiated connections, idle long polls and dropped stateful sockets are kept this long.
    disconnect_timeout: float = 15.0
    long_poll_timeout: float = 90.0
    #: Origins allowed cross-origin, credentials included, so each must be listed: "*" is refused.
    cors_origins: tuple[str, ...] = ()
    #: Unsent bytes one connection may hold before it is dropped as too slow.
    max_buffer_size: int = 1024 * 1024
    websocket_compression: bool = False
    #: Largest WebSocket frame read (0: no limit); a frame may batch several messages.
    max_frame_size: int = 1024 * 1024
    #: Offer stateful reconnect to clients that ask (the application must support it).
    allow_stateful_reconnect: bool = False
    #: Close a connection once its user's authentication expires (User.expires_at), as ASP.NET
    #: Core's CloseOnAuthenticationExpiration: the shared heartbeat asks the application to close.
    close_on_authentication_expiration: bool = False
    #: Serve authentication refresh as ASP.NET Core 11 does (EnableAuthenticationRefresh): negotiate
    #: reports `tokenLifetimeSeconds`, `POST {path}/refresh` takes a new token of the same user, and a
    #: long poll of a connection whose authentication expired is answered 409.
    enable_authentication_refresh: bool = False

    @property
    def tracks_authentication(self) -> bool:
        """Whether a user's expiry matters here, so requests presenting a newer token extend it."""
        return self.close_on_authentication_expiration or self.enable_authentication_refresh

    def __post_init__(self) -> None:
        # the browser client sends credentials, so the CORS answer must name the origin:
        # allowing any origin would let every site call the endpoint with a user's credentials
        if "*" in self.cors_origins:
            raise ValueError(WILDCARD_WITH_CREDENTIALS)
