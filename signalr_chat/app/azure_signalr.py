"""The chat behind Azure SignalR Service (AZURE_SIGNALR_CONNECTION_STRING), as `.AddAzureSignalR()`.

Chosen by the settings, like the Redis backplane: a clear startup error when the `azure` extra is
missing or the connection string is wrong, a readiness check that fails while no server
connection to the service is up (a refused key, a serverless service), and the hubs' names
there. The chat maps one hub class at two paths; on the service each path is a hub of its own
(`chathub` and `chat`), so the two never collide and each path's clients stay apart, as they
would at two `MapHub` calls in ASP.NET Core.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..hosting.errors import ConfigurationError
from ..hosting.health import Health
from .settings import Settings

if TYPE_CHECKING:
    from ..signalr.azure import AzureSignalR

log = logging.getLogger(__name__)

SERVICE_CHECK = "azure_signalr"
#: The chat's paths and their hubs' names on the service.
SERVICE_HUB_NAMES = {"/chatHub": "chathub", "/chat": "chat"}


def create_azure_signalr(
    settings: Settings, client_address: Callable[[Sequence[str]], str | None] | None = None
) -> AzureSignalR | None:
    """The service the settings name; None without AZURE_SIGNALR_CONNECTION_STRING.
    `client_address`: the client's address from the X-Forwarded-For the service passes."""
    if settings.azure_signalr_connection_string is None:
        return None
    try:
        from ..signalr.azure import AzureSignalR, ConnectionStringError, ServiceOptions
    except ModuleNotFoundError as missing:
        raise ConfigurationError(
            f"AZURE_SIGNALR_CONNECTION_STRING needs the azure extra ({missing.name} is missing): "
            "pip install 'signalr-chat[azure]'"
        ) from None
    options = ServiceOptions(
        connection_count=settings.azure_signalr_server_connection_count,
        application_name=settings.azure_signalr_application_name,
        shutdown_timeout=settings.drain_timeout_seconds + 15.0,
        client_address=client_address,
    )
    try:
        service = AzureSignalR(settings.azure_signalr_connection_string.get_secret_value(), options)
    except ConnectionStringError as exc:
        raise ConfigurationError(f"AZURE_SIGNALR_CONNECTION_STRING: {exc}") from None
    log.info("Azure SignalR Service at %s, hubs %s", service.endpoint.endpoint, ", ".join(SERVICE_HUB_NAMES.values()))
    return service


def add_readiness_check(health: Health, service: AzureSignalR) -> None:
    """Not ready while the service carries no traffic to us (refused, unreachable, reconnecting)."""
    health.add_check(SERVICE_CHECK, lambda: service.problem)
