"""Who receives what: connections, groups and users behind one interface.

Hubs never hold connections; they ask the lifetime manager, so an in-memory manager can
be swapped for a Redis-backed one without touching hub code. A message for many is
encoded once per protocol, then the same bytes are queued on every connection.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any

from .protocol import HubProtocol

if TYPE_CHECKING:
    from .hub_connection import HubConnectionContext


class EncodedInvocation:
    """A fire-and-forget invocation, encoded lazily and at most once per protocol."""

    __slots__ = ("_cache", "arguments", "target")

    def __init__(self, target: str, arguments: tuple[Any, ...] | list[Any]) -> None:
        self.target = target
        self.arguments = arguments
        self._cache: dict[str, bytes] = {}

    def for_protocol(self, protocol: HubProtocol) -> bytes:
        data = self._cache.get(protocol.name)
        if data is None:
            data = self._cache[protocol.name] = protocol.encode_invocation(self.target, self.arguments)
        return data


class HubLifetimeManager(ABC):
    @abstractmethod
    async def on_connected(self, connection: HubConnectionContext) -> None: ...

    @abstractmethod
    async def on_disconnected(self, connection: HubConnectionContext) -> None: ...

    @abstractmethod
    async def send_all(self, method: str, args: tuple[Any, ...], exclude: Collection[str] = ()) -> None: ...

    @abstractmethod
    async def send_connections(self, connection_ids: Collection[str], method: str, args: tuple[Any, ...]) -> None: ...

    @abstractmethod
    async def send_groups(
        self, groups: Collection[str], method: str, args: tuple[Any, ...], exclude: Collection[str] = ()
    ) -> None: ...

    @abstractmethod
    async def send_users(self, user_ids: Collection[str], method: str, args: tuple[Any, ...]) -> None: ...

    @abstractmethod
    async def add_to_group(self, connection_id: str, group: str) -> None: ...

    @abstractmethod
    async def remove_from_group(self, connection_id: str, group: str) -> None: ...

    @abstractmethod
    async def invoke_connection(
        self, connection_id: str, method: str, args: tuple[Any, ...], timeout: float | None
    ) -> Any:
        """A client result: send an invocation to one connection and await its Completion."""


class InMemoryHubLifetimeManager(HubLifetimeManager):
    """One process: plain dicts and sets, no locks needed on one event loop."""

    def __init__(self) -> None:
        self.connections: dict[str, HubConnectionContext] = {}
        self.groups: dict[str, set[HubConnectionContext]] = {}
        self.users: dict[str, set[HubConnectionContext]] = {}

    async def on_connected(self, connection: HubConnectionContext) -> None:
        self.connections[connection.connection_id] = connection
        if connection.user_identifier is not None:
            self.users.setdefault(connection.user_identifier, set()).add(connection)

    async def on_disconnected(self, connection: HubConnectionContext) -> None:
        self.connections.pop(connection.connection_id, None)
        for group in connection.group_names:
            self._discard(self.groups, group, connection)
        connection.group_names.clear()
        if connection.user_identifier is not None:
            self._discard(self.users, connection.user_identifier, connection)

    @staticmethod
    def _discard(index: dict[str, set[HubConnectionContext]], key: str, connection: HubConnectionContext) -> None:
        members = index.get(key)
        if members is not None:
            members.discard(connection)
            if not members:
                del index[key]

    @staticmethod
    def _deliver(targets: Iterable[HubConnectionContext], method: str, args: tuple[Any, ...]) -> None:
        encoded = EncodedInvocation(method, args)
        for connection in targets:
            connection.write_encoded(encoded.for_protocol(connection.protocol))

    async def send_all(self, method: str, args: tuple[Any, ...], exclude: Collection[str] = ()) -> None:
        targets = self.connections.values()
        if exclude:
            excluded = set(exclude)
            self._deliver([c for c in targets if c.connection_id not in excluded], method, args)
        else:
            self._deliver(list(targets), method, args)

    async def send_connections(self, connection_ids: Collection[str], method: str, args: tuple[Any, ...]) -> None:
        found = (self.connections.get(i) for i in connection_ids)
        self._deliver([c for c in found if c is not None], method, args)

    async def send_groups(
        self, groups: Collection[str], method: str, args: tuple[Any, ...], exclude: Collection[str] = ()
    ) -> None:
        targets: set[HubConnectionContext] = set()
        for group in groups:
            targets.update(self.groups.get(group, ()))
        if exclude:
            excluded = set(exclude)
            targets = {c for c in targets if c.connection_id not in excluded}
        self._deliver(targets, method, args)

    async def send_users(self, user_ids: Collection[str], method: str, args: tuple[Any, ...]) -> None:
        targets: set[HubConnectionContext] = set()
        for user_id in user_ids:
            targets.update(self.users.get(user_id, ()))
        self._deliver(targets, method, args)

    async def add_to_group(self, connection_id: str, group: str) -> None:
        connection = self.connections.get(connection_id)
        if connection is not None:
            self.groups.setdefault(group, set()).add(connection)
            connection.group_names.add(group)

    async def remove_from_group(self, connection_id: str, group: str) -> None:
        connection = self.connections.get(connection_id)
        if connection is not None:
            self._discard(self.groups, group, connection)
            connection.group_names.discard(group)

    async def invoke_connection(
        self, connection_id: str, method: str, args: tuple[Any, ...], timeout: float | None
    ) -> Any:
        connection = self.connections.get(connection_id)
        if connection is None:
            raise ConnectionError(f"Connection '{connection_id}' does not exist.")
        return await connection.invoke_client(method, args, timeout)
