"""One connection as the hub layer sees it: handshake, decoding, keep-alive, close.

It sits on the transport-neutral Connection and never on a transport: it reads the
bytes a transport hands it and writes encoded messages into the connection's outbox.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import TYPE_CHECKING, Any

from .background import spawn
from .clients import HubCallerClients
from .connection import Connection
from .errors import error_text
from .hub import HubCallerContext
from .invocation_queue import InvocationQueue
from .options import HubOptions, TransportKind
from .protocol import (
    JSON,
    PROTOCOLS,
    SEQUENCED_TYPES,
    AckMessage,
    CloseMessage,
    HubMessage,
    HubProtocol,
    InvocationMessage,
    MessageDecoder,
    MessageType,
    ProtocolError,
    SequenceMessage,
    TransferFormat,
    handshake_response,
    parse_handshake_request,
)
from .stateful_reconnect import MessageBuffer
from .upload_stream import UploadStream

if TYPE_CHECKING:
    from .dispatcher import HubDispatcher

log = logging.getLogger(__name__)

CLOSED_WITH_ERROR = "Connection closed with an error."


class HubConnectionContext:
    def __init__(self, connection: Connection, dispatcher: HubDispatcher, options: HubOptions) -> None:
        self.connection = connection
        self.connection_id = connection.id
        self.dispatcher = dispatcher
        self.options = options
        self.user = connection.user
        self.user_identifier = connection.user.id if connection.user is not None else None
        self.protocol: HubProtocol = JSON
        self.group_names: set[str] = set()
        self.handshake_done = False
        self._handshake_buffer = bytearray()
        self._decoder: MessageDecoder | None = None
        self.buffer: MessageBuffer | None = None
        now = time.monotonic()
        self._started_at = now
        self._last_sent = now
        self._last_received = now
        self._sent_since_beat = False
        self._received_since_beat = False
        self._connected = False
        self.close_received = False
        self.streams: dict[str, asyncio.Task[None]] = {}
        self.cancelled_streams: set[str] = set()
        self.uploads: dict[str, UploadStream] = {}
        self.pending_results: dict[str, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self.invocations = InvocationQueue(options.max_parallel_invocations)
        self.caller_context = HubCallerContext(
            connection.id, connection.user, connection.items, connection.request, self.abort
        )
        self.caller_clients = HubCallerClients(dispatcher.lifetime, options, connection.id)

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
                self.connection.abort()
                return
            if self.connection.transport is None:
                return  # the socket is down: the replay after reconnect delivers it
        self._sent_since_beat = True
        self.connection.send(data)
        telemetry = self.dispatcher.telemetry  # the endpoint's, not a field: idle connections stay small
        if telemetry is not None:
            telemetry.sent()

    async def invoke_client(self, method: str, args: tuple[Any, ...], timeout: float | None) -> Any:
        """Ask this client for a result: our own invocation id, answered by its Completion."""
        if self.connection.closed:
            raise ConnectionError(f"Connection '{self.connection_id}' disconnected.")
        invocation_id = f"s{next(self._ids)}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending_results[invocation_id] = future
        try:
            self.write(InvocationMessage(method, list(args), invocation_id))
            return await asyncio.wait_for(future, timeout)
        finally:
            self.pending_results.pop(invocation_id, None)

    # -- the Application side of Connection --------------------------------
    def start(self) -> None:
        self._started_at = time.monotonic()

    async def receive(self, data: bytes) -> None:
        if self.connection.closed:
            return  # late bytes from a transport that has not noticed yet
        self._received_since_beat = True
        if not self.handshake_done:
            await self._handshake(data)
            return
        assert self._decoder is not None
        try:
            messages = self._decoder.feed(data)
        except ProtocolError as exc:
            log.info("connection %s: protocol error: %s", self.connection_id, exc)
            await self.close(error_text(CLOSED_WITH_ERROR, exc, self.options.enable_detailed_errors), exception=exc)
            return
        telemetry = self.dispatcher.telemetry
        if telemetry is not None:
            telemetry.received(len(messages))
        buffer = self.buffer
        for message in messages:
            if buffer is not None and not buffer.should_process(
                message.type in SEQUENCED_TYPES, message.type == MessageType.SEQUENCE
            ):
                continue
            waiting = self.dispatcher.dispatch(self, message)
            if waiting is not None:
                await waiting
            if self.connection.closed:
                return

    async def _handshake(self, data: bytes) -> None:
        buffer = self._handshake_buffer
        buffer += data
        limit = self.options.max_message_size
        try:
            parsed = parse_handshake_request(buffer)
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
        if binary and self.connection.transport_kind is TransportKind.SERVER_SENT_EVENTS:
            await self._fail_handshake(
                f"Cannot use the '{protocol.name}' protocol on the current transport. "
                "The transport does not support 'Binary' transfer format."
            )
            return
        self.protocol = protocol
        self.connection.binary = binary
        self._decoder = protocol.decoder(limit)
        if (
            self.connection.stateful_reconnect
            and request.version >= 2
            and self.connection.transport_kind is TransportKind.WEBSOCKETS
        ):
            self.buffer = MessageBuffer(self.options.stateful_reconnect_buffer_size)
        rest = bytes(buffer[used:])
        buffer.clear()
        self.handshake_done = True
        self.connection.send(handshake_response())
        try:
            await self.dispatcher.on_connected(self)
        except Exception as exc:
            log.exception("connection %s: on_connected failed", self.connection_id)
            await self.close(error_text(CLOSED_WITH_ERROR, exc, self.options.enable_detailed_errors), exception=exc)
            return
        self._connected = True
        if rest:
            await self.receive(rest)

    async def _fail_handshake(self, error: str) -> None:
        log.info("connection %s: handshake failed: %s", self.connection_id, error)
        self.connection.send(handshake_response(error))
        await self.connection.dispose()

    async def transport_ended(self, exception: BaseException | None) -> None:
        """The transport is gone. Under stateful reconnect the connection waits for the client."""
        if self.connection.closed or self.connection.transport is not None:
            return  # already closed, or a newer socket has taken over
        if self.buffer is not None and not self.close_received:
            log.debug("connection %s: socket dropped, awaiting reconnect", self.connection_id)
            self.buffer.disconnected()
            return
        await self.connection.dispose(exception)

    @property
    def can_resume(self) -> bool:
        """Stateful reconnect is on: a new socket for this connection replaces the old one."""
        return self.handshake_done and self.buffer is not None and not self.close_received

    def resumed(self) -> None:
        """A new socket for a dropped connection: announce what we replay, then replay it."""
        assert self.buffer is not None
        self.buffer.disconnected()
        if self.connection.has_pending:
            self.connection.take_pending()  # all of it is in the replay below
        first, replay = self.buffer.resend()
        self.connection.send(self.protocol.encode(SequenceMessage(first)))
        for data in replay:
            self.connection.send(data)

    def apply_sequence(self, sequence_id: int) -> bool:
        return self.buffer is None or self.buffer.reset_sequence(sequence_id)

    def tick(self, now: float) -> None:
        """The shared heartbeat: handshake timeout, acks, keep-alive pings, client timeout."""
        if self.connection.closed:
            return
        if not self.handshake_done:
            if now - self._started_at > self.options.handshake_timeout and self.connection.transport_kind:
                spawn(self._fail_handshake("Handshake was canceled."))
            return
        if self.connection.transport is None or self.connection.transport_kind is TransportKind.LONG_POLLING:
            return  # long polling has inherent keep-alive; a dropped stateful socket waits
        buffer = self.buffer
        if buffer is not None and buffer.ack_due:
            buffer.ack_due = False
            self.connection.send(self.protocol.encode(AckMessage(buffer.latest_received_id)))
        if self._sent_since_beat:
            self._sent_since_beat = False
            self._last_sent = now
        elif now - self._last_sent >= self.options.keep_alive_interval:
            self._last_sent = now
            self.connection.send(self.protocol.ping)
        if self._received_since_beat:
            self._received_since_beat = False
            self._last_received = now
        elif now - self._last_received > self.options.client_timeout:
            log.info("connection %s: client timeout elapsed", self.connection_id)
            spawn(self.close(allow_reconnect=True, exception=TimeoutError("Client timeout elapsed.")))

    # -- closing ---------------------------------------------------------
    def abort(self, allow_reconnect: bool = False) -> None:
        spawn(self.close(allow_reconnect=allow_reconnect))

    async def close(
        self,
        error: str | None = None,
        *,
        allow_reconnect: bool = False,
        exception: BaseException | None = None,
        going_away: bool = False,
    ) -> None:
        """Server-initiated close: a Close message first, then the transport."""
        if self.connection.closed:
            return
        if self.handshake_done:
            self.write(CloseMessage(error, allow_reconnect))
        await self.connection.dispose(exception, going_away=going_away)

    async def closed(self, error: BaseException | None) -> None:
        """Runs once, after the transport is gone: stop work, fail waiters, tell the hub."""
        self.caller_context.ended()
        self.invocations.clear()
        for task in list(self.streams.values()):
            task.cancel()
        for upload in self.uploads.values():
            upload.complete("The connection was closed.")
        for future in self.pending_results.values():
            if not future.done():
                future.set_exception(ConnectionError(f"Connection '{self.connection_id}' disconnected."))
        if self._connected:
            self._connected = False
            await self.dispatcher.on_disconnected(self, error)
