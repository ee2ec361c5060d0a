"""Turns hub messages into hub method calls, and results and errors into messages."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, cast

from ..protocol import (
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
from ..untrusted import Untrusted
from .cancellation import CancellationToken
from .clients import GroupManager
from .errors import BackplaneUnavailable, HubException, error_text
from .hub import Hub, default_hub_name
from .hub_connection import HubConnectionContext
from .lifetime import HubLifetimeManager
from .methods import BindingError, HubMethod, discover, normalize
from .options import HubOptions
from .telemetry import HubTelemetry
from .upload_stream import UploadStream

log = logging.getLogger(__name__)

HubFactory = Callable[[], Hub]
#: Spellings of targets remembered per hub; a client inventing more only pays `normalize`.
_MAX_SPELLINGS = 1024


class HubDispatcher:
    """One hub's methods, called from messages: finds and binds the method, runs plain invocations through
    the connection's InvocationQueue and streams as tasks, and writes their results and errors."""

    def __init__(
        self,
        hub_type: type[Hub],
        lifetime: HubLifetimeManager,
        options: HubOptions,
        factory: HubFactory | None = None,
        *,
        hub_name: str | None = None,
        telemetry: HubTelemetry | None = None,
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
        #: None unless an OpenTelemetry SDK is configured.
        self.telemetry = telemetry
        #: The hub's name in spans (`map_hub`'s `hub_name`).
        self.hub_name = hub_name or default_hub_name(hub_type)

    def _hub(self, connection: HubConnectionContext) -> Hub:
        hub = self._factory()
        hub.context = connection.caller_context
        hub.clients = connection.caller_clients
        hub.groups = self.groups
        return hub

    # -- lifecycle -------------------------------------------------------
    async def on_connected(self, connection: HubConnectionContext) -> None:
        await self.lifetime.on_connected(connection)
        try:
            await self._hub(connection).on_connected()
        except BaseException:  # the connection closes, and no on_disconnected follows: forget it here
            await self.lifetime.on_disconnected(connection)
            raise

    async def on_disconnected(self, connection: HubConnectionContext, error: BaseException | None) -> None:
        try:
            await self._hub(connection).on_disconnected(error)
        except Exception:
            log.exception("connection %s: on_disconnected failed", connection.connection_id)
        finally:
            await self.lifetime.on_disconnected(connection)

    async def on_authentication_refreshed(self, connection: HubConnectionContext) -> None:
        await self._hub(connection).on_authentication_refreshed()

    # -- messages --------------------------------------------------------
    def dispatch(self, connection: HubConnectionContext, message: HubMessage) -> Awaitable[None] | None:
        """Act on one message; what the receive loop must wait for before the next, if anything.

        Most messages need no waiting (an invocation runs or queues at once), so they cost
        no coroutine: only upload backpressure and closing hand back an awaitable.
        """
        if isinstance(message, InvocationMessage):
            return self._invocation(connection, message)
        elif isinstance(message, StreamInvocationMessage):
            self._stream_invocation(connection, message)
        elif isinstance(message, StreamItemMessage):
            waiting = connection.uploads.item(message.invocation_id, message.item)
            if waiting is None:
                log.debug(
                    "connection %s: item for unknown stream %s",
                    connection.connection_id,
                    Untrusted(message.invocation_id),
                )
            return waiting
        elif isinstance(message, CompletionMessage):
            if not connection.uploads.complete(message.invocation_id, message.error):
                # a client result: only the lifetime manager knows who waits for it
                self.lifetime.set_connection_result(connection.connection_id, message)
        elif isinstance(message, CancelInvocationMessage):
            connection.streams.cancel(message.invocation_id)
        elif isinstance(message, CloseMessage):
            return connection.client_closed(message.error)
        elif isinstance(message, AckMessage):
            connection.acknowledge(message.sequence_id)
        elif isinstance(message, SequenceMessage) and not connection.apply_sequence(message.sequence_id):
            return connection.close("Sequence ID greater than amount of messages we've received.")
        # Ping: receiving anything already reset the client timeout
        return None

    def _fail(
        self, connection: HubConnectionContext, message: InvocationMessage | StreamInvocationMessage, text: str
    ) -> None:
        if message.invocation_id is not None:
            connection.write(CompletionMessage.with_error(message.invocation_id, text))
        else:
            log.info("connection %s: %s", connection.connection_id, Untrusted(text))

    def _resolve(
        self,
        connection: HubConnectionContext,
        message: InvocationMessage | StreamInvocationMessage,
        streaming: bool,
        token: CancellationToken | None = None,
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
            if token is None and method.token_position is not None:
                token = connection.caller_context.connection_aborted
            return self._bind(connection, message, method, token)
        self._fail(connection, message, text)
        return None

    def _bind(
        self,
        connection: HubConnectionContext,
        message: InvocationMessage | StreamInvocationMessage,
        method: HubMethod,
        token: CancellationToken | None = None,
    ) -> tuple[HubMethod, list[Any]] | None:
        stream_ids = message.stream_ids
        uploads: Sequence[UploadStream] = ()
        if stream_ids:
            prepared = connection.uploads.prepare(stream_ids, self.options.stream_buffer_capacity)
            if isinstance(prepared, str):
                self._fail(connection, message, prepared)
                return None
            uploads = prepared
        try:
            arguments = method.bind(message.arguments, uploads, token)
        except BindingError as exc:
            failure = f"Failed to invoke '{message.target}' due to an error on the server."
            self._fail(connection, message, error_text(failure, _InvalidData(str(exc)), self._detailed))
            return None
        if uploads:
            connection.uploads.open(uploads)
        return method, arguments

    def _invocation(self, connection: HubConnectionContext, message: InvocationMessage) -> Awaitable[None] | None:
        """Runs or queues the method; a full queue hands back what the reader must wait for."""
        resolved = self._resolve(connection, message, streaming=False)
        if resolved is None:
            return None
        method, arguments = resolved
        if self.telemetry is not None and self.telemetry.tracer is not None:
            method = self.telemetry.traced(self.hub_name, connection, message, method)
        queue = connection.invocations
        if method.is_async or not queue.has_room():
            return queue.submit(partial(self._run, connection, message, method, arguments))
        # A plain `def` with a free slot runs now, as ASP.NET Core runs a synchronous hub
        # method: no task, and its Completion leaves in this loop turn.
        pending = self._call(connection, message, method, arguments)
        if pending is not None:  # a plain def that hands back a coroutine
            return queue.submit(partial(self._settle, connection, message, method, pending))
        return None

    async def _run(
        self, connection: HubConnectionContext, message: InvocationMessage, method: HubMethod, arguments: list[Any]
    ) -> None:
        pending = self._call(connection, message, method, arguments)
        if pending is not None:
            await self._settle(connection, message, method, pending)
        waiting = connection.backpressure()  # a big result: the next invocation waits for the client
        if waiting is not None:
            await waiting

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
        if message.stream_ids:
            connection.uploads.forget(message.stream_ids)
        target, invocation_id = message.target, message.invocation_id
        if error is not None:
            text = self._call_failed(connection, target, error)
            if invocation_id is not None and not connection.ended:
                connection.write(CompletionMessage.with_error(invocation_id, text))
            return
        if invocation_id is None or connection.ended:
            return
        if result is None and method.void:
            connection.write(CompletionMessage(invocation_id))
            return
        try:
            connection.write(CompletionMessage.with_result(invocation_id, result))
        except (TypeError, ValueError, OverflowError) as exc:  # a result the protocol cannot encode
            log.exception("connection %s: %s result not serializable", connection.connection_id, Untrusted(target))
            connection.write(CompletionMessage.with_error(invocation_id, self._failed(target, exc)))

    def _failed(self, target: str, exc: Exception) -> str:
        return error_text(f"An unexpected error occurred invoking '{target}' on the server.", exc, self._detailed)

    def _stream_invocation(self, connection: HubConnectionContext, message: StreamInvocationMessage) -> None:
        invocation_id = message.invocation_id
        if invocation_id in connection.streams:
            in_use = f"Invocation ID '{invocation_id}' is already in use."
            connection.write(CompletionMessage.with_error(invocation_id, in_use))
            return
        tasks = connection.connection_context.owner.tasks
        token = CancellationToken(tasks)
        resolved = self._resolve(connection, message, streaming=True, token=token)
        if resolved is None:
            return
        method, arguments = resolved
        if self.telemetry is not None and self.telemetry.tracer is not None:
            method = self.telemetry.traced(self.hub_name, connection, message, method)
        hub = self._hub(connection)
        if method.returns_stream:
            # Called now, as ASP.NET Core calls a method returning a ChannelReader when its
            # StreamInvocation is read: a token callback it registers sees a CancelInvocation
            # that arrives right behind it, and what it raises fails the invocation.
            try:
                source = method.function(hub, *arguments)
            except Exception as exc:
                connection.uploads.forget(message.stream_ids)
                text = self._call_failed(connection, message.target, exc)
                if not connection.ended:
                    connection.write(CompletionMessage.with_error(invocation_id, text))
                return
        else:
            source = method.function(hub, *arguments)  # an async generator: its body runs in the task
        connection.streams.start(
            invocation_id,
            self._stream(connection, message, method, source, token),
            token,
            spawn=tasks.spawn,
            # An async generator is the stream itself: cancelling stops it wherever it is. A
            # method returning its stream is never interrupted while it is called; only the
            # reading of what it returned is (the task marks itself interruptible then).
            interruptible=not method.returns_stream,
            done=partial(self._stream_done, connection, message),
        )

    def _call_failed(self, connection: HubConnectionContext, target: str, error: Exception) -> str:
        """A method raised (a plain one, or one returning its stream before it did): the error text."""
        if isinstance(error, BackplaneUnavailable):
            log.warning("connection %s: %s failed: %s", connection.connection_id, Untrusted(target), error)
        elif not isinstance(error, HubException):
            log.error("connection %s: %s failed", connection.connection_id, Untrusted(target), exc_info=error)
        return self._failed(target, error)

    async def _stream(
        self,
        connection: HubConnectionContext,
        message: StreamInvocationMessage,
        method: HubMethod,
        source: Any,
        token: CancellationToken,
    ) -> str | None:
        """Reads the stream and sends its items; the error text for the Completion, or None."""
        invocation_id = message.invocation_id
        if method.returns_stream:
            if inspect.isawaitable(source):  # an async def (or a plain def handing back a coroutine)
                try:
                    source = await source
                except Exception as exc:
                    return self._call_failed(connection, message.target, exc)
            if not hasattr(source, "__aiter__"):
                log.error(
                    "connection %s: streaming method %s returned %s, not an async iterator",
                    connection.connection_id,
                    method.name,
                    type(source).__name__,
                )
                return (
                    f"The value returned by the streaming method '{method.name}' "
                    "is not a ChannelReader<> or IAsyncEnumerable<>."
                )
            connection.streams.reading(invocation_id)
            if token.cancelled:  # cancelled while it was called: not read at all
                await _close(source)
                return None
        iterator = source
        try:
            iterator = source.__aiter__()
            async for item in iterator:
                if token.cancelled:
                    break
                connection.write(StreamItemMessage(invocation_id, item))
                waiting = connection.backpressure()
                if waiting is not None:
                    await waiting
        except asyncio.CancelledError:
            if not token.cancelled or connection.ended:
                raise  # the connection is closing: nobody to complete to
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
        except Exception as exc:
            if token.cancelled:  # the method gave up because the caller did: not an error
                return None
            if not isinstance(exc, HubException):
                log.exception("connection %s: stream %s failed", connection.connection_id, Untrusted(message.target))
            return error_text("An error occurred on the server while streaming results.", exc, self._detailed)
        finally:
            await _close(iterator)
        return None

    def _stream_done(
        self, connection: HubConnectionContext, message: StreamInvocationMessage, task: asyncio.Task[str | None]
    ) -> None:
        connection.streams.finished(message.invocation_id, task)
        connection.uploads.forget(message.stream_ids)
        if connection.ended:
            return
        error = None if task.cancelled() else task.result()
        connection.write(CompletionMessage(message.invocation_id, error=error))


async def _close(iterator: Any) -> None:
    """Close what a stream read (an async generator runs its `finally`)."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


class _InvalidData(Exception):
    """Named like .NET's InvalidDataException, whose name the detailed text shows."""


_InvalidData.__name__ = "InvalidDataException"
