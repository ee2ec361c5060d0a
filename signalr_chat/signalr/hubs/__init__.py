"""The hub layer: hub methods, routing through a lifetime manager, and map_hub.

Inside it, modules import only downwards (endpoint > dispatcher > hub_connection > hub >
clients > lifetime); `make test` checks that with import-linter.
"""

from .cancellation import CancellationToken, OperationCancelled
from .clients import ClientProxy, GroupManager, HubCallerClients, HubClients, SingleClientProxy
from .dispatcher import HubDispatcher, HubFactory
from .endpoint import HubContext, HubEndpoint, map_hub
from .errors import BackplaneUnavailable, HubException
from .hub import Hub, HubCallerContext, authorize
from .hub_connection import HubConnectionContext, HubConnectionState
from .in_memory import InMemoryHubLifetimeManager
from .lifetime import HubConnection, HubLifetimeManager, SerializedInvocation, new_invocation_id
from .options import HubOptions

__all__ = [
    "BackplaneUnavailable",
    "CancellationToken",
    "ClientProxy",
    "GroupManager",
    "Hub",
    "HubCallerClients",
    "HubCallerContext",
    "HubClients",
    "HubConnection",
    "HubConnectionContext",
    "HubConnectionState",
    "HubContext",
    "HubDispatcher",
    "HubEndpoint",
    "HubException",
    "HubFactory",
    "HubLifetimeManager",
    "HubOptions",
    "InMemoryHubLifetimeManager",
    "OperationCancelled",
    "SerializedInvocation",
    "SingleClientProxy",
    "authorize",
    "map_hub",
    "new_invocation_id",
]
