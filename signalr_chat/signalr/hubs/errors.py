"""HubException and the error texts clients see, built as ASP.NET Core builds them."""

from __future__ import annotations


class HubException(Exception):
    """An error whose message is meant for the client; other exceptions stay server-side."""


class BackplaneUnavailable(ConnectionError):
    """A lifetime manager could not route a send (its backplane is down): nobody received it.

    An operational condition, not a bug: the hub method fails with it and the log says so
    in one line, without a traceback.
    """


def error_text(base: str, exception: BaseException | None, detailed: bool) -> str:
    """A HubException's message always reaches the client; other details only when detailed."""
    if exception is None:
        return base
    if isinstance(exception, HubException) or detailed:
        return f"{base} {type(exception).__name__}: {exception}"
    return base
