"""The error texts clients see, built as ASP.NET Core builds them."""

from __future__ import annotations

from .hub import HubException


def error_text(base: str, exception: BaseException | None, detailed: bool) -> str:
    """A HubException's message always reaches the client; other details only when detailed."""
    if exception is None:
        return base
    if isinstance(exception, HubException) or detailed:
        return f"{base} {type(exception).__name__}: {exception}"
    return base
