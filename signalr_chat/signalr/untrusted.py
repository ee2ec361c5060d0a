"""Text a client chose, made safe for a log line.

A method name or a Close `error` with a newline in it would write a line of the client's
own into the server log, and a 40 KB name a 40 KB line. Wrapped in `Untrusted`, such
text is logged escaped like a Python repr (quotes, `\\n`, `\\x1b`, `\\u2028`), so it can never
end a line or steer a terminal, and cut to `MAX_LOGGED_CHARS`. The work happens only when
a record is actually formatted, so a debug call that is filtered out costs nothing.
"""

from __future__ import annotations

#: Characters of client text a log line shows; the rest is counted, not written.
MAX_LOGGED_CHARS = 200


def escape_for_log(value: object, limit: int = MAX_LOGGED_CHARS) -> str:
    """`value` as a quoted, escaped, single-line string of about `limit` characters at most."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text) - limit} more characters)"


class Untrusted:
    """A log argument that came from a client: `log.info("closed: %s", Untrusted(error))`."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return escape_for_log(self.value)

    __repr__ = __str__
