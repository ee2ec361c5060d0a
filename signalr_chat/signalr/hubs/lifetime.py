"""Who receives what, and where a connection lives: the lifetime manager's contract.

As in ASP.NET Core, the lifetime manager is the only part of the hub layer that knows
where a connection is. Hubs, the dispatcher and the transports reach other connections
only through it, so an in-memory manager and a backplane (Redis) are interchangeable.
"""

from __future__ import annotations

import base64
import os
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Collection, Iterable
from typing import Any, Protocol, runtime_checkable

from ..protocol import PROTOCOLS, CompletionMessage, HubMessage, HubProtocol
from ..protocol.values import UnencodableValue


@runtime_checkable
class HubConnection(Protocol):
    """What a lifetime manager needs of a connection on this server (checkable with isinstance)."""

    @property
    def connection_id(self) -> str: ...

    @property
    def user_identifier(self) -> str | None: ...

    protocol: HubProtocol

    def write(self, message: HubMessage) -> None:
        """Encode and queue one message for this connection's client."""

    def write_encoded(self, data: bytes, sequenced: bool = True) -> None:
        """Queue a record already encoded with this connection's protocol."""

    def backpressure(self) -> Awaitable[None] | None:
        """None while the client keeps up; else what a sender to this one client waits for."""


def new_invocation_id() -> str:
    """Unique across servers, as ASP.NET Core's: 16 random bytes, base64, `==` trimmed."""
    return base64.b64encode(os.urandom(16)).decode("ascii").rstrip("=")


class SerializedInvocation:
    """A fire-and-forget invocation encoded for every protocol before anyone is given it.

    A value one protocol cannot encode fails the whole send, so nobody receives half a
    broadcast; every connection of a protocol then gets the very same bytes.
    """

    __slots__ = ("payloads",)

    def __init__(self, target: str, arguments: tuple[Any, ...] | list[Any], protocols: Iterable[HubProtocol]) -> None:
        payloads: dict[str, bytes] = {}
        for protocol in protocols:
            try:
                payloads[protocol.name] = protocol.encode_invocation(target, arguments)
            except (TypeError, ValueError, OverflowError) as exc:
                raise UnencodableValue(f"Cannot send '{target}' with the {protocol.name} protocol: {exc}") from exc
        self.payloads = payloads

    def for_protocol(self, protocol: HubProtocol) -> bytes:
        return self.payloads[protocol.name]


class HubLifetimeManager(ABC):
    """Routing, groups, users and client results for one hub, on one server or many.

    `hub_name` names the hub to other servers (a .NET peer uses the hub's full type
    name); `protocols` are the hub protocols in use, each encoded once per send.
    """

    def __init__(self, hub_name: str | None = None, protocols: Iterable[HubProtocol] | None = None) -> None:
        self.hub_name = hub_name or ""
        self.protocols: tuple[HubProtocol, ...] = tuple(protocols if protocols is not None else PROTOCOLS.values())
        self._configured: set[str] | None = None if protocols is None else {p.name for p in self.protocols}

    def configure(self, hub_name: str, protocols: Collection[str]) -> None:
        """Called by `map_hub`: the hub's name unless one was given, and the protocols its paths enable."""
        if not self.hub_name:
            self.hub_name = hub_name
        if self._configured is None:
            self._configured = set()
            self.protocols = ()
        for name in protocols:
            if name not in self._configured:
                self._configured.add(name)
                self.protocols += (PROTOCOLS[name],)

    def serialize(self, method: str, args: tuple[Any, ...] | list[Any]) -> SerializedInvocation:
        return SerializedInvocation(method, args, self.protocols)

    # -- lifecycle: a manager may open a network client ----------------------------
    async def start(self) -> None:  # noqa: B027 - optional: most managers open nothing
        """Open what the manager needs (a backplane connection); runs once per app start."""

    async def aclose(self) -> None:  # noqa: B027 - optional, like start
        """Close it again."""

    # -- connections ------------------------------------------------------------------
    @abstractmethod
    async def on_connected(self, connection: HubConnection) -> None: ...

    @abstractmethod
    async def on_disconnected(self, connection: HubConnection) -> None:
        """Forget the connection: its groups, its user, its pending client results."""

    # -- sending ------------------------------------------------------------------------
    @abstractmethod
    async def send_all(self, method: str, args: tuple[Any, ...], exclude: Collection[str] = ()) -> None: ...

    @abstractmethod
    async def send_connection(self, connection_id: str, method: str, args: tuple[Any, ...]) -> None:
        """One connection: the token-relay hot path, encoded for that connection's protocol only.

        Waits while that client is behind (`HubConnection.backpressure`); fan-out sends never
        wait for anyone, so one slow client cannot stall the others.
        """

    @abstractmethod
    async def send_connections(self, connection_ids: Collection[str], method: str, args: tuple[Any, ...]) -> None: ...

    @abstractmethod
    async def send_groups(
        self, groups: Collection[str], method: str, args: tuple[Any, ...], exclude: Collection[str] = ()
    ) -> None: ...

    @abstractmethod
    async def send_users(self, user_ids: Collection[str], method: str, args: tuple[Any, ...]) -> None: ...

    # -- groups -------------------------------------------------------------------------
    @abstractmethod
    async def add_to_group(self, connection_id: str, group: str) -> None:
        """Raises ConnectionError when no server holds the connection (or none answers in time)."""

    @abstractmethod
    async def remove_from_group(self, connection_id: str, group: str) -> None:
        """Raises ConnectionError when no server holds the connection (or none answers in time)."""

    # -- client results -----------------------------------------------------------------
    @abstractmethod
    async def invoke_connection(
        self, connection_id: str, method: str, args: tuple[Any, ...], timeout: float | None
    ) -> Any:
        """Send an invocation to one connection and await its Completion's result.

        Raises HubException with the client's error, ConnectionError when the connection
        does not exist or leaves first, TimeoutError after `timeout` seconds.
        """

    @abstractmethod
    def set_connection_result(self, connection_id: str, completion: CompletionMessage) -> None:
        """A client answered an invocation: settle whoever waits for it, wherever they are."""
