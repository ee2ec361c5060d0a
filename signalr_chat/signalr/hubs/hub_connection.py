"""One connection as the hub layer sees it: handshake, decoding, keep-alive, close.

It is the Application running on a transport-neutral Connection and never sees a
transport: it reads the bytes a transport hands it, writes encoded messages into the
connection's outbox, and learns what the transport can do from its features.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable
from typing import Protocol

from ..connections import Connection, User
from ..protocol import (
    JSON,
    PROTOCOLS,
    SEQUENCED_TYPES,
    AckMessage,
    CloseMessage,
    HubMessage,
    HubProtocol,
    MessageDecoder,
    MessageType,
    ProtocolError,
    SequenceMessage,
    TransferFormat,
    handshake_response,
    parse_handshake_request,
)
from ..protocol.stateful_reconnect import MessageBuffer
from ..untrusted import Untrusted
from .clients import HubCallerClients
from .errors import error_text
from .hub import HubCallerContext
from .invocation_queue import InvocationQueue
from .lifetime import HubLifetimeManager
from .options import HubOptions
from .streams import ServerStreams, UploadStreams


class MessageCounter(Protocol):
    """Counts messages in and out (the hub's telemetry, when an OpenTelemetry SDK is configured):
    plain integers the connection adds to and the SDK reads at collection."""

    messages_sent: int
    messages_received: int


class MessageDispatcher(Protocol):
    """What the connection hands its messages to (the HubDispatcher)."""

    @property
    def telemetry(self) -> MessageCounter | None: ...

    def dispatch(self, connection: HubConnectionContext, message: HubMessage) -> Awaitable[None] | None: ...

    async def on_connected(self, connection: HubConnectionContext) -> None: ...

    async def on_disconnected(self, connection: HubConnectionContext, error: BaseException | None) -> None: ...

    async def on_authentication_refreshed(self, connection: HubConnectionContext) -> None: ...


class HubConnectionState(enum.Enum):
    """Where a hub connection is in its life; every change is logged (DEBUG).

    HANDSHAKING --handshake accepted--> CONNECTING --on_connected returned--> CONNECTED
    CONNECTED --the connection begins to end--> CLOSING --its transport is gone--> CLOSED
    HANDSHAKING | CONNECTING --the connection begins to end--> CLOSED (the hub never knew it)

    A connection begins to end when a Close is sent or received, its transport is gone for
    good, it is aborted, times out, or the server stops. From CLOSING on nothing more is read
    or dispatched; on_disconnected runs once, on CLOSING -> CLOSED.
    """

    #: Waiting for the handshake request (the handshake timeout runs).
    HANDSHAKING = "handshaking"
    #: Handshake answered; the hub's on_connected runs. Pings and the client timeout run.
    CONNECTING = "connecting"
    #: Messages are dispatched. A dropped socket under stateful reconnect stays CONNECTED.
    CONNECTED = "connected"
    #: Ending: streams and uploads are stopped when the transport is gone.
    CLOSING = "closing"
    #: Over: the hub has nothing more to do with it.
    CLOSED = "closed"


_HANDSHAKING = HubConnectionState.HANDSHAKING
_CONNECTING = HubConnectionState.CONNECTING
_CONNECTED = HubConnectionState.CONNECTED
_CLOSING = HubConnectionState.CLOSING
_CLOSED = HubConnectionState.CLOSED


log = logging.getLogger(__name__)

CLOSED_WITH_ERROR = "Connection closed with an error."


class HubConnectionContext:
    """A connection as the hub layer sees it: handshake, decoding, writing, keep-alive and its explicit
    HubConnectionState. The connection's facts are read from the Connection, never copied."""

    def __init__(
        self,
        connection: Connection,
        dispatcher: MessageDispatcher,
        lifetime: HubLifetimeManager,
        options: HubOptions,
    ) -> None:
        self.connection_context = connection
        self.dispatcher = dispatcher
        self.options = options
        self.protocol: HubProtocol = JSON
        self._state = _HANDSHAKING
        self._handshake_buffer = bytearray()
        self._decoder: MessageDecoder | None = None
        self.buffer: MessageBuffer | None = None
        now = time.monotonic()
        self._started_at = now
        self._last_sent = now
        self._last_received = now
        self._sent_since_beat = False
        self._received_since_beat = False
        #: Server-to-client streams and client uploads: the dispatcher works through these.
        self.streams = ServerStreams()
        self.uploads = UploadStreams()
        self.invocations = InvocationQueue(options.max_parallel_invocations, connection.owner.tasks)
        self.caller_context = HubCallerContext(connection, self.abort)
        self.caller_clients = HubCallerClients(lifetime, options, connection.id)

    # -- the facts: the connection's own ---------------------------------------
    @property
    def connection_id(self) -> str:
        return self.connection_context.id

    @property
    def user(self) -> User | None:
        return self.connection_context.user

    @property
    def user_identifier(self) -> str | None:
        user = self.connection_context.user
        return user.id if user is not None else None

    # -- the state ---------------------------------------------------------------
    @property
    def state(self) -> HubConnectionState:
        return self._state

    def _enter(self, state: HubConnectionState) -> None:
        log.debug("connection %s: %s -> %s", self.connection_id, self._state.name, state.name)
        self._state = state

    @property
    def ended(self) -> bool:
        """The connection is over or ending: nothing more is written or dispatched."""
        state = self._state
        return state is _CLOSING or state is _CLOSED

    # -- writing ---------------------------------------------------------
    def write(self, message: HubMessage) -> None:
        self.write_encoded(self.protocol.encode(message), message.type in SEQUENCED_TYPES)

    def write_encoded(self, data: bytes, sequenced: bool = True) -> None:
        """Queue one encoded record; sequenced records are kept for replay under stateful reconnect."""
        buffer = self.buffer
        if buffer is not None and sequenced:
            buffer.sent(data)
            if buffer.overflowing:
                log.warning("connection %s: reconnect buffer full, closing", self.connection_id)
                self.connection_context.abort()
                return
            if self.connection_context.transport is None:
                return  # the socket is down: the replay after reconnect delivers it
        self._sent_since_beat = True
        self.connection_context.send(data)
        telemetry = self.dispatcher.telemetry  # the endpoint's, not a field: idle connections stay small
        if telemetry is not None:
            telemetry.messages_sent += 1

    def backpressure(self) -> Awaitable[None] | None:
        """None while the client keeps up; else a wait for it, which drops it after `send_timeout`."""
        room = self.connection_context.room()
        return None if room is None else self._wait_for_room(room)

    async def _wait_for_room(self, room: asyncio.Future[None]) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(room), self.options.send_timeout)
        except TimeoutError:
            log.warning(
                "connection %s: client took nothing for %.0f s, dropping slow client",
                self.connection_id,
                self.options.send_timeout,
            )
            self.connection_context.abort()

    # -- the Application side of Connection --------------------------------
    def start(self) -> None:
        self._started_at = time.monotonic()

    async def receive(self, data: bytes) -> None:
        if self._state is not _CONNECTED:
            if self._state is _HANDSHAKING:
                self._received_since_beat = True
                await self._handshake(data)
            return  # else late bytes from a transport that has not noticed the end yet
        self._received_since_beat = True
        assert self._decoder is not None
        try:
            messages = self._decoder.feed(data)
        except ProtocolError as exc:
            log.info("connection %s: protocol error: %s", self.connection_id, Untrusted(exc))
            await self.close(error_text(CLOSED_WITH_ERROR, exc, self.options.enable_detailed_errors), exception=exc)
            return
        telemetry = self.dispatcher.telemetry
        if telemetry is not None:
            telemetry.messages_received += len(messages)
        if messages:
            self.invocations.record_size = len(data) // len(messages)  # what a queued one holds
        buffer = self.buffer
        for message in messages:
            if buffer is not None and not buffer.should_process(
                message.type in SEQUENCED_TYPES, message.type == MessageType.SEQUENCE
            ):
                continue
            waiting = self.dispatcher.dispatch(self, message)
            if waiting is not None:
                await waiting
            if self._state is not _CONNECTED:
                return

    async def _handshake(self, data: bytes) -> None:
        buffer = self._handshake_buffer
        buffer += data
        limit = self.options.max_message_size
        try:
            parsed = parse_handshake_request(buffer, limit)
        except ProtocolError as exc:
            await self._fail_handshake(
                error_text(
                    "An unexpected error occurred during connection handshake.",
                    exc,
                    self.options.enable_detailed_errors,
                )
            )
            return
        if parsed is None:
            if limit is not None and len(buffer) > limit:
                await self._fail_handshake("Handshake was canceled.")
            return
        request, used = parsed
        protocol = PROTOCOLS.get(request.protocol) if request.protocol in self.options.protocols else None
        if protocol is None:
            await self._fail_handshake(f"The protocol '{request.protocol}' is not supported.")
            return
        if request.version > protocol.version:
            await self._fail_handshake(
                f"The server does not support version {request.version} of the '{protocol.name}' protocol."
            )
            return
        binary = protocol.transfer_format is TransferFormat.BINARY
        features = self.connection_context.features
        if binary and features is not None and not features.binary:
            await self._fail_handshake(
                f"Cannot use the '{protocol.name}' protocol on the current transport. "
                "The transport does not support 'Binary' transfer format."
            )
            return
        self.protocol = protocol
        self.connection_context.binary = binary
        self._decoder = protocol.decoder(limit)
        if self.connection_context.stateful_reconnect and request.version >= 2 and features and features.reconnectable:
            self.buffer = MessageBuffer(self.options.stateful_reconnect_buffer_size)
        rest = bytes(buffer[used:])
        buffer.clear()
        self._enter(_CONNECTING)
        self.connection_context.send(handshake_response())
        try:
            await self.dispatcher.on_connected(self)
        except Exception as exc:
            log.exception("connection %s: on_connected failed", self.connection_id)
            await self.close(error_text(CLOSED_WITH_ERROR, exc, self.options.enable_detailed_errors), exception=exc)
            return
        if self._state is not _CONNECTING:  # it ended while on_connected ran: the hub knows it, so
            await self._disconnected(None)  # it hears of the end (on_closed did not tell it)
            return
        self._enter(_CONNECTED)
        if rest:
            await self.receive(rest)

    async def _fail_handshake(self, error: str) -> None:
        log.info("connection %s: handshake failed: %s", self.connection_id, Untrusted(error))
        self.connection_context.send(handshake_response(error))
        await self.connection_context.dispose()

    async def on_transport_ended(self, exception: BaseException | None) -> None:
        """The transport is gone. Under stateful reconnect the connection waits for the client."""
        if self.ended or self.connection_context.transport is not None:
            return  # already closing, or a newer socket has taken over
        if self.buffer is not None:  # a Close from the client would have ended it already
            log.debug("connection %s: socket dropped, awaiting reconnect", self.connection_id)
            self.buffer.disconnected()
            return
        await self.connection_context.dispose(exception)

    @property
    def accepts_reconnect(self) -> bool:
        """Stateful reconnect is on: a new socket for this connection replaces the old one."""
        state = self._state
        return self.buffer is not None and (state is _CONNECTED or state is _CONNECTING)

    def on_reconnected(self) -> None:
        """A new socket for a dropped connection: announce what we replay, then replay it."""
        assert self.buffer is not None
        self.buffer.disconnected()
        if self.connection_context.has_pending:
            self.connection_context.take_pending()  # all of it is in the replay below
        first, replay = self.buffer.resend()
        self.connection_context.send(self.protocol.encode(SequenceMessage(first)))
        for data in replay:
            self.connection_context.send(data)

    def apply_sequence(self, sequence_id: int) -> bool:
        return self.buffer is None or self.buffer.reset_sequence(sequence_id)

    def acknowledge(self, sequence_id: int) -> None:
        """The client's Ack under stateful reconnect: what it has is no longer kept for replay."""
        if self.buffer is not None:
            self.buffer.ack(sequence_id)

    def tick(self, now: float) -> None:
        """The shared heartbeat: handshake timeout, acks, keep-alive pings, client timeout."""
        state = self._state
        if state is _HANDSHAKING:
            if now - self._started_at > self.options.handshake_timeout and self.connection_context.features:
                self.connection_context.spawn(self._fail_handshake("Handshake was canceled."))
            return
        if state is _CLOSING or state is _CLOSED:
            return
        features = self.connection_context.features
        if self.connection_context.transport is None or features is None or features.inherent_keep_alive:
            return  # long polling shows the client is there by polling; a dropped stateful socket waits
        buffer = self.buffer
        if buffer is not None and buffer.ack_due:
            buffer.ack_due = False
            self.connection_context.send(self.protocol.encode(AckMessage(buffer.latest_received_id)))
        if self._sent_since_beat:
            self._sent_since_beat = False
            self._last_sent = now
        elif now - self._last_sent >= self.options.keep_alive_interval:
            self._last_sent = now
            self.connection_context.send(self.protocol.ping)
        if self._received_since_beat:
            self._received_since_beat = False
            self._last_received = now
        elif now - self._last_received > self.options.client_timeout:
            log.info("connection %s: client timeout elapsed", self.connection_id)
            self.connection_context.spawn(
                self.close(allow_reconnect=True, exception=TimeoutError("Client timeout elapsed."))
            )

    def close_requested(self) -> None:
        """The connection layer closes the connection (its authentication expired): a Close
        message with `allowReconnect` and no error, as ASP.NET Core's HubConnectionContext does
        when HttpConnectionManager requests the close (AbortAllowReconnect)."""
        self.connection_context.spawn(self.close(allow_reconnect=True))

    def user_refreshed(self, user: User) -> None:
        """A newer authentication of the same user: later invocations see it in `context.user`,
        and the hub's `on_authentication_refreshed` runs. `user_identifier` stays: user routing
        is keyed to the connection's first identity, as in ASP.NET Core."""
        # the connection holds the user (Connection.refresh_user set it): context.user reads it there
        if self.state is HubConnectionState.CONNECTED:
            self.connection_context.spawn(self._authentication_refreshed())

    async def _authentication_refreshed(self) -> None:
        try:
            await self.dispatcher.on_authentication_refreshed(self)
        except Exception:
            log.exception("connection %s: on_authentication_refreshed failed", self.connection_id)

    # -- closing ---------------------------------------------------------
    def abort(self, allow_reconnect: bool = False) -> None:
        self.connection_context.spawn(self.close(allow_reconnect=allow_reconnect))

    async def close(
        self,
        error: str | None = None,
        *,
        allow_reconnect: bool = False,
        exception: BaseException | None = None,
        going_away: bool = False,
    ) -> None:
        """Server-initiated close: a Close message first (once the handshake is answered), then the transport."""
        state = self._state
        if state is _CLOSING or state is _CLOSED:
            return
        if state is not _HANDSHAKING:
            self.write(CloseMessage(error, allow_reconnect))
        await self.connection_context.dispose(exception, going_away=going_away)

    def client_closed(self, error: str | None) -> Awaitable[None]:
        """The client's Close message: the connection ends, and no reconnect is awaited."""
        if error:
            log.info("connection %s: client closed with error: %s", self.connection_id, Untrusted(error))
        return self.connection_context.dispose()

    def on_closing(self) -> None:
        """The connection has begun to end: nothing more is read or dispatched."""
        state = self._state
        if state is _CONNECTED:
            self._enter(_CLOSING)
        elif state is _HANDSHAKING or state is _CONNECTING:
            self._enter(_CLOSED)  # the hub never knew it (or on_connected finishing tells it)

    async def on_closed(self, error: BaseException | None) -> None:
        """Runs once, after the transport is gone: stop work, tell methods, tell the hub."""
        told = self._state is _CLOSING
        if self._state is not _CLOSED:
            self._enter(_CLOSED)
        self.caller_context.ended()
        self.invocations.clear()
        self.streams.cancel_all()
        self.uploads.complete_all("The connection was closed.")
        if told:
            await self._disconnected(error)

    async def _disconnected(self, error: BaseException | None) -> None:
        await self.dispatcher.on_disconnected(self, error)
