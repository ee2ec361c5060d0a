"""A lifetime manager whose routing is Azure SignalR Service's, as the SDK's ServiceLifetimeManager.

The service holds every client's socket, so a send is one message to the service with the
invocation encoded once per protocol (BroadcastData, GroupBroadcastData, MultiUserData …) and
the service fans it out; group membership lives in the service and is acknowledged; client
results travel as ClientInvocation and ClientCompletion between app servers. The manager also
opens the hub's client connections as the service announces them (OpenConnection), so the hub
layer runs on them unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..hubs import BackplaneUnavailable, HubException, HubLifetimeManager, InMemoryHubLifetimeManager, new_invocation_id
from ..hubs.lifetime import HubConnection
from ..protocol import PROTOCOLS, CompletionMessage, HubProtocol, InvocationMessage, UnencodableValue
from ..untrusted import Untrusted
from .client_connection import (
    SERVICE_FEATURES,
    ServiceTransport,
    instance_of,
    migrated_from,
    migrated_to,
    request_info,
    user_of,
)
from .server_connection import ServiceConnection, ServiceConnectionPool
from .wire import (
    Ack,
    AckStatus,
    BroadcastData,
    ClientCompletion,
    ClientInvocation,
    CloseConnection,
    ConnectionData,
    ConnectionFlowControl,
    ConnectionReconnect,
    ErrorCompletion,
    FlowControlOperation,
    FlowControlType,
    GroupBroadcastData,
    JoinGroupWithAck,
    LeaveGroupWithAck,
    MultiConnectionData,
    MultiGroupBroadcastData,
    MultiUserData,
    OpenConnection,
    Ping,
    ServiceError,
    ServiceEvent,
    ServiceMapping,
    UserData,
    frame,
    is_echo,
    is_finack,
    ping_offline,
    ping_target,
)

if TYPE_CHECKING:
    from ..hubs import HubEndpoint

log = logging.getLogger(__name__)

#: What the pool hands every message after the handshake to (awaited when it returns something).
MessageHandler = Callable[[ServiceConnection, Any], Awaitable[None] | None]
#: The texts of a client result whose connection is gone, as the in-memory manager raises them.
_GONE = ("' disconnected.", "' does not exist.")


@dataclass(slots=True)
class _Pending:
    """A client result this server awaits."""

    connection_id: str
    future: asyncio.Future[Any]
    #: The service instance that holds the client (ServiceMapping), for its `offline` ping.
    instance_id: str | None = None


class ServiceHubLifetimeManager(HubLifetimeManager):
    """One hub's routing through the service; `pool` is its server connections."""

    def __init__(
        self,
        pool_factory: Callable[[MessageHandler], ServiceConnectionPool],
        hub_name: str,
        protocols: Iterable[HubProtocol] | None = None,
    ) -> None:
        super().__init__(hub_name, protocols)
        #: The hub's name on the service (lower-cased class name, or as given).
        self.service_hub = hub_name
        self.pool: ServiceConnectionPool = pool_factory(self._on_message)
        #: The connections the service carries to this server: the bookkeeping of one server, reused.
        self.local = InMemoryHubLifetimeManager(hub_name, protocols)
        self._endpoint: HubEndpoint | None = None
        self._path = ""
        self._pending: dict[str, _Pending] = {}
        #: Client results other servers await from our clients: invocation id -> (caller server, connection).
        self._routed: dict[str, tuple[str, str]] = {}

    def bind(self, endpoint: HubEndpoint, path: str) -> None:
        """The hub endpoint whose application runs on the connections the service opens."""
        self._endpoint = endpoint
        self._path = path

    def configure(self, hub_name: str, protocols: Collection[str]) -> None:
        """`map_hub` names the hub for telemetry; on the service it keeps the name it was given."""
        super().configure(self.service_hub, protocols)
        self.local.configure(self.service_hub, protocols)

    @property
    def server_id(self) -> str:
        return self.pool.server_id

    # -- connections ------------------------------------------------------------------
    async def on_connected(self, connection: HubConnection) -> None:
        await self.local.on_connected(connection)

    async def on_disconnected(self, connection: HubConnection) -> None:
        connection_id = connection.connection_id
        await self.local.on_disconnected(connection)
        if self._pending:
            gone = ConnectionError(f"Connection '{connection_id}' disconnected.")
            for pending in self._pending.values():
                if pending.connection_id == connection_id and not pending.future.done():
                    pending.future.set_exception(gone)
        for invocation_id, (caller, owner) in list(self._routed.items()):
            if owner == connection_id:
                del self._routed[invocation_id]
                self._write_any(
                    ErrorCompletion(invocation_id, connection_id, caller, f"Connection '{connection_id}' disconnected.")
                )

    # -- sending ----------------------------------------------------------------------
    def _payloads(self, method: str, args: tuple[Any, ...]) -> dict[str, bytes]:
        return self.serialize(method, args).payloads

    def _write_any(self, message: Any) -> ServiceConnection:
        try:
            carrier = self.pool.any()
        except ConnectionError as exc:
            raise BackplaneUnavailable(f"Azure SignalR Service is unavailable: {exc}") from None
        carrier.write(frame(message))
        return carrier

    async def _fan_out(self, message: Any) -> None:
        """Fan-out sends wait only for the service to take what we already gave it."""
        room = self._write_any(message).room()
        if room is not None:
            await room

    async def send_all(self, method: str, args: tuple[Any, ...], exclude: Collection[str] = ()) -> None:
        await self._fan_out(BroadcastData(self._payloads(method, args), tuple(exclude)))

    async def send_connection(self, connection_id: str, method: str, args: tuple[Any, ...]) -> None:
        local = self.local.connections.get(connection_id)
        if local is None:
            await self._fan_out(MultiConnectionData((connection_id,), self._payloads(method, args)))
            return
        # as the SDK: only the client's protocol, over its own server connection, after what
        # the connection already queued (its Completions, stream items) so that order holds
        protocol = local.protocol
        message = MultiConnectionData((connection_id,), {protocol.name: protocol.encode_invocation(method, args)})
        carrier = self._carrier_after_pending(connection_id)
        carrier.write(frame(message))
        room = carrier.room()
        if room is not None:
            await room

    def _carrier_after_pending(self, connection_id: str) -> ServiceConnection:
        transport = self.pool.clients.get(connection_id)
        carrier = self.pool.carrier_of(connection_id)
        if transport is None or carrier is None:
            try:
                return self.pool.any()
            except ConnectionError as exc:
                raise BackplaneUnavailable(f"Azure SignalR Service is unavailable: {exc}") from None
        carrier.write_client_pending(transport)
        return carrier

    async def send_connections(self, connection_ids: Collection[str], method: str, args: tuple[Any, ...]) -> None:
        if connection_ids:
            await self._fan_out(MultiConnectionData(tuple(connection_ids), self._payloads(method, args)))

    async def send_groups(
        self, groups: Collection[str], method: str, args: tuple[Any, ...], exclude: Collection[str] = ()
    ) -> None:
        if not groups:
            return
        payloads = self._payloads(method, args)
        if len(groups) == 1:
            (group,) = groups
            await self._fan_out(GroupBroadcastData(group, payloads, tuple(exclude)))
        elif not exclude:
            await self._fan_out(MultiGroupBroadcastData(tuple(groups), payloads))
        else:  # the service has no "groups except": one message per group, as the SDK would send them
            for group in groups:
                await self._fan_out(GroupBroadcastData(group, payloads, tuple(exclude)))

    async def send_users(self, user_ids: Collection[str], method: str, args: tuple[Any, ...]) -> None:
        if not user_ids:
            return
        payloads = self._payloads(method, args)
        if len(user_ids) == 1:
            (user_id,) = user_ids
            await self._fan_out(UserData(user_id, payloads))
        else:
            await self._fan_out(MultiUserData(tuple(user_ids), payloads))

    # -- groups: the service keeps them and acknowledges each change -------------------
    async def add_to_group(self, connection_id: str, group: str) -> None:
        await self._group_change(connection_id, group, join=True)

    async def remove_from_group(self, connection_id: str, group: str) -> None:
        await self._group_change(connection_id, group, join=False)

    async def _group_change(self, connection_id: str, group: str, *, join: bool) -> None:
        ack_id, acked = self.pool.new_ack()
        message = (
            JoinGroupWithAck(connection_id, group, ack_id) if join else LeaveGroupWithAck(connection_id, group, ack_id)
        )
        carrier = self.pool.carrier_of(connection_id)
        if carrier is None:
            self._write_any(message)
        else:
            carrier.write(frame(message))
        try:
            ack = await self.pool.wait_ack(ack_id, acked)
        except TimeoutError:
            raise ConnectionError(
                f"Connection '{connection_id}': Azure SignalR Service did not acknowledge the group change "
                f"within {self.pool.options.ack_timeout:g} s."
            ) from None
        if ack.status == AckStatus.NOT_FOUND:
            raise ConnectionError(f"Connection '{connection_id}' does not exist.")
        if ack.status != AckStatus.OK:
            raise ConnectionError(
                f"Connection '{connection_id}': Azure SignalR Service could not change group '{group}' "
                f"(status {ack.status}{': ' + ack.message if ack.message else ''})."
            )

    # -- client results ---------------------------------------------------------------
    async def invoke_connection(
        self, connection_id: str, method: str, args: tuple[Any, ...], timeout: float | None
    ) -> Any:
        invocation_id = new_invocation_id()
        local = self.local.connections.get(connection_id)
        protocols = (local.protocol,) if local is not None else self.protocols
        message = InvocationMessage(method, list(args), invocation_id)
        payloads: dict[str, bytes] = {}
        for protocol in protocols:
            try:
                payloads[protocol.name] = protocol.encode(message)
            except (TypeError, ValueError, OverflowError) as exc:
                raise UnencodableValue(f"Cannot send '{method}' with the {protocol.name} protocol: {exc}") from exc
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[invocation_id] = _Pending(connection_id, future)
        try:
            invocation = ClientInvocation(invocation_id, connection_id, self.server_id, payloads)
            if local is not None:
                self._carrier_after_pending(connection_id).write(frame(invocation))
            else:
                self._write_any(invocation)
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(invocation_id, None)

    def set_connection_result(self, connection_id: str, completion: CompletionMessage) -> None:
        invocation_id = completion.invocation_id
        pending = self._pending.get(invocation_id)
        local = self.local.connections.get(connection_id)
        if pending is not None and pending.connection_id == connection_id:
            self._settle(pending, completion)
            if local is not None:  # the service forgets the invocation
                self._write_quietly(
                    ClientCompletion(invocation_id, connection_id, self.server_id, local.protocol.name, b"")
                )
            return
        routed = self._routed.get(invocation_id)
        if routed is not None and routed[1] == connection_id and local is not None:
            del self._routed[invocation_id]
            caller = routed[0]
            payload = local.protocol.encode(completion)
            self._write_quietly(ClientCompletion(invocation_id, connection_id, caller, local.protocol.name, payload))
            return
        log.debug("connection %s: unexpected completion %s", connection_id, Untrusted(invocation_id))

    def _write_quietly(self, message: Any) -> None:
        try:
            self._write_any(message)
        except BackplaneUnavailable as exc:
            log.warning("a client result could not be forwarded: %s", exc)

    @staticmethod
    def _settle(pending: _Pending, completion: CompletionMessage) -> None:
        if pending.future.done():
            return
        if completion.error is not None:
            pending.future.set_exception(HubException(completion.error))
        else:
            pending.future.set_result(completion.result)

    def _completed_remotely(self, message: ClientCompletion) -> None:
        pending = self._pending.get(message.invocation_id)
        if pending is None or not message.payload:
            return
        protocol = PROTOCOLS.get(message.protocol or "")
        try:
            if protocol is None:
                raise ValueError(f"unknown protocol {message.protocol!r}")
            decoded = protocol.decoder(None).feed(message.payload)
            completion = next(m for m in decoded if isinstance(m, CompletionMessage))
        except Exception as exc:
            if not pending.future.done():
                pending.future.set_exception(HubException(f"Invalid client result: {exc}"))
            return
        self._settle(pending, completion)

    def _failed_remotely(self, message: ErrorCompletion) -> None:
        pending = self._pending.get(message.invocation_id)
        if pending is None or pending.future.done():
            return
        error = message.error or "The client result failed."
        gone = error.startswith("Connection '") and error.endswith(_GONE)
        pending.future.set_exception(ConnectionError(error) if gone else HubException(error))

    # -- what the service says ---------------------------------------------------------
    def _on_message(self, carrier: ServiceConnection, message: Any) -> Awaitable[None] | None:
        """Every message after the handshake; a client's data is awaited, so its order holds."""
        if isinstance(message, ConnectionData):
            transport = self.pool.clients.get(message.connection_id)
            if transport is None:
                log.debug("data for unknown connection %s", Untrusted(message.connection_id))
                return None
            data = transport.received(message.payload, bool(message.is_partial))
            application = transport.connection.application
            if data is None or application is None:
                return None
            return application.receive(data)
        if isinstance(message, OpenConnection):
            self._open(carrier, message)
        elif isinstance(message, CloseConnection):
            self._closed_by_service(message.connection_id, migrated_to(message))
        elif isinstance(message, Ping):
            self._ping(carrier, message)
        elif isinstance(message, Ack):
            self.pool.acked(message)
        elif isinstance(message, ClientInvocation):
            self._routed[message.invocation_id] = (message.caller_server_id, message.connection_id)
        elif isinstance(message, ClientCompletion):
            self._completed_remotely(message)
        elif isinstance(message, ErrorCompletion):
            self._failed_remotely(message)
        elif isinstance(message, ServiceMapping):
            pending = self._pending.get(message.invocation_id)
            if pending is not None:
                pending.instance_id = message.instance_id
        elif isinstance(message, ConnectionReconnect):
            transport = self.pool.clients.get(message.connection_id)
            if transport is not None:
                transport.reconnected()
        elif isinstance(message, ConnectionFlowControl):
            self._flow_control(carrier, message)
        elif isinstance(message, ServiceError):
            carrier.service_error(message)
        elif isinstance(message, ServiceEvent):
            log.info("hub %s: service event %s", self.service_hub, Untrusted(message.message))
        return None

    def _open(self, carrier: ServiceConnection, message: OpenConnection) -> None:
        endpoint = self._endpoint
        if endpoint is None:
            log.warning("connection %s opened before its hub was mapped", Untrusted(message.connection_id))
            carrier.write(frame(CloseConnection(message.connection_id, "The hub is not mapped.")))
            return
        connection_endpoint = endpoint.connection_endpoint
        connection = endpoint.connections.create(0, connection_id=message.connection_id)
        connection.user = user_of(message)
        connection.features = SERVICE_FEATURES
        connection.request = request_info(message, self._path, self.pool.options.client_address)
        transport = ServiceTransport(
            connection, carrier, migrated_in=migrated_from(message) is not None, instance_id=instance_of(message)
        )
        carrier.clients[connection.id] = transport
        self.pool.clients[connection.id] = transport
        connection.attach(transport)
        if connection_endpoint.telemetry is not None:
            connection_endpoint.telemetry.transport_started(connection)
        application = connection.application = connection_endpoint.application_factory(connection)
        application.start()

    def _closed_by_service(self, connection_id: str, moved_to: str | None) -> None:
        transport = self.pool.clients.get(connection_id)
        if transport is None:
            return
        transport.closed_by_service(moved_to)
        connection = transport.connection
        connection.detach(transport)
        application = connection.application
        if application is not None and not connection.disposed:
            connection.spawn(application.on_transport_ended(None))

    def _ping(self, carrier: ServiceConnection, message: Ping) -> None:
        if not message.messages:
            return  # the service's keep-alive
        if is_finack(message):
            carrier.finack.set()
        elif is_echo(message):
            carrier.write(frame(message))
        elif target := ping_target(message):
            self.pool.open_on_demand(target)
        elif instance := ping_offline(message):
            self._instance_offline(instance)
        else:
            log.debug("hub %s: ping %s", self.service_hub, Untrusted(" ".join(message.messages)))

    def _instance_offline(self, instance_id: str) -> None:
        """A service instance went away: its clients, and the client results they owed, are gone."""
        for transport in list(self.pool.clients.values()):
            if transport.instance_id == instance_id:
                self._closed_by_service(transport.connection.id, None)
        for pending in self._pending.values():
            if pending.instance_id == instance_id and not pending.future.done():
                pending.future.set_exception(ConnectionError(f"Connection '{pending.connection_id}' disconnected."))

    def _flow_control(self, carrier: ServiceConnection, message: ConnectionFlowControl) -> None:
        if message.connection_type == FlowControlType.SERVER:
            if message.operation == FlowControlOperation.OFFLINE:
                carrier.offline = True
            return
        transport = self.pool.clients.get(message.connection_id)
        if transport is None:
            return
        if message.operation == FlowControlOperation.PAUSE:
            if not transport.paused:
                transport.pause()
                carrier.write(
                    frame(
                        ConnectionFlowControl(
                            message.connection_id, FlowControlOperation.PAUSE_ACK, FlowControlType.CLIENT
                        )
                    )
                )
        elif message.operation == FlowControlOperation.RESUME:
            transport.resume()

    # -- lifecycle ----------------------------------------------------------------------
    async def aclose(self) -> None:
        await self.pool.stop()
