"""What application code subclasses: Hub, its caller context, and @authorize."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..connections import RequestInfo, TransportKind, User
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
    """Who is calling, over which connection and transport; lives as long as the connection."""

    __slots__ = ("_abort", "_aborted", "connection_id", "items", "request", "transport", "user")

    def __init__(
        self,
        connection_id: str,
        user: User | None,
        items: dict[str, Any],
        request: RequestInfo | None,
        abort: Callable[[bool], None],
        transport: TransportKind | None = None,
    ) -> None:
        self.connection_id = connection_id
        self.user = user
        self.items = items
        self.request = request
        #: The transport the caller uses, as ASP.NET Core's IHttpTransportFeature tells.
        self.transport = transport
        self._aborted: CancellationToken | None = None  # created on first use: most hubs never ask
        self._abort = abort

    @property
    def connection_aborted(self) -> CancellationToken:
        """Cancelled when the connection ends: long work on its behalf should stop."""
        if self._aborted is None:
            self._aborted = CancellationToken()
        return self._aborted

    def ended(self) -> None:
        """The connection is over: `connection_aborted` is cancelled, and `abort` has nothing left
        to do (dropping the callback also breaks the cycle with the connection, so reference
        counting frees it without waiting for the cycle collector)."""
        self.connection_aborted.cancel()
        self._abort = _already_ended

    @property
    def user_identifier(self) -> str | None:
        return self.user.id if self.user is not None else None

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
