"""A message's attachments as a model takes them: OpenAI content parts, or plain text.

A user message with files becomes a list of parts: its text first, then each file in the
order attached, an image as an `image_url` part holding a data URL, a text or code file as a
text part that names it (a fenced block headed by the file name). A model that takes no parts
(the built-in one) gets the same text with the files inlined, and never an image (the chat
refuses images for it before they are uploaded).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable

from .model import Attachment, ChatMessage

#: The image types a vision model takes, as OpenAI's and Azure OpenAI's chat APIs document them.
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")

#: What one image costs in the token budget: an estimate, since the provider counts tiles of
#: the resized image (OpenAI's "high" detail: 85 + 170 per 512-pixel tile, 765 for 1024x1024).
IMAGE_TOKENS = 800

_BACKTICKS = re.compile(r"`{3,}")


def is_image(attachment: Attachment) -> bool:
    return attachment["type"] in IMAGE_TYPES


def data_url(attachment: Attachment) -> str:
    return f"data:{attachment['type']};base64,{attachment['data']}"


def file_text(attachment: Attachment) -> str:
    """A text file's content (stored as UTF-8, checked at upload); undecodable bytes replaced."""
    try:
        raw = base64.b64decode(attachment["data"], validate=True)
    except (binascii.Error, ValueError):
        return ""
    return raw.decode("utf-8", errors="replace")


def inlined(attachment: Attachment) -> str:
    """A text file as the model reads it: its name, then its text in a fence longer than any
    run of backticks inside it, so the file cannot close the block early."""
    text = file_text(attachment)
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=2)
    fence = "`" * (longest + 1)
    return f"File: {attachment['name']}\n{fence}\n{text.rstrip(chr(10))}\n{fence}"


def content_parts(message: ChatMessage) -> list[dict[str, object]]:
    """The message's text, then each attachment: the content parts of OpenAI's chat API."""
    parts: list[dict[str, object]] = []
    if message["content"]:
        parts.append({"type": "text", "text": message["content"]})
    for attachment in message.get("attachments", ()):
        if is_image(attachment):
            parts.append({"type": "image_url", "image_url": {"url": data_url(attachment)}})
        else:
            parts.append({"type": "text", "text": inlined(attachment)})
    return parts


def for_provider(message: ChatMessage) -> dict[str, object]:
    """{role, content} for a chat completions request: content parts when the message has
    attachments, its text otherwise (a stored mark or label is never sent)."""
    if message.get("attachments"):
        return {"role": message["role"], "content": content_parts(message)}
    return {"role": message["role"], "content": message["content"]}


def as_text(message: ChatMessage) -> str:
    """The message for a model that reads text only: its text with its text files inlined."""
    files = [inlined(a) for a in message.get("attachments", ()) if not is_image(a)]
    return "\n\n".join([message["content"], *files]) if files else message["content"]


def message_tokens(message: ChatMessage, count: Callable[[str], int]) -> int:
    """What a message costs in the token budget: its text, each text file's inlined text as
    `count` (the model's own counter) counts it, IMAGE_TOKENS per image."""
    total = count(message["content"])
    for attachment in message.get("attachments", ()):
        total += IMAGE_TOKENS if is_image(attachment) else count(inlined(attachment))
    return total
