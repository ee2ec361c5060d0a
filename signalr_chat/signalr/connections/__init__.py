"""The connection layer: a negotiated connection and the transports that carry its bytes.

It knows nothing of hubs. A hub (or a raw ConnectionHandler) is the Application that
runs on a connection; transports are thin aiohttp adapters that drain its outbox.
"""

from ..protocol.negotiate import ALL_TRANSPORTS, TransportKind
from .auth import TokenValidator, User
from .connection import Application, Connection, RequestInfo, Transport, TransportFeatures
from .endpoint import ApplicationFactory, ConnectionEndpoint
from .handler import ConnectionContext, ConnectionHandler, map_connection_handler
from .options import ConnectionOptions

__all__ = [
    "ALL_TRANSPORTS",
    "Application",
    "ApplicationFactory",
    "Connection",
    "ConnectionContext",
    "ConnectionEndpoint",
    "ConnectionHandler",
    "ConnectionOptions",
    "RequestInfo",
    "TokenValidator",
    "Transport",
    "TransportFeatures",
    "TransportKind",
    "User",
    "map_connection_handler",
]
