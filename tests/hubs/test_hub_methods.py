"""Which hub methods clients may call, and how arguments bind to them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from signalr_chat.signalr import Hub, authorize
from signalr_chat.signalr.hubs.methods import BindingError, discover, normalize


class SampleHub(Hub):
    async def send_message(self, user: str, text: str) -> None: ...

    async def Echo(self, value: Any) -> Any:
        return value

    async def untyped(self, value):  # type: ignore[no-untyped-def]
        return value

    async def countdown(self, n: int) -> AsyncIterator[int]:
        yield n

    async def upload(self, label: str, items: AsyncIterator[int], suffix: str) -> str:
        return label

    async def spread(self, first: str, *rest: Any) -> None: ...

    @authorize
    async def secret(self) -> str:
        return "x"

    async def _private(self) -> None: ...

    def helper_attribute(self) -> None: ...


METHODS = discover(SampleHub)


def test_names_normalize_across_conventions() -> None:
    assert normalize("SendMessage") == normalize("sendMessage") == normalize("send_message") == "sendmessage"
    assert "sendmessage" in METHODS
    assert METHODS["echo"].name == "Echo"


def test_private_and_lifecycle_methods_are_not_callable() -> None:
    assert "private" not in METHODS
    assert "onconnected" not in METHODS
    assert "ondisconnected" not in METHODS


def test_streaming_void_and_authorize_are_recognised() -> None:
    assert METHODS["countdown"].streaming
    assert not METHODS["echo"].streaming
    assert METHODS["sendmessage"].void
    assert METHODS["untyped"].void, "no return annotation: a None result is a void completion"
    assert not METHODS["echo"].void, "annotated Any: None is sent as a result"
    assert METHODS["secret"].requires_user
    assert not METHODS["echo"].requires_user


def test_plain_def_methods_are_callable_and_known_not_to_need_a_task() -> None:
    """A plain `def` public method is a hub method (ASP.NET Core's synchronous methods)."""
    assert not METHODS["helperattribute"].is_async
    assert METHODS["echo"].is_async
    assert not METHODS["countdown"].is_async, "async generators stream; they are not awaited"


def test_wrong_argument_count_has_the_aspnet_text() -> None:
    with pytest.raises(BindingError, match=r"^Invocation provides 1 argument\(s\) but target expects 2\.$"):
        METHODS["sendmessage"].bind(["only one"], [])


def test_upload_streams_bind_in_place() -> None:
    method = METHODS["upload"]
    assert method.stream_positions == (1,)
    stream = object()
    assert method.bind(["a", "z"], [stream]) == ["a", stream, "z"]
    with pytest.raises(BindingError, match=r"Client sent 0 stream\(s\), Hub method expects 1\."):
        method.bind(["a", "z"], [])
    with pytest.raises(BindingError, match="does not accept streams"):
        METHODS["echo"].bind([1], [object()])


def test_variadic_methods_take_extra_arguments() -> None:
    method = METHODS["spread"]
    assert method.bind(["a"], []) == ["a"]
    assert method.bind(["a", 1, 2], []) == ["a", 1, 2]
    with pytest.raises(BindingError):
        method.bind([], [])


def test_two_spellings_of_one_method_are_refused() -> None:
    class Clash(Hub):
        async def do_it(self) -> None: ...

        async def DoIt(self) -> None: ...

    with pytest.raises(TypeError, match="same hub method"):
        discover(Clash)
