"""Files attached to a message: the limits, the checks made while a file streams in, and the
uploads waiting for the message that sends them.

UploadAttachment reads a client-to-server stream of chunks (base64 text with the JSON
protocol, bytes with MessagePack) and stops at the first chunk past the size limit: nothing
of a refused file is kept. A file that arrived whole is checked by its content (an image's
magic bytes, a text file's UTF-8) and waits here, under its owner, until
StartReplyWithAttachments takes it into the user's message, or it expires unsent.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..ai import Attachment
from ..ai.attachments import IMAGE_TYPES
from .service import Rejected

#: An upload never sent with a message is forgotten this long after it arrived.
UNSENT_TTL_SECONDS = 600.0
MAX_NAME_LENGTH = 200

UNKNOWN_ATTACHMENT = "Attachment not found."
BAD_FILE = "A file must be described by its name and type."
BAD_CHUNK = "A file must be sent as chunks of base64 text or bytes."
BAD_IDS = "Attachments must be a list of attachment ids."
EMPTY_FILE = "The file is empty."

#: What the magic bytes of each image type start with (WebP: "RIFF", 4 bytes of size, "WEBP").
_MAGIC: tuple[tuple[str, bytes, int], ...] = (
    ("image/png", b"\x89PNG\r\n\x1a\n", 0),
    ("image/jpeg", b"\xff\xd8\xff", 0),
    ("image/gif", b"GIF87a", 0),
    ("image/gif", b"GIF89a", 0),
    ("image/webp", b"WEBP", 8),
)
_IMAGE_NAMES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WebP"}


def sniffed_image(data: bytes) -> str | None:
    """The image type `data` is, by its first bytes; None when it is none of IMAGE_TYPES."""
    for media, magic, offset in _MAGIC:
        if data[offset : offset + len(magic)] == magic and (media != "image/webp" or data[:4] == b"RIFF"):
            return media
    return None


def size_text(count: int) -> str:
    """5 MB, 512 KB, 100 bytes: a limit as the user reads it (1 MB = 1,048,576 bytes)."""
    if count >= 1024 * 1024 and count % (1024 * 1024) == 0:
        return f"{count // (1024 * 1024):,} MB"
    if count >= 1024 and count % 1024 == 0:
        return f"{count // 1024:,} KB"
    if count >= 1024 * 1024:
        return f"{count / (1024 * 1024):.1f} MB"
    return f"{count:,} bytes"


def too_large(limit: int) -> str:
    return f"The file is too large. The limit is {size_text(limit)}."


def too_many(limit: int) -> str:
    if limit == 0:
        return "Attachments are turned off on this server."
    return f"At most {limit} file{'s' if limit != 1 else ''} can be attached to a message."


def wrong_type(name: str) -> str:
    return f"This type of file cannot be attached: {name}. Attach images (PNG, JPEG, GIF, WebP) or text and code files."


def too_long_for_model(name: str) -> str:
    return f"{name} is too long for the model's context window. Attach a shorter file."


def no_images(model: str) -> str:
    return f"The model {model} cannot read images. Attach text files only, or choose a model that reads images."


class AttachmentSettings(Protocol):
    """What `AttachmentPolicy` reads of the chat's settings (the app's `Settings` has them all)."""

    attachment_max_bytes: int
    attachment_max_files: int
    attachment_types: str
    attachment_extensions: str
    ai_vision_models: str


def _listed(value: str) -> tuple[str, ...]:
    return tuple(item.strip().lower() for item in value.replace(" ", ",").split(",") if item.strip())


@dataclass(frozen=True, slots=True)
class AttachmentPolicy:
    """The limits on attachments, and which models read images."""

    max_bytes: int = 5 * 1024 * 1024
    #: Files per message; 0 turns attachments off.
    max_files: int = 4
    #: Media types allowed ("text/*" for every text type); images only among IMAGE_TYPES.
    types: tuple[str, ...] = (*IMAGE_TYPES, "text/*", "application/json")
    #: File name endings allowed whatever type the browser declared (code files, often "").
    extensions: tuple[str, ...] = (".py", ".js", ".ts", ".json", ".md", ".txt", ".csv")
    #: The models that read images ("*": every one); the built-in model never does.
    vision_models: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: AttachmentSettings) -> AttachmentPolicy:
        return cls(
            settings.attachment_max_bytes,
            settings.attachment_max_files,
            _listed(settings.attachment_types),
            tuple(e if e.startswith(".") else f".{e}" for e in _listed(settings.attachment_extensions)),
            tuple(m.strip() for m in settings.ai_vision_models.split(",") if m.strip()),
        )

    def reads_images(self, model: str, provider: str) -> bool:
        return provider != "local" and ("*" in self.vision_models or model in self.vision_models)

    def kind(self, name: str, declared: str) -> str:
        """The type to check the content against: an image type, or "text/plain" for text and code
        files (their declared type kept when it is text); Rejected when neither is allowed."""
        declared = declared.strip().lower().split(";")[0]
        if declared in IMAGE_TYPES:
            if declared in self.types:
                return declared
            raise Rejected(wrong_type(name))
        major = declared.split("/")[0]
        allowed = declared in self.types or (major == "text" and "text/*" in self.types)
        if (allowed and declared not in IMAGE_TYPES) or name.lower().endswith(self.extensions):
            return declared if major == "text" or declared == "application/json" else "text/plain"
        raise Rejected(wrong_type(name))

    def info(self) -> dict[str, object]:
        """What GetChatInfo tells a front end, so it refuses a file before uploading it."""
        return {
            "maxBytes": self.max_bytes,
            "maxFiles": self.max_files,
            "types": list(self.types),
            "extensions": list(self.extensions),
        }


def described(attachment: Attachment) -> dict[str, object]:
    """An attachment's metadata, as UploadAttachment and GetConversation give it."""
    return {"id": attachment["id"], "name": attachment["name"], "type": attachment["type"], "size": attachment["size"]}


def file_of(file: object) -> tuple[str, str]:
    """UploadAttachment's `{name, type}`: the name without any folder, and the declared type."""
    if not isinstance(file, dict):
        raise Rejected(BAD_FILE)
    name, declared = file.get("name"), file.get("type", "")
    if not isinstance(name, str) or not isinstance(declared, str):
        raise Rejected(BAD_FILE)
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise Rejected(BAD_FILE)
    return name, declared


def _chunk_bytes(chunk: object) -> bytes:
    if isinstance(chunk, str):
        try:
            return base64.b64decode(chunk, validate=True)
        except (binascii.Error, ValueError):
            raise Rejected(BAD_CHUNK) from None
    if isinstance(chunk, (bytes, bytearray, memoryview)):
        return bytes(chunk)
    raise Rejected(BAD_CHUNK)


async def read_limited(chunks: AsyncIterator[object], limit: int) -> bytes:
    """The whole upload, or Rejected at the first chunk that takes it past `limit`: the rest is
    never read (the invocation ends, and the stream's later items are dropped)."""
    received = bytearray()
    async for chunk in chunks:
        data = _chunk_bytes(chunk)
        if len(received) + len(data) > limit:
            raise Rejected(too_large(limit))
        received += data
    return bytes(received)


#: Items a refused upload's buffer is emptied of, at most: the hub buffers a few (HubOptions'
#: stream_buffer_capacity, 10 by default) and stops feeding the stream once the invocation ends.
RELEASE_AT_MOST = 1000
_releasing: set[asyncio.Task[None]] = set()


def release(chunks: AsyncIterator[object]) -> None:
    """Drops what a refused upload's stream has buffered. The invocation is ending, so the hub
    stops feeding this stream; but a chunk that arrived while its buffer was full waits for room,
    and the connection reads nothing else meanwhile: emptying the buffer lets it go (in a task,
    once the invocation has ended). Only chunks already there are read: never one more."""

    async def drop() -> None:
        with contextlib.suppress(Exception):  # ended, failed, or nothing more is there
            for _ in range(RELEASE_AT_MOST):
                async with asyncio.timeout(0):  # there now, or never
                    await anext(chunks)
                await asyncio.sleep(0)

    task = asyncio.create_task(drop())
    _releasing.add(task)
    task.add_done_callback(_releasing.discard)


def checked(name: str, kind: str, data: bytes) -> Attachment:
    """The attachment, once its content is what it says: an image by its magic bytes, a text
    file by being UTF-8."""
    if not data:
        raise Rejected(EMPTY_FILE)
    if kind in IMAGE_TYPES:
        actual = sniffed_image(data)
        if actual is None:
            raise Rejected(f"{wrong_type(name)} Its content is not a {_IMAGE_NAMES[kind]} image.")
        kind = actual  # a PNG named .jpg is sent as what it is
    else:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise Rejected(f"{wrong_type(name)} Its content is not UTF-8 text.") from None
    return {
        "id": uuid.uuid4().hex,
        "name": name,
        "type": kind,
        "size": len(data),
        "data": base64.b64encode(data).decode("ascii"),
    }


@dataclass(slots=True)
class _Waiting:
    conversation_id: str
    attachment: Attachment
    expires: float


@dataclass(slots=True)
class PendingUploads:
    """Uploads waiting for their message, per owner, on the instance that received them (the
    connection that uploads them sends the message, so it reaches this instance too)."""

    ttl: float = UNSENT_TTL_SECONDS
    _owners: dict[str, dict[str, _Waiting]] = field(default_factory=dict)

    def _live(self, owner: str) -> dict[str, _Waiting]:
        waiting = self._owners.get(owner, {})
        now = time.monotonic()
        for gone in [i for i, w in waiting.items() if w.expires <= now]:
            del waiting[gone]
        if not waiting:
            self._owners.pop(owner, None)
        return waiting

    def count(self, owner: str) -> int:
        return len(self._live(owner))

    def add(self, owner: str, conversation_id: str, attachment: Attachment) -> None:
        """Waits for its message; every owner's expired uploads are dropped meanwhile, so an
        owner who never comes back holds no memory past the `ttl`."""
        for other in list(self._owners):
            self._live(other)
        self._owners.setdefault(owner, {})[attachment["id"]] = _Waiting(
            conversation_id, attachment, time.monotonic() + self.ttl
        )

    def find(self, owner: str, conversation_id: str, ids: object) -> list[Attachment]:
        """The owner's uploads for this conversation, in the order given; Rejected, as for an
        unknown id, when one is another owner's, another conversation's, expired or unknown."""
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise Rejected(BAD_IDS)
        waiting = self._live(owner)
        found: list[Attachment] = []
        for attachment_id in dict.fromkeys(ids):
            entry = waiting.get(attachment_id)
            if entry is None or entry.conversation_id != conversation_id:
                raise Rejected(UNKNOWN_ATTACHMENT)
            found.append(entry.attachment)
        return found

    def take(self, owner: str, ids: Sequence[str]) -> None:
        """Sent with a message: no longer waiting."""
        waiting = self._owners.get(owner, {})
        for attachment_id in ids:
            waiting.pop(attachment_id, None)
        if not waiting:
            self._owners.pop(owner, None)

    def forget(self, owner: str, conversation_id: str | None = None) -> None:
        """A deleted conversation's uploads (None: every one of the owner's)."""
        waiting = self._owners.get(owner, {})
        for gone in [i for i, w in waiting.items() if conversation_id is None or w.conversation_id == conversation_id]:
            del waiting[gone]
        if not waiting:
            self._owners.pop(owner, None)
