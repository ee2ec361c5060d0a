"""A conversation as a file the user keeps: Markdown to read, JSON to process.

Rendered from what the store holds (the running reply's text is not stored yet, so it is not
in the file), with a file name both front ends use as it is, so the naming exists once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime

from ..ai import ChatMessage
from .history import ConversationInfo

FORMATS = ("markdown", "json")
BAD_FORMAT = 'The export format must be "markdown" or "json".'
#: What the JSON's `format` says, so a later change of its shape can be told apart.
JSON_FORMAT = "signalr-chat.conversation/1"
#: The headings a Markdown export gives each message, by role.
SPEAKERS = {"user": "You", "assistant": "Assistant"}
_NAME_LENGTH = 60


def _when(timestamp: float) -> str | None:
    """ISO 8601 in UTC, to the second; None for a time never recorded (the seed's history)."""
    if timestamp <= 0:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def file_name(title: str, form: str) -> str:
    """The title as a file name: words joined by "-", at most 60 characters, no character a
    file system refuses; "conversation" when nothing of the title is left."""
    stem = re.sub(r"[^\w]+", "-", title.lower()).strip("-_")[:_NAME_LENGTH].strip("-_") or "conversation"
    return f"{stem}.{'md' if form == 'markdown' else 'json'}"


def as_json(info: ConversationInfo, messages: Sequence[ChatMessage], exported: float) -> str:
    document = {
        "format": JSON_FORMAT,
        "id": info.id,
        "title": info.title,
        "created": _when(info.created),
        "updated": _when(info.updated),
        "exported": _when(exported),
        "messages": [_exported(m) for m in messages],
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def _exported(message: ChatMessage) -> dict[str, object]:
    """A message as GetConversation shows it: with the model that wrote a reply, its cut mark,
    and the names, types and sizes of a message's attachments."""
    exported: dict[str, object] = {"role": message["role"], "content": message["content"]}
    for key in ("model", "cut"):
        if key in message:
            exported[key] = message[key]  # type: ignore[literal-required]
    if message.get("attachments"):  # what was attached, not the files themselves
        exported["attachments"] = [
            {"name": a["name"], "type": a["type"], "size": a["size"]} for a in message["attachments"]
        ]
    return exported


def as_markdown(info: ConversationInfo, messages: Sequence[ChatMessage], exported: float) -> str:
    """A title heading, the times, then a "## You" or "## Assistant" section per message with
    its text as written (replies are Markdown already; a question stays as typed), and the names
    of the files attached to it."""
    times = [f"{label} {_when(at)}" for label, at in (("Created", info.created), ("updated", info.updated)) if at > 0]
    stamp = f"{', '.join(times)}; exported {_when(exported)}" if times else f"Exported {_when(exported)}"
    lines = [f"# {info.title}", "", f"*{stamp}.*", ""]
    for message in messages:
        lines += [f"## {SPEAKERS.get(message['role'], message['role'])}", "", message["content"].rstrip(), ""]
        if message.get("attachments"):
            lines += [f"*Attached: {', '.join(a['name'] for a in message['attachments'])}*", ""]
    return "\n".join(lines)


def export(info: ConversationInfo, messages: Sequence[ChatMessage], form: str, exported: float) -> dict[str, str]:
    """ExportConversation's answer: the file's name, its media type and its text."""
    if form == "json":
        media, text = "application/json", as_json(info, messages, exported)
    else:
        media, text = "text/markdown", as_markdown(info, messages, exported)
    return {"fileName": file_name(info.title, form), "mediaType": media, "text": text}
