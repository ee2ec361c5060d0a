"""Azure SignalR Service: the app server behind the managed service, and serverless helpers.

Default mode (`AzureSignalR`): hubs run here, clients connect to the service, which carries their
traffic over WebSockets this server opens (`server_connection`), in the service protocol
(`wire`, sans-I/O). Serverless mode (`rest`): no hub runs here; a backend sends through the
service's REST API and issues client tokens with `negotiate`. The `azure` extra installs what
this needs (PyJWT; azure-identity for Microsoft Entra ID).
"""

from .connection_string import AuthType, ConnectionStringError, ServiceEndpoint, parse_connection_string
from .lifetime import ServiceHubLifetimeManager
from .options import ServiceOptions
from .service import AzureSignalR

__all__ = [
    "AuthType",
    "AzureSignalR",
    "ConnectionStringError",
    "ServiceEndpoint",
    "ServiceHubLifetimeManager",
    "ServiceOptions",
    "parse_connection_string",
]
