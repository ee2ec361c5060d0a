"""The `clients` and `groups` a hub sees: thin proxies over the lifetime manager."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from types import EllipsisType
from typing import Any

from .lifetime import HubLifetimeManager
from .options import HubOptions

_Send = Callable[[str, tuple[Any, ...]], Awaitable[None]]


class ClientProxy:
    """One or many clients; `send` calls a handler registered with `connection.on(...)`."""

    __slots__ = ("_send",)

    def __init__(self, send: _Send) -> None:
        self._send = send

    async def send(self, method: str, *args: Any) -> None:
        await self._send(method, args)


class SingleClientProxy(ClientProxy):
    """One connection: can also ask the client for a result."""

    __slots__ = ("_connection_id", "_lifetime", "_timeout")

    def __init__(self, lifetime: HubLifetimeManager, connection_id: str, timeout: float | None) -> None:
        super().__init__(lambda m, a: lifetime.send_connection(connection_id, m, a))
        self._lifetime = lifetime
        self._connection_id = connection_id
        self._timeout = timeout

    async def invoke(self, method: str, *args: Any, timeout: float | EllipsisType | None = ...) -> Any:
        """The client's handler's return value; raises HubException with the client's error."""
        chosen = self._timeout if isinstance(timeout, EllipsisType) else timeout
        return await self._lifetime.invoke_connection(self._connection_id, method, args, chosen)


class HubClients:
    """Every way to address clients from outside a hub invocation."""

    __slots__ = ("_lifetime", "_timeout")

    def __init__(self, lifetime: HubLifetimeManager, options: HubOptions) -> None:
        self._lifetime = lifetime
        self._timeout = options.client_result_timeout

    @property
    def all(self) -> ClientProxy:
        return ClientProxy(self._lifetime.send_all)

    def all_except(self, connection_ids: Collection[str]) -> ClientProxy:
        return ClientProxy(lambda m, a: self._lifetime.send_all(m, a, connection_ids))

    def client(self, connection_id: str) -> SingleClientProxy:
        return SingleClientProxy(self._lifetime, connection_id, self._timeout)

    def clients(self, connection_ids: Collection[str]) -> ClientProxy:
        return ClientProxy(lambda m, a: self._lifetime.send_connections(connection_ids, m, a))

    def group(self, group: str) -> ClientProxy:
        return self.groups((group,))

    def groups(self, groups: Collection[str]) -> ClientProxy:
        return ClientProxy(lambda m, a: self._lifetime.send_groups(groups, m, a))

    def group_except(self, group: str, connection_ids: Collection[str]) -> ClientProxy:
        return ClientProxy(lambda m, a: self._lifetime.send_groups((group,), m, a, connection_ids))

    def user(self, user_id: str) -> ClientProxy:
        return self.users((user_id,))

    def users(self, user_ids: Collection[str]) -> ClientProxy:
        return ClientProxy(lambda m, a: self._lifetime.send_users(user_ids, m, a))


class HubCallerClients(HubClients):
    """Adds the caller-relative addresses."""

    __slots__ = ("_connection_id",)

    def __init__(self, lifetime: HubLifetimeManager, options: HubOptions, connection_id: str) -> None:
        super().__init__(lifetime, options)
        self._connection_id = connection_id

    @property
    def caller(self) -> SingleClientProxy:
        return self.client(self._connection_id)

    @property
    def others(self) -> ClientProxy:
        return self.all_except((self._connection_id,))

    def others_in_group(self, group: str) -> ClientProxy:
        return self.group_except(group, (self._connection_id,))


class GroupManager:
    """The `groups` of a hub and of a HubContext: group changes go to the lifetime manager, which reaches
    the connection wherever it lives, or says it does not exist."""

    __slots__ = ("_lifetime",)

    def __init__(self, lifetime: HubLifetimeManager) -> None:
        self._lifetime = lifetime

    async def add(self, connection_id: str, group: str) -> None:
        """Raises ConnectionError when no server holds the connection."""
        await self._lifetime.add_to_group(connection_id, group)

    async def remove(self, connection_id: str, group: str) -> None:
        """Raises ConnectionError when no server holds the connection."""
        await self._lifetime.remove_from_group(connection_id, group)
