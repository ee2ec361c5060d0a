"""An ASP.NET Core SignalR server on aiohttp.

Layers, bottom up: `protocol` (sans-I/O messages, handshake, framing), `connection` and
`transports` (bytes over WebSockets, SSE, long polling), the hub layer (`hub`,
`dispatcher`, `lifetime`, `clients`) and `endpoint`, which maps a hub onto an app.
"""

from .auth import TokenValidator, User
from .clients import ClientProxy, GroupManager, HubCallerClients, HubClients, SingleClientProxy
from .endpoint import HubContext, HubEndpoint, map_hub
from .hub import Hub, HubCallerContext, HubException, authorize
from .lifetime import HubLifetimeManager, InMemoryHubLifetimeManager
from .options import HubOptions, TransportKind

__all__ = [
    "ClientProxy",
    "GroupManager",
    "Hub",
    "HubCallerClients",
    "HubCallerContext",
    "HubClients",
    "HubContext",
    "HubEndpoint",
    "HubException",
    "HubLifetimeManager",
    "HubOptions",
    "InMemoryHubLifetimeManager",
    "SingleClientProxy",
    "TokenValidator",
    "TransportKind",
    "User",
    "authorize",
    "map_hub",
]
