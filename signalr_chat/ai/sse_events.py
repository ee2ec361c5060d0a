"""Server-sent events from lines, as the HTML standard assembles them (data fields only).

An event's `data:` may span several lines (`data: {"a":` then `data: 1}`): they are joined
with newlines and the event ends at a blank line. Comments (`: keep-alive`) and other
fields are skipped. The openai SDK's own decoder is private and httpx-sse reads httpx
responses, not the SDK's raw stream, so these few lines do the assembling.
"""

from __future__ import annotations


class ServerSentEvents:
    """Feed lines without their line endings; each completed event's data comes back."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        if not line:  # a blank line dispatches the event, if it has data
            if not self._data:
                return None
            data = "\n".join(self._data)
            self._data.clear()
            return data
        if line.startswith("data"):
            field, _, value = line.partition(":")
            if field == "data":
                self._data.append(value[1:] if value.startswith(" ") else value)
        return None  # comments, `event:`, `id:`, `retry:` and unknown fields
