"""Which methods of a hub clients may call, and how their arguments bind."""

from __future__ import annotations

import collections.abc
import inspect
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .cancellation import CancellationToken
from .hub import Hub, requires_user

_STREAM_ORIGINS = (
    collections.abc.AsyncIterator,
    collections.abc.AsyncIterable,
    collections.abc.AsyncGenerator,
)
_RESERVED = frozenset(name for name in dir(Hub) if not name.startswith("_"))


def normalize(name: str) -> str:
    """`SendMessage`, `sendMessage` and `send_message` name one method, as lookup is case-insensitive."""
    return name.replace("_", "").lower()


class BindingError(Exception):
    """Arguments that do not fit the method: the client gets the binding-failure text."""


@dataclass(frozen=True, slots=True)
class HubMethod:
    """A hub method as `discover` found it, once per hub type: how its arguments bind and how it runs, so
    an invocation inspects nothing."""

    name: str
    function: Any
    parameter_count: int
    #: Positions of parameters that receive client upload streams.
    stream_positions: tuple[int, ...]
    #: Position of the CancellationToken parameter the dispatcher supplies, if any.
    token_position: int | None
    #: Answers a StreamInvocation: an async generator, or a method that returns a stream.
    streaming: bool
    #: Returns its stream (a plain `def`, or an `async def` annotated `-> AsyncIterator[T]`
    #: that returns one, as .NET's ChannelReader methods): called when its StreamInvocation
    #: is read, and an exception it raises before returning fails the invocation.
    returns_stream: bool
    #: `async def`: needs a task. A plain `def` runs at once when the connection has room.
    is_async: bool
    #: Ends with *args: extra arguments are accepted (a Python addition; .NET has none).
    variadic: bool
    #: A None result completes without a result: `-> None`, or no return annotation.
    void: bool
    requires_user: bool

    def bind(self, arguments: list[Any], streams: Sequence[Any], token: CancellationToken | None = None) -> list[Any]:
        supplied = len(self.stream_positions) + (self.token_position is not None)
        expected = self.parameter_count - supplied
        if len(arguments) != expected and not (self.variadic and len(arguments) > expected):
            raise BindingError(f"Invocation provides {len(arguments)} argument(s) but target expects {expected}.")
        if len(streams) != len(self.stream_positions):
            if not self.stream_positions:
                raise BindingError("A stream was provided for a method that does not accept streams.")
            raise BindingError(
                f"Client sent {len(streams)} stream(s), Hub method expects {len(self.stream_positions)}."
            )
        if not supplied:
            return arguments
        bound: list[Any] = []
        plain = iter(arguments)
        uploads = iter(streams)
        for position in range(self.parameter_count):
            if position == self.token_position:
                bound.append(token if token is not None else CancellationToken())
            elif position in self.stream_positions:
                bound.append(next(uploads))
            else:
                bound.append(next(plain))
        bound.extend(plain)  # *args takes the rest
        return bound


def _is_stream(annotation: Any) -> bool:
    return typing.get_origin(annotation) in _STREAM_ORIGINS or annotation in _STREAM_ORIGINS


def describe(name: str, function: Any) -> HubMethod:
    signature = inspect.signature(function)
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # unresolvable annotations: treat every parameter as plain
        hints = {}
    parameters = [p for p in signature.parameters.values() if p.name != "self"]
    variadic = any(p.kind is p.VAR_POSITIONAL for p in parameters)
    parameters = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    streams = tuple(i for i, p in enumerate(parameters) if _is_stream(hints.get(p.name)))
    tokens = [i for i, p in enumerate(parameters) if hints.get(p.name) is CancellationToken]
    returns = hints.get("return", inspect.Signature.empty)
    generator = inspect.isasyncgenfunction(function)
    returns_stream = not generator and _is_stream(returns)
    return HubMethod(
        name=name,
        function=function,
        parameter_count=len(parameters),
        stream_positions=streams,
        token_position=tokens[0] if tokens else None,
        streaming=generator or returns_stream,
        returns_stream=returns_stream,
        is_async=inspect.iscoroutinefunction(function),
        variadic=variadic,
        void=returns in (type(None), None, inspect.Signature.empty),
        requires_user=requires_user(function),
    )


def discover(hub_type: type[Hub]) -> dict[str, HubMethod]:
    methods: dict[str, HubMethod] = {}
    for name, function in inspect.getmembers(hub_type, inspect.isfunction):
        if name.startswith("_") or name in _RESERVED:
            continue
        key = normalize(name)
        if key in methods:
            raise TypeError(f"{hub_type.__name__}: '{name}' and '{methods[key].name}' are the same hub method")
        methods[key] = describe(name, function)
    return methods
