"""A lifetime manager whose routing runs through Redis, as ASP.NET Core's Redis backplane does.

Every server subscribes to the hub's `all` channel, to one channel per local connection and
user, to each group with a local member, and to its own ack and return channels. Fan-out sends
are published once, with the framed bytes of every enabled protocol, and each server delivers
what it receives to its own connections; only a send to one local connection skips Redis, so
the token relay never waits on it.

Unlike ASP.NET Core, no send is silently lost while Redis is away: a send that cannot be
published raises `BackplaneUnavailable` within `timeout` (at once while the subscription is
known to be down), the subscription reconnects with backoff and subscribes every channel again,
and `connected` says whether it is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import time
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeout

from ..connections.background import BackgroundTasks
from ..hubs import BackplaneUnavailable, HubException, HubLifetimeManager, InMemoryHubLifetimeManager, new_invocation_id
from ..hubs.lifetime import HubConnection, SerializedInvocation
from ..protocol import PROTOCOLS, CompletionMessage, HubProtocol, InvocationMessage
from ..untrusted import Untrusted
from .coalescing import DEFAULT_WINDOW, DeliveryCoalescer
from .connect import client_from_url
from .wire import (
    BackplaneProtocolError,
    GroupAction,
    GroupCommand,
    RedisChannels,
    RedisInvocation,
    read_ack,
    read_completion,
    read_group_command,
    read_invocation,
    write_ack,
    write_completion,
    write_group_command,
    write_invocation,
)

log = logging.getLogger(__name__)

MISSING_PROTOCOL = "This message was received from another server that did not have the requested protocol available."
#: Reconnect backoff: from the first retry to the cap, doubling. The cap is short on purpose:
#: until every server has resubscribed, a send reaches only those already back.
BACKOFF_FIRST = 0.1
BACKOFF_CAP = 1.0


def server_name() -> str:
    """Unique per process and readable in Redis' CLIENT LIST, as .NET's `{machine}_{guid:N}`."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex}"


@dataclass(slots=True)
class _RemoteCall:
    """A client result another server awaits from a connection of ours."""

    connection_id: str
    return_channel: str


class RedisHubLifetimeManager(HubLifetimeManager):
    """Drop-in for `InMemoryHubLifetimeManager` when several servers serve one hub.

    `url`: redis://, rediss://, unix:// or redis+sentinel:// (`connect.py`); or a client the
    process already has (one pool for all its Redis work: its owner closes it, not this
    manager; its reads should be bounded like `client_from_url`'s). `channel_prefix`
    is prepended raw to every channel, as StackExchange.Redis's ChannelPrefix is. `timeout`
    bounds each Redis operation, ack and health check, so no hub method hangs on a Redis
    that stopped answering. `coalesce_window`: in a burst, how long received fan-out messages
    wait to be delivered together (`coalescing.py`); 0 delivers each in the turn it arrives.
    """

    def __init__(
        self,
        url: str | aioredis.Redis,
        *,
        channel_prefix: str = "",
        hub_name: str | None = None,
        protocols: Iterable[HubProtocol] | None = None,
        timeout: float = 5.0,
        coalesce_window: float = DEFAULT_WINDOW,
    ) -> None:
        super().__init__(hub_name, protocols)
        self.url = url if isinstance(url, str) else None
        #: A client given by the process, shared with its other Redis work.
        self._given = None if isinstance(url, str) else url
        self.channel_prefix = channel_prefix
        self.timeout = timeout
        self.server_name = server_name()
        #: Local connections, groups and users: the bookkeeping of one server, reused.
        self.local = InMemoryHubLifetimeManager(hub_name, protocols)
        self._redis: aioredis.Redis | None = None
        self._channels: RedisChannels | None = None
        #: Every channel this server wants, and what to do with its messages.
        self._handlers: dict[bytes, Callable[[bytes], None]] = {}
        #: The channels whose messages are deliveries to connections: batched in bursts.
        self._deliveries: set[bytes] = set()
        self._coalescer = DeliveryCoalescer(coalesce_window)
        self._pubsub: PubSub | None = None
        self._up = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._barriers: dict[bytes, asyncio.Future[None]] = {}
        self._ack_ids = itertools.count(1)
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._results: dict[str, tuple[str, asyncio.Future[Any]]] = {}
        self._remote_calls: dict[str, _RemoteCall] = {}
        #: Group commands applied and client results returned for other servers.
        self._tasks = BackgroundTasks("redis backplane")
        self._outage_logged = False

    # -- state -----------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """The subscription to Redis is up: fan-out sends are published and received."""
        return self._up.is_set()

    @property
    def channels(self) -> RedisChannels:
        if self._channels is None:
            raise RuntimeError("the Redis lifetime manager is not started")
        return self._channels

    def configure(self, hub_name: str, protocols: Collection[str]) -> None:
        super().configure(hub_name, protocols)
        self.local.configure(hub_name, protocols)

    def serialize(self, method: str, args: tuple[Any, ...] | list[Any]) -> SerializedInvocation:
        """Every enabled protocol: another server's clients may use any of them."""
        return SerializedInvocation(method, args, self.protocols)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._channels = channels = RedisChannels(self.hub_name, self.server_name, self.channel_prefix)
        self._redis = self._given if self._given is not None else client_from_url(str(self.url), self.timeout)
        self._handlers[channels.all] = self._on_all
        self._deliveries.add(channels.all)
        self._handlers[channels.groups] = self._on_group_command
        self._handlers[channels.ack] = self._on_ack
        self._handlers[channels.returns] = self._on_return
        self._reader = self._tasks.spawn(self._read(), name="redis-backplane")
        try:  # serve at once when Redis is there; when it is not, start anyway and keep trying
            await asyncio.wait_for(self._up.wait(), self.timeout)
        except TimeoutError:
            log.warning("Redis backplane: not connected at startup; retrying in the background")

    async def aclose(self) -> None:
        self._coalescer.drain()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        await self._tasks.aclose()
        if self._redis is not None:
            if self._given is None:
                await self._redis.aclose()
            self._redis = None

    # -- the subscription: one connection, kept up, every channel resubscribed --------------
    async def _read(self) -> None:
        backoff = BACKOFF_FIRST
        assert self._redis is not None
        while True:
            pubsub = self._redis.pubsub()
            try:
                await self._subscribe_all(pubsub)
                self._pubsub = pubsub
                self._up.set()
                backoff = BACKOFF_FIRST
                if self._outage_logged:
                    log.warning("Redis backplane: connection restored; %d channels subscribed", len(self._handlers))
                    self._outage_logged = False
                await self._listen(pubsub)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError, BackplaneProtocolError) as exc:
                if not self._outage_logged:
                    log.warning("Redis backplane: connection lost (%s); reconnecting", exc or type(exc).__name__)
                    self._outage_logged = True
            finally:
                self._up.clear()
                self._pubsub = None
                self._fail_barriers()
                await self._close_quietly(pubsub)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_CAP)

    async def _subscribe_all(self, pubsub: PubSub) -> None:
        """Subscribe every wanted channel and wait until Redis confirms, however many change meanwhile."""
        subscribed: set[bytes] = set()
        while missing := [c for c in self._handlers if c not in subscribed]:
            await asyncio.wait_for(pubsub.subscribe(*missing), self.timeout)
            subscribed.update(missing)
        token = uuid.uuid4().hex.encode()
        await asyncio.wait_for(pubsub.ping(token), self.timeout)
        deadline = time.monotonic() + self.timeout
        while True:  # messages before the pong are delivered too: nothing subscribed is dropped
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Redis did not confirm the subscriptions")
            message = await pubsub.get_message(timeout=left)
            if message is None:
                continue
            if message["type"] == "pong" and message["data"] == token:
                return
            self._dispatch(message)

    async def _listen(self, pubsub: PubSub) -> None:
        """Deliver messages; a PING when quiet tells a Redis that stopped answering from a quiet one."""
        interval = self.timeout / 2
        ping_sent: float | None = None
        last = time.monotonic()
        while True:
            message = await pubsub.get_message(timeout=interval)
            now = time.monotonic()
            if message is not None:
                last, ping_sent = now, None
                self._dispatch(message)
            elif ping_sent is not None:
                if now - ping_sent > self.timeout:
                    raise TimeoutError(f"Redis did not answer a PING within {self.timeout} s")
            elif now - last >= interval:
                await asyncio.wait_for(pubsub.ping(b"health"), self.timeout)
                ping_sent = now

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "message":
            channel = message["channel"]
            handler = self._handlers.get(channel)
            if handler is None:
                return
            if channel in self._deliveries and self._coalescer.window > 0:
                self._coalescer.add(handler, message["data"], channel)
            else:
                self._coalescer.drain()  # a group command or a result never overtakes a delivery
                try:
                    handler(message["data"])
                except BackplaneProtocolError as exc:
                    log.error("Redis backplane: %s on %s", exc, Untrusted(message["channel"].decode(errors="replace")))
        elif kind == "pong":
            barrier = self._barriers.pop(message["data"], None)
            if barrier is not None and not barrier.done():
                barrier.set_result(None)

    def _fail_barriers(self) -> None:
        for barrier in self._barriers.values():
            if not barrier.done():
                barrier.set_exception(BackplaneUnavailable("Redis backplane connection lost"))
        self._barriers.clear()

    @staticmethod
    async def _close_quietly(pubsub: PubSub) -> None:
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(pubsub.aclose(), 1.0)

    async def _subscribe(self, channel: bytes, handler: Callable[[bytes], None]) -> None:
        """A delivery channel wanted from now on; subscribed and confirmed before returning while Redis is up.

        While Redis is away the channel is only recorded: the reconnect subscribes it.
        """
        self._handlers[channel] = handler
        self._deliveries.add(channel)
        pubsub = self._pubsub
        if pubsub is None:
            return
        token = uuid.uuid4().hex.encode()
        barrier: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._barriers[token] = barrier
        try:
            await asyncio.wait_for(pubsub.subscribe(channel), self.timeout)
            await asyncio.wait_for(pubsub.ping(token), self.timeout)
            await asyncio.wait_for(barrier, self.timeout)  # Redis handled the SUBSCRIBE: no race
        except (RedisError, OSError, TimeoutError, BackplaneUnavailable) as exc:
            log.info("Redis backplane: subscribing %s waits for the reconnect (%s)", Untrusted(channel.decode()), exc)
        finally:
            self._barriers.pop(token, None)

    async def _unsubscribe(self, channel: bytes) -> None:
        if self._handlers.pop(channel, None) is None:
            return
        self._deliveries.discard(channel)
        pubsub = self._pubsub
        if pubsub is not None:
            # on failure it is gone with the connection, and the reconnect does not subscribe it again
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(pubsub.unsubscribe(channel), self.timeout)

    # -- publishing ----------------------------------------------------------------------------
    async def _publish(self, channel: bytes, data: bytes) -> int:
        """PUBLISH, or BackplaneUnavailable: at once while the subscription is down, else within `timeout`."""
        if not self._up.is_set() or self._redis is None:
            raise BackplaneUnavailable("The Redis backplane is not connected; the message was not sent.")
        try:
            return int(await asyncio.wait_for(self._redis.publish(channel, data), self.timeout))
        except (TimeoutError, RedisTimeout):
            # written, maybe: a Redis that hangs may still run it when it wakes up
            raise BackplaneUnavailable(
                f"Redis did not answer within {self.timeout} s; the message may not have been delivered."
            ) from None
        except (RedisError, OSError) as exc:
            raise BackplaneUnavailable(f"Publishing to Redis failed; the message was not sent ({exc}).") from exc

    def _envelope(self, method: str, args: tuple[Any, ...], exclude: Collection[str] = ()) -> bytes:
        return write_invocation(self.serialize(method, args).payloads, list(exclude))

    # -- connections ----------------------------------------------------------------------------
    async def on_connected(self, connection: HubConnection) -> None:
        await self.local.on_connected(connection)
        connection_id = connection.connection_id
        await self._subscribe(
            self.channels.connection(connection_id), lambda data: self._on_connection(connection_id, data)
        )
        user = connection.user_identifier
        if user is not None and len(self.local.users.get(user, ())) == 1:
            await self._subscribe(self.channels.user(user), lambda data: self._on_user(user, data))

    async def on_disconnected(self, connection: HubConnection) -> None:
        connection_id = connection.connection_id
        groups = self.local.groups_of(connection_id)
        await self.local.on_disconnected(connection)
        for invocation_id, call in list(self._remote_calls.items()):
            if call.connection_id == connection_id:
                del self._remote_calls[invocation_id]
                completion = CompletionMessage.with_error(invocation_id, "Connection disconnected.")
                self._return(call, connection.protocol, completion)
        await self._unsubscribe(self.channels.connection(connection_id))
        user = connection.user_identifier
        if user is not None and user not in self.local.users:
            await self._unsubscribe(self.channels.user(user))
        for group in groups:
            if group not in self.local.groups:
                await self._unsubscribe(self.channels.group(group))

    # -- sending ----------------------------------------------------------------------------------
    async def send_all(self, method: str, args: tuple[Any, ...], exclude: Collection[str] = ()) -> None:
        await self._publish(self.channels.all, self._envelope(method, args, exclude))

    async def send_connection(self, connection_id: str, method: str, args: tuple[Any, ...]) -> None:
        if connection_id in self.local.connections:  # sticky sessions: ours, so never through Redis
            await self.local.send_connection(connection_id, method, args)
        else:
            await self._publish(self.channels.connection(connection_id), self._envelope(method, args))

    async def send_connections(self, connection_ids: Collection[str], method: str, args: tuple[Any, ...]) -> None:
        local = [i for i in connection_ids if i in self.local.connections]
        remote = [i for i in connection_ids if i not in self.local.connections]
        if remote:
            envelope = self._envelope(method, args)  # encoded once, published per connection
            for connection_id in remote:
                await self._publish(self.channels.connection(connection_id), envelope)
        if local:
            await self.local.send_connections(local, method, args)

    async def send_groups(
        self, groups: Collection[str], method: str, args: tuple[Any, ...], exclude: Collection[str] = ()
    ) -> None:
        envelope = self._envelope(method, args, exclude)
        for group in groups:
            await self._publish(self.channels.group(group), envelope)

    async def send_users(self, user_ids: Collection[str], method: str, args: tuple[Any, ...]) -> None:
        envelope = self._envelope(method, args)
        for user_id in user_ids:
            await self._publish(self.channels.user(user_id), envelope)

    # -- receiving ---------------------------------------------------------------------------------
    def _deliver(self, targets: Iterable[HubConnection], invocation: RedisInvocation) -> None:
        payloads, excluded = invocation.payloads, invocation.excluded
        for connection in targets:
            if excluded and connection.connection_id in excluded:
                continue
            data = payloads.get(connection.protocol.name)
            if data is None:
                log.error("Redis backplane: %s (%s)", MISSING_PROTOCOL, connection.protocol.name)
            else:
                connection.write_encoded(data)  # numbered for stateful reconnect like a local send

    def _on_all(self, data: bytes) -> None:
        self._deliver(list(self.local.connections.values()), read_invocation(data))

    def _on_group(self, group: str, data: bytes) -> None:
        self._deliver(list(self.local.groups.get(group, ())), read_invocation(data))

    def _on_user(self, user: str, data: bytes) -> None:
        self._deliver(list(self.local.users.get(user, ())), read_invocation(data))

    def _on_connection(self, connection_id: str, data: bytes) -> None:
        invocation = read_invocation(data)
        connection = self.local.connections.get(connection_id)
        if connection is None:
            return
        if invocation.invocation_id is not None and invocation.return_channel is not None:
            self._remote_calls[invocation.invocation_id] = _RemoteCall(connection_id, invocation.return_channel)
        self._deliver((connection,), invocation)

    # -- groups ------------------------------------------------------------------------------------
    async def add_to_group(self, connection_id: str, group: str) -> None:
        if connection_id in self.local.connections:
            await self._add_local(connection_id, group)
        else:
            await self._group_command(GroupAction.ADD, connection_id, group)

    async def remove_from_group(self, connection_id: str, group: str) -> None:
        if connection_id in self.local.connections:
            await self._remove_local(connection_id, group)
        else:
            await self._group_command(GroupAction.REMOVE, connection_id, group)

    async def _add_local(self, connection_id: str, group: str) -> None:
        first = group not in self.local.groups
        await self.local.add_to_group(connection_id, group)
        if first:
            await self._subscribe(self.channels.group(group), lambda data: self._on_group(group, data))

    async def _remove_local(self, connection_id: str, group: str) -> None:
        await self.local.remove_from_group(connection_id, group)
        if group not in self.local.groups:
            await self._unsubscribe(self.channels.group(group))

    async def _exists(self, connection_id: str) -> bool:
        """Some server holds the connection: its channel has a subscriber."""
        if self._redis is None or not self._up.is_set():
            raise BackplaneUnavailable("The Redis backplane is not connected.")
        try:
            counts = await asyncio.wait_for(
                self._redis.pubsub_numsub(self.channels.connection(connection_id)), self.timeout
            )
        except (RedisError, OSError, TimeoutError) as exc:
            raise BackplaneUnavailable(f"Asking Redis failed ({exc}).") from exc
        return bool(counts and counts[0][1])

    async def _group_command(self, action: GroupAction, connection_id: str, group: str) -> None:
        """Ask the server holding the connection, and wait for its ack (bounded, unlike .NET's 30 s sweep)."""
        if not await self._exists(connection_id):
            raise ConnectionError(f"Connection '{connection_id}' does not exist.")
        ack_id = next(self._ack_ids) & 0x7FFFFFFF  # an int32 on the wire
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks[ack_id] = ack
        try:
            command = GroupCommand(ack_id, self.server_name, action, group, connection_id)
            await self._publish(self.channels.groups, write_group_command(command))
            await asyncio.wait_for(ack, self.timeout)
        except TimeoutError:
            raise ConnectionError(
                f"No server acknowledged the group change of connection '{connection_id}' within {self.timeout} s."
            ) from None
        finally:
            self._acks.pop(ack_id, None)

    def _on_group_command(self, data: bytes) -> None:
        command = read_group_command(data)
        if command.connection_id not in self.local.connections:
            return  # another server's connection: that server acks
        self._tasks.spawn(self._apply_group_command(command))

    async def _apply_group_command(self, command: GroupCommand) -> None:
        if command.action is GroupAction.ADD:
            await self._add_local(command.connection_id, command.group)
        else:
            await self._remove_local(command.connection_id, command.group)
        try:
            await self._publish(self.channels.ack_of(command.server_name), write_ack(command.id))
        except BackplaneUnavailable as exc:
            log.warning("Redis backplane: could not ack group command %d: %s", command.id, exc)

    def _on_ack(self, data: bytes) -> None:
        ack = self._acks.get(read_ack(data))
        if ack is not None and not ack.done():
            ack.set_result(None)

    def groups_of(self, connection_id: str) -> frozenset[str]:
        return self.local.groups_of(connection_id)

    # -- client results ---------------------------------------------------------------------------
    async def invoke_connection(
        self, connection_id: str, method: str, args: tuple[Any, ...], timeout: float | None
    ) -> Any:
        if connection_id in self.local.connections:
            return await self.local.invoke_connection(connection_id, method, args, timeout)
        invocation_id = new_invocation_id()
        message = InvocationMessage(method, list(args), invocation_id)
        payloads = {}
        for protocol in self.protocols:
            payloads[protocol.name] = protocol.encode(message)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._results[invocation_id] = (connection_id, future)
        try:
            envelope = write_invocation(payloads, (), invocation_id, self.channels.returns.decode())
            if await self._publish(self.channels.connection(connection_id), envelope) < 1:
                raise ConnectionError(f"Connection '{connection_id}' does not exist.")
            return await asyncio.wait_for(self._await_result(connection_id, future), timeout)
        finally:
            self._results.pop(invocation_id, None)

    async def _await_result(self, connection_id: str, future: asyncio.Future[Any]) -> Any:
        """The result, or ConnectionError once no server holds the connection (its server died)."""
        while True:
            done, _ = await asyncio.wait((future,), timeout=self.timeout)
            if done:
                return future.result()
            try:
                gone = not await self._exists(connection_id)
            except BackplaneUnavailable:
                continue  # cannot tell now; the caller's timeout still bounds the wait
            if gone and not future.done():
                raise ConnectionError(f"Connection '{connection_id}' disconnected.")

    def set_connection_result(self, connection_id: str, completion: CompletionMessage) -> None:
        call = self._remote_calls.pop(completion.invocation_id, None)
        if call is None or call.connection_id != connection_id:
            self.local.set_connection_result(connection_id, completion)
            return
        connection = self.local.connections.get(connection_id)
        protocol = connection.protocol if connection is not None else PROTOCOLS["json"]
        self._return(call, protocol, completion)

    def _return(self, call: _RemoteCall, protocol: HubProtocol, completion: CompletionMessage) -> None:
        data = write_completion(protocol.name, protocol.encode(completion))
        self._tasks.spawn(self._publish_return(call.return_channel.encode(), data))

    async def _publish_return(self, channel: bytes, data: bytes) -> None:
        try:
            await self._publish(channel, data)
        except BackplaneUnavailable as exc:
            log.warning("Redis backplane: a client result could not be returned: %s", exc)

    def _on_return(self, data: bytes) -> None:
        name, framed = read_completion(data)
        protocol = PROTOCOLS.get(name)
        if protocol is None:
            log.error("Redis backplane: a client result in protocol %s, which this server lacks", Untrusted(name))
            return
        try:
            messages = protocol.decoder(None).feed(framed)
        except ValueError as exc:
            raise BackplaneProtocolError(f"Invalid client result: {exc}") from None
        for message in messages:
            if not isinstance(message, CompletionMessage):
                continue
            waiting = self._results.get(message.invocation_id)
            if waiting is None or waiting[1].done():
                continue
            if message.error is not None:
                waiting[1].set_exception(HubException(message.error))
            else:
                waiting[1].set_result(message.result)
