"""Turns hub messages into hub method calls, and results and errors into messages."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, cast

from .clients import GroupManager
from .errors import error_text
from .hub import Hub, HubException
from .hub_connection import HubConnectionContext
from .hub_methods import BindingError, HubMethod, discover, normalize
from .lifetime import HubLifetimeManager
from .options import HubOptions
from .protocol import (
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HubMessage,
    InvocationMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)
from .telemetry import SignalRTelemetry
from .upload_stream import UploadStream

log = logging.getLogger(__name__)

HubFactory = Callable[[], Hub]
#: Spellings of targets remembered per hub; a client inventing more only pays `normalize`.
_MAX_SPELLINGS = 1024


class HubDispatcher:
    def __init__(
        self,
        hub_type: type[Hub],
        lifetime: HubLifetimeManager,
        options: HubOptions,
        factory: HubFactory | None = None,
    ) -> None:
        self.hub_type = hub_type
        self.methods = discover(hub_type)
        self.lifetime = lifetime
        self.options = options
        self.groups = GroupManager(lifetime)
        self._factory: HubFactory = factory or hub_type
        self._detailed = options.enable_detailed_errors
        #: Targets as clients spell them ("SendMessage"), so a call skips `normalize`.
        self._by_target: dict[str, HubMethod] = {}
        #: Set by the endpoint when an OpenTelemetry SDK is configured.
        self.telemetry: SignalRTelemetry | None = None

    def _hub(self, connection: HubConnectionContext) -> Hub:
        hub = self._factory()
        hub.context = connection.caller_context
        hub.clients = connection.caller_clients
        hub.groups = self.groups
        return hub

    # -- lifecycle -------------------------------------------------------
    async def on_connected(self, connection: HubConnectionContext) -> None:
        await self.lifetime.on_connected(connection)
        await self._hub(connection).on_connected()

    async def on_disconnected(self, connection: HubConnectionContext, error: BaseException | None) -> None:
        try:
            await self._hub(connection).on_disconnected(error)
        except Exception:
            log.exception("connection %s: on_disconnected failed", connection.connection_id)
        finally:
            await self.lifetime.on_disconnected(connection)

    # -- messages --------------------------------------------------------
    def dispatch(self, connection: HubConnectionContext, message: HubMessage) -> Awaitable[None] | None:
        """Act on one message; what the receive loop must wait for before the next, if anything.

        Most messages need no waiting (an invocation runs or queues at once), so they cost
        no coroutine: only upload backpressure and closing hand back an awaitable.
        """
        if isinstance(message, InvocationMessage):
            self._invocation(connection, message)
        elif isinstance(message, StreamInvocationMessage):
            self._stream_invocation(connection, message)
        elif isinstance(message, StreamItemMessage):
            upload = connection.uploads.get(message.invocation_id)
            if upload is None:
                log.debug("connection %s: item for unknown stream %s", connection.connection_id, message.invocation_id)
            else:
                return upload.put(message.item)
        elif isinstance(message, CompletionMessage):
            self._completion(connection, message)
        elif isinstance(message, CancelInvocationMessage):
            task = connection.streams.get(message.invocation_id)
            if task is not None:
                connection.cancelled_streams.add(message.invocation_id)
                task.cancel()
        elif isinstance(message, CloseMessage):
            connection.close_received = True
            if message.error:
                log.info("connection %s: client closed with error: %s", connection.connection_id, message.error)
            return connection.connection.dispose()
        elif isinstance(message, AckMessage):
            if connection.buffer is not None:
                connection.buffer.ack(message.sequence_id)
        elif isinstance(message, SequenceMessage) and not connection.apply_sequence(message.sequence_id):
            return connection.close("Sequence ID greater than amount of messages we've received.")
        # Ping: receiving anything already reset the client timeout
        return None

    def _completion(self, connection: HubConnectionContext, message: CompletionMessage) -> None:
        upload = connection.uploads.pop(message.invocation_id, None)
        if upload is not None:
            upload.complete(message.error)
            return
        future = connection.pending_results.get(message.invocation_id)
        if future is None or future.done():
            log.debug("connection %s: unexpected completion %s", connection.connection_id, message.invocation_id)
        elif message.error is not None:
            future.set_exception(HubException(message.error))
        else:
            future.set_result(message.result)

    def _fail(
        self, connection: HubConnectionContext, message: InvocationMessage | StreamInvocationMessage, text: str
    ) -> None:
        if message.invocation_id is not None:
            connection.write(CompletionMessage.with_error(message.invocation_id, text))
        else:
            log.info("connection %s: %s", connection.connection_id, text)

    def _resolve(
        self,
        connection: HubConnectionContext,
        message: InvocationMessage | StreamInvocationMessage,
        streaming: bool,
    ) -> tuple[HubMethod, list[Any]] | None:
        """Find and bind the method, or answer with ASP.NET Core's error and return None."""
        target = message.target
        method = self._by_target.get(target)
        if method is None:
            method = self.methods.get(normalize(target))
            if method is not None and len(self._by_target) < _MAX_SPELLINGS:
                self._by_target[target] = method
        if method is None:
            text = f"Failed to invoke '{target}' due to an error on the server. HubException: Method does not exist."
        elif method.streaming and not streaming:
            text = f"The client attempted to invoke the streaming '{target}' method with a non-streaming invocation."
        elif streaming and not method.streaming:
            text = f"The client attempted to invoke the non-streaming '{target}' method with a streaming invocation."
        elif method.requires_user and connection.user is None:
            text = f"Failed to invoke '{target}' because user is unauthorized"
        else:
            return self._bind(connection, message, method)
        self._fail(connection, message, text)
        return None

    def _bind(
        self,
        connection: HubConnectionContext,
        message: InvocationMessage | StreamInvocationMessage,
        method: HubMethod,
    ) -> tuple[HubMethod, list[Any]] | None:
        uploads: list[UploadStream] = []
        for stream_id in message.stream_ids or ():
            if stream_id in connection.uploads:
                self._fail(connection, message, f"Invocation ID '{stream_id}' is already in use.")
                return None
            uploads.append(UploadStream(stream_id, self.options.stream_buffer_capacity))
        try:
            arguments = method.bind(message.arguments, uploads)
        except BindingError as exc:
            failure = f"Failed to invoke '{message.target}' due to an error on the server."
            self._fail(connection, message, error_text(failure, _InvalidData(str(exc)), self._detailed))
            return None
        for upload in uploads:
            connection.uploads[upload.stream_id] = upload
        return method, arguments

    def _invocation(self, connection: HubConnectionContext, message: InvocationMessage) -> None:
        resolved = self._resolve(connection, message, streaming=False)
        if resolved is None:
            return
        method, arguments = resolved
        if self.telemetry is not None:
            method = self.telemetry.traced(self.hub_type, connection, message, method)
        queue = connection.invocations
        if method.is_async or not queue.has_room():
            queue.submit(partial(self._run, connection, message, method, arguments))
            return
        # A plain `def` with a free slot runs now, as ASP.NET Core runs a synchronous hub
        # method: no task, and its Completion leaves in this loop turn.
        pending = self._call(connection, message, method, arguments)
        if pending is not None:  # a plain def that hands back a coroutine
            queue.submit(partial(self._settle, connection, message, method, pending))

    async def _run(
        self, connection: HubConnectionContext, message: InvocationMessage, method: HubMethod, arguments: list[Any]
    ) -> None:
        pending = self._call(connection, message, method, arguments)
        if pending is not None:
            await self._settle(connection, message, method, pending)

    def _call(
        self, connection: HubConnectionContext, message: InvocationMessage, method: HubMethod, arguments: list[Any]
    ) -> Awaitable[Any] | None:
        """Call the method: completed at once, or the awaitable its outcome waits on."""
        try:
            result = method.function(self._hub(connection), *arguments)
        except Exception as exc:
            self._complete(connection, message, method, None, exc)
            return None
        if method.is_async or inspect.isawaitable(result):
            return cast("Awaitable[Any]", result)
        self._complete(connection, message, method, result, None)
        return None

    async def _settle(
        self, connection: HubConnectionContext, message: InvocationMessage, method: HubMethod, pending: Awaitable[Any]
    ) -> None:
        try:
            result = await pending
        except Exception as exc:
            self._complete(connection, message, method, None, exc)
        else:
            self._complete(connection, message, method, result, None)

    def _complete(
        self,
        connection: HubConnectionContext,
        message: InvocationMessage,
        method: HubMethod,
        result: Any,
        error: Exception | None,
    ) -> None:
        """The method's outcome as a Completion (none for a non-blocking invocation)."""
        for stream_id in message.stream_ids or ():
            connection.uploads.pop(stream_id, None)
        target, invocation_id = message.target, message.invocation_id
        if error is not None:
            if not isinstance(error, HubException):
                log.error("connection %s: '%s' failed", connection.connection_id, target, exc_info=error)
            if invocation_id is not None and not connection.connection.closed:
                connection.write(CompletionMessage.with_error(invocation_id, self._failed(target, error)))
            return
        if invocation_id is None or connection.connection.closed:
            return
        if result is None and method.void:
            connection.write(CompletionMessage(invocation_id))
            return
        try:
            connection.write(CompletionMessage.with_result(invocation_id, result))
        except (TypeError, ValueError, OverflowError) as exc:  # a result the protocol cannot encode
            log.exception("connection %s: '%s' result not serializable", connection.connection_id, target)
            connection.write(CompletionMessage.with_error(invocation_id, self._failed(target, exc)))

    def _failed(self, target: str, exc: Exception) -> str:
        return error_text(f"An unexpected error occurred invoking '{target}' on the server.", exc, self._detailed)

    def _stream_invocation(self, connection: HubConnectionContext, message: StreamInvocationMessage) -> None:
        invocation_id = message.invocation_id
        if invocation_id in connection.streams:
            in_use = f"Invocation ID '{invocation_id}' is already in use."
            connection.write(CompletionMessage.with_error(invocation_id, in_use))
            return
        resolved = self._resolve(connection, message, streaming=True)
        if resolved is None:
            return
        method, arguments = resolved
        if self.telemetry is not None:
            method = self.telemetry.traced(self.hub_type, connection, message, method)

        async def run() -> None:
            error: str | None = None
            generator = method.function(self._hub(connection), *arguments)
            try:
                async for item in generator:
                    connection.write(StreamItemMessage(invocation_id, item))
            except asyncio.CancelledError:
                if invocation_id not in connection.cancelled_streams:
                    raise  # the connection is closing: nobody to complete to
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
            except Exception as exc:
                if not isinstance(exc, HubException):
                    log.exception("connection %s: stream '%s' failed", connection.connection_id, message.target)
                error = error_text("An error occurred on the server while streaming results.", exc, self._detailed)
            finally:
                await generator.aclose()
                connection.streams.pop(invocation_id, None)
                connection.cancelled_streams.discard(invocation_id)
                for stream_id in message.stream_ids or ():
                    connection.uploads.pop(stream_id, None)
            if not connection.connection.closed:
                connection.write(CompletionMessage(invocation_id, error=error))

        connection.streams[invocation_id] = asyncio.get_running_loop().create_task(run())


class _InvalidData(Exception):
    """Named like .NET's InvalidDataException, whose name the detailed text shows."""


_InvalidData.__name__ = "InvalidDataException"
