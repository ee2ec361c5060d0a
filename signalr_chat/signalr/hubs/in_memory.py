"""The lifetime manager of a single server: plain dicts and sets, no locks on one event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from ..protocol import CompletionMessage, HubProtocol, InvocationMessage
from ..untrusted import Untrusted
from .errors import HubException
from .lifetime import HubConnection, HubLifetimeManager, SerializedInvocation, new_invocation_id

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _PendingResult:
    connection_id: str
    future: asyncio.Future[Any]


class InMemoryHubLifetimeManager(HubLifetimeManager):
    """The lifetime manager of a single server, and the local part of the Redis and Azure ones: connections,
    groups, users and pending client results, in plain dicts."""

    def __init__(self, hub_name: str | None = None, protocols: Iterable[HubProtocol] | None = None) -> None:
        super().__init__(hub_name, protocols)
        self.connections: dict[str, HubConnection] = {}
        self.groups: dict[str, set[HubConnection]] = {}
        self.users: dict[str, set[HubConnection]] = {}
        #: Groups each connection is in, created on its first join.
        self._groups_of: dict[str, set[str]] = {}
        self._pending: dict[str, _PendingResult] = {}
        #: Connections per protocol name: a send is encoded for the protocols in use here only.
        self._in_use: dict[str, int] = {}

    async def on_connected(self, connection: HubConnection) -> None:
        self.connections[connection.connection_id] = connection
        name = connection.protocol.name
        self._in_use[name] = self._in_use.get(name, 0) + 1
        if connection.user_identifier is not None:
            self.users.setdefault(connection.user_identifier, set()).add(connection)

    async def on_disconnected(self, connection: HubConnection) -> None:
        connection_id = connection.connection_id
        if self.connections.pop(connection_id, None) is not None:
            name = connection.protocol.name
            left = self._in_use[name] - 1
            if left:
                self._in_use[name] = left
            else:
                del self._in_use[name]
        for group in self._groups_of.pop(connection_id, ()):
            self._discard(self.groups, group, connection)
        if connection.user_identifier is not None:
            self._discard(self.users, connection.user_identifier, connection)
        if self._pending:
            gone = ConnectionError(f"Connection '{connection_id}' disconnected.")
            for pending in self._pending.values():
                if pending.connection_id == connection_id and not pending.future.done():
                    pending.future.set_exception(gone)

    @staticmethod
    def _discard(index: dict[str, set[HubConnection]], key: str, connection: HubConnection) -> None:
        members = index.get(key)
        if members is not None:
            members.discard(connection)
            if not members:
                del index[key]

    def serialize(self, method: str, args: tuple[Any, ...] | list[Any]) -> SerializedInvocation:
        """Every protocol a connection here uses, before anyone is given anything: one server
        has no other servers' clients to encode for (a backplane encodes every enabled one)."""
        in_use = self._in_use
        return SerializedInvocation(method, args, [p for p in self.protocols if p.name in in_use])

    def _deliver(self, targets: Iterable[HubConnection], method: str, args: tuple[Any, ...]) -> None:
        serialized = self.serialize(method, args)  # raises before anyone is given anything
        for connection in targets:
            connection.write_encoded(serialized.for_protocol(connection.protocol))

    async def send_all(self, method: str, args: tuple[Any, ...], exclude: Collection[str] = ()) -> None:
        targets = self.connections.values()
        if exclude:
            excluded = set(exclude)
            self._deliver([c for c in targets if c.connection_id not in excluded], method, args)
        else:
            self._deliver(list(targets), method, args)

    async def send_connection(self, connection_id: str, method: str, args: tuple[Any, ...]) -> None:
        connection = self.connections.get(connection_id)
        if connection is not None:
            connection.write_encoded(connection.protocol.encode_invocation(method, args))
            waiting = connection.backpressure()
            if waiting is not None:
                await waiting

    async def send_connections(self, connection_ids: Collection[str], method: str, args: tuple[Any, ...]) -> None:
        found = (self.connections.get(i) for i in connection_ids)
        self._deliver([c for c in found if c is not None], method, args)

    async def send_groups(
        self, groups: Collection[str], method: str, args: tuple[Any, ...], exclude: Collection[str] = ()
    ) -> None:
        if len(groups) == 1 and not exclude:  # the common case: the group's own set, not a copy
            (group,) = groups
            self._deliver(self.groups.get(group, ()), method, args)
            return
        targets: set[HubConnection] = set()
        for group in groups:
            targets.update(self.groups.get(group, ()))
        if exclude:
            excluded = set(exclude)
            targets = {c for c in targets if c.connection_id not in excluded}
        self._deliver(targets, method, args)

    async def send_users(self, user_ids: Collection[str], method: str, args: tuple[Any, ...]) -> None:
        targets: set[HubConnection] = set()
        for user_id in user_ids:
            targets.update(self.users.get(user_id, ()))
        self._deliver(targets, method, args)

    def _local(self, connection_id: str) -> HubConnection:
        connection = self.connections.get(connection_id)
        if connection is None:
            raise ConnectionError(f"Connection '{connection_id}' does not exist.")
        return connection

    async def add_to_group(self, connection_id: str, group: str) -> None:
        connection = self._local(connection_id)
        self.groups.setdefault(group, set()).add(connection)
        self._groups_of.setdefault(connection_id, set()).add(group)

    async def remove_from_group(self, connection_id: str, group: str) -> None:
        connection = self._local(connection_id)
        self._discard(self.groups, group, connection)
        joined = self._groups_of.get(connection_id)
        if joined is not None:
            joined.discard(group)
            if not joined:
                del self._groups_of[connection_id]

    def groups_of(self, connection_id: str) -> frozenset[str]:
        return frozenset(self._groups_of.get(connection_id, ()))

    async def invoke_connection(
        self, connection_id: str, method: str, args: tuple[Any, ...], timeout: float | None
    ) -> Any:
        connection = self._local(connection_id)
        invocation_id = new_invocation_id()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[invocation_id] = _PendingResult(connection_id, future)
        try:
            connection.write(InvocationMessage(method, list(args), invocation_id))
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(invocation_id, None)

    def set_connection_result(self, connection_id: str, completion: CompletionMessage) -> None:
        pending = self._pending.get(completion.invocation_id)
        if pending is None or pending.connection_id != connection_id or pending.future.done():
            log.debug("connection %s: unexpected completion %s", connection_id, Untrusted(completion.invocation_id))
        elif completion.error is not None:
            pending.future.set_exception(HubException(completion.error))
        else:
            pending.future.set_result(completion.result)
