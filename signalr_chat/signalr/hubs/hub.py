"""What application code subclasses: Hub, its caller context, and @authorize."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..connections import Connection, RequestInfo, TransportKind, User
from .cancellation import CancellationToken
from .clients import GroupManager, HubCallerClients
from .errors import HubException

T = TypeVar("T")

__all__ = ["Hub", "HubCallerContext", "HubException", "authorize", "requires_user"]


def authorize(target: T) -> T:
    """Require an authenticated user, on a hub class (connect) or one method (invoke)."""
    target.__signalr_authorize__ = True  # type: ignore[attr-defined]
    return target


def requires_user(target: Any) -> bool:
    return bool(getattr(target, "__signalr_authorize__", False))


class HubCallerContext:
    """Who is calling, over which connection and transport; lives as long as the connection.

    A view of the connection: its id, user, items, request and transport are the
    connection's own, read from it, never copied.
    """

    __slots__ = ("_abort", "_aborted", "_connection")

    def __init__(self, connection: Connection, abort: Callable[[bool], None]) -> None:
        self._connection = connection
        self._aborted: CancellationToken | None = None  # created on first use: most hubs never ask
        self._abort = abort

    @property
    def connection_id(self) -> str:
        return self._connection.id

    @property
    def user(self) -> User | None:
        return self._connection.user

    @property
    def items(self) -> dict[str, Any]:
        """Application state for this connection, kept as long as it lives."""
        return self._connection.items

    @property
    def request(self) -> RequestInfo | None:
        return self._connection.request

    @property
    def transport(self) -> TransportKind | None:
        """The transport the caller uses, as ASP.NET Core's IHttpTransportFeature tells."""
        return self._connection.transport_kind

    @property
    def connection_aborted(self) -> CancellationToken:
        """Cancelled when the connection ends: long work on its behalf should stop."""
        if self._aborted is None:
            self._aborted = CancellationToken(self._connection.owner.tasks)
        return self._aborted

    def ended(self) -> None:
        """The connection is over: `connection_aborted` is cancelled, and `abort` has nothing left
        to do (dropping the callback also breaks the cycle with the connection, so reference
        counting frees it without waiting for the cycle collector)."""
        self.connection_aborted.cancel()
        self._abort = _already_ended

    @property
    def user_identifier(self) -> str | None:
        user = self._connection.user
        return user.id if user is not None else None

    @property
    def headers(self) -> Mapping[str, str]:
        return self.request.headers if self.request else {}

    @property
    def query(self) -> Mapping[str, str]:
        return self.request.query if self.request else {}

    @property
    def cookies(self) -> Mapping[str, str]:
        return self.request.cookies if self.request else {}

    def abort(self, *, allow_reconnect: bool = False) -> None:
        """Close the connection. With allow_reconnect the client's automatic reconnect runs."""
        self._abort(allow_reconnect)


def _already_ended(allow_reconnect: bool) -> None:
    return None


class Hub:
    """Public methods are callable by clients; async generators stream.

    A hub instance serves one invocation, as in ASP.NET Core: keep state in services,
    in `context.items`, or in the lifetime manager's groups, never on `self`.
    """

    context: HubCallerContext
    clients: HubCallerClients
    groups: GroupManager

    async def on_connected(self) -> None:
        """Runs after the handshake, before the connection's first message is dispatched."""

    async def on_disconnected(self, exception: BaseException | None) -> None:
        """Runs once when the connection ends; `exception` is set when it ended in error."""

    async def on_authentication_refreshed(self) -> None:
        """Runs when the caller presented a newer authentication of the same user (authentication
        refresh, or a poll with a newer token), as ASP.NET Core 11's OnAuthenticationRefreshedAsync:
        `self.context.user` is the new one (its claims, its `expires_at`), for this and later calls;
        `context.user_identifier` never changes."""


def default_hub_name(hub_type: type[Hub]) -> str:
    """The name other servers know the hub by: module and class, as .NET uses the full type name."""
    return f"{hub_type.__module__}.{hub_type.__qualname__}"
