"""Attachments (issue 23), in process: uploads read chunk by chunk and refused at the limit,
checked by type and content, counted, refused for a model that reads no images; stored with the
user's message in every store (memory, SQLite, Redis against a real redis-server); sent through
the real `openai` SDK to the fake Azure OpenAI as content parts, which it checks; isolated by
owner; gone with their conversation."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from signalr_chat.ai import ChatMessage, create_model
from signalr_chat.ai.attachments import IMAGE_TOKENS, as_text, for_provider, inlined, message_tokens
from signalr_chat.app.settings import Settings
from signalr_chat.chat.attachments import (
    UNKNOWN_ATTACHMENT,
    AttachmentPolicy,
    no_images,
    too_large,
    too_long_for_model,
    too_many,
    wrong_type,
)
from signalr_chat.chat.conversations import NOT_FOUND, ConversationService
from signalr_chat.chat.guests import GuestSessions
from signalr_chat.chat.history import HistoryStore, InMemoryHistoryStore
from signalr_chat.chat.hub import ChatHub
from signalr_chat.chat.rate_limit import InMemoryRateLimits, RateLimiter
from signalr_chat.chat.redis_history import RedisHistoryStore
from signalr_chat.chat.replies import LocalReplies
from signalr_chat.chat.service import TOO_LONG_WITH_FILES, Backends, Caller, ChatService, Limits, Rejected
from signalr_chat.chat.sqlite_history import SCHEMA_VERSION, SqliteHistoryStore
from signalr_chat.signalr.hubs.endpoint import HubEndpoint
from tests.hubs.test_hub_connection import opened, record, records, settle
from tests.support.fake_ai import DEFAULT_API_KEY, create_fake_app, fake_state, start_fake
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)

ANN, BOB = Caller("c1", "ann"), Caller("c2", "bob")
LIMIT = 2048
#: A PNG as far as its magic bytes go (all the server and the fake check), and its bytes.
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(60))
CODE = b"def hello():\n    return '```'\n"


class Counted:
    """A client's stream of chunks that counts how many the server read."""

    def __init__(self, chunks: list[object], forever: object = None) -> None:
        self.chunks = chunks
        self.forever = forever
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[object]:
        for chunk in self.chunks:
            self.read += 1
            yield chunk
        while self.forever is not None:  # a client that never stops sending
            self.read += 1
            yield self.forever


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Chat:
    def __init__(self, conversations: ConversationService, fake: web.Application, store: HistoryStore) -> None:
        self.service = conversations
        self.fake = fake
        self.store = store

    def sent(self) -> list[dict[str, Any]]:
        """The messages of the last request the fake received."""
        return list(fake_state(self.fake).requests[-1]["body"]["messages"])

    async def upload(self, caller: Caller, conversation: str, name: str, kind: str, data: bytes) -> str:
        # base64 text as the JSON protocol sends it, in two chunks
        half = len(data) // 2
        chunks = Counted([b64(data[:half]), b64(data[half:])])
        entry = await self.service.upload(caller, conversation, {"name": name, "type": kind}, chunks.__aiter__())
        assert entry["name"] == name and entry["size"] == len(data)
        return str(entry["id"])

    async def send(self, caller: Caller, conversation: str, message: str, ids: list[str] | None = None) -> str:
        await self.service.start(caller, conversation, "send", message, attachment_ids=ids)
        items = [item async for item in self.service.follow(caller, conversation, 0)]
        assert items[-1]["end"] == "completed", items
        return "".join(str(item["text"]) for item in items if "text" in item)


async def _store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> HistoryStore:
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return RedisHistoryStore(server.url, keep=50)
    if kind == "sqlite":
        sqlite = SqliteHistoryStore(tmp_path / "h.sqlite3", keep=50)
        await sqlite.open()
        return sqlite
    return InMemoryHistoryStore(50)


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def chat(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Chat]:
    """Two Azure deployments, `vis` (reads images) and `plain`, on the real SDK and the fake."""
    fake = create_fake_app(token_delay=0)
    runner, port = await start_fake(fake)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        ai_provider="azure",
        azure_openai_endpoint=f"http://127.0.0.1:{port}",
        azure_openai_api_key=DEFAULT_API_KEY,
        ai_models="vis, plain",
        ai_vision_models="vis",
        attachment_max_bytes=LIMIT,
        attachment_max_files=2,
        rate_limit_messages=0,
        history_store="memory",
    )
    model = create_model(settings)
    service = ChatService(model, Limits.from_settings(settings), settings.system_prompt)
    store = await _store(str(request.param), request, tmp_path)
    limits = InMemoryRateLimits(RateLimiter(0, 60))
    conversations = ConversationService(
        service,
        signed_in=Backends(store, limits, LocalReplies()),
        anonymous=Backends(InMemoryHistoryStore(50), limits, LocalReplies()),
        guests=GuestSessions(600),
        attachments=AttachmentPolicy.from_settings(settings),
    )
    try:
        yield Chat(conversations, fake, store)
    finally:
        await conversations.close()
        await store.close()
        await model.aclose()
        await runner.cleanup()


async def _new(chat: Chat, caller: Caller = ANN, model: str | None = None) -> str:
    conversation = str((await chat.service.create(caller, "Files"))["id"])
    if model is not None:
        await chat.service.set_model(caller, conversation, model)
    return conversation


# -- sent to the model, stored, shown ------------------------------------------------------
async def test_files_reach_the_upstream_as_content_parts_and_stay_with_the_message(chat: Chat) -> None:
    info = chat.service.info()
    assert info["visionModels"] == ["vis"]
    assert info["attachments"] == {
        "maxBytes": LIMIT,
        "maxFiles": 2,
        "types": ["image/png", "image/jpeg", "image/gif", "image/webp", "text/*", "application/json"],
        "extensions": list(AttachmentPolicy.from_settings(Settings(_env_file=None)).extensions),  # type: ignore[call-arg]
    }
    conversation = await _new(chat)
    image = await chat.upload(ANN, conversation, "cat.png", "image/png", PNG)
    # raw bytes, as MessagePack sends them, and a code file the browser typed as nothing
    code = await chat.service.upload(ANN, conversation, {"name": "hello.py", "type": ""}, Counted([CODE]).__aiter__())
    assert code["type"] == "text/plain"
    answer = await chat.send(ANN, conversation, "What is this?", [image, str(code["id"])])
    assert answer.endswith(f"Received: text; image image/png {len(PNG)} bytes; file hello.py {len(CODE) - 1} chars.")

    user = chat.sent()[-1]
    assert user["content"][0] == {"type": "text", "text": "What is this?"}
    assert user["content"][1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(PNG)}"}}
    # the code file's own ``` cannot close the block it is inlined in
    assert user["content"][2]["text"].startswith("File: hello.py\n````\n")

    stored = (await chat.store.load(f"user:ann/{conversation}"))[0]
    assert [a["name"] for a in stored.get("attachments", [])] == ["cat.png", "hello.py"]
    assert stored.get("attachments", [])[0]["data"] == b64(PNG)
    opened = await chat.service.open(ANN, conversation)
    first = opened["messages"][0]  # type: ignore[index]
    assert first["attachments"] == [
        {"id": image, "name": "cat.png", "type": "image/png", "size": len(PNG)},
        {"id": code["id"], "name": "hello.py", "type": "text/plain", "size": len(CODE)},
    ]
    shown = await chat.service.attachment(ANN, conversation, image)
    assert shown["url"] == f"data:image/png;base64,{b64(PNG)}"

    # the next turn sends the earlier turn's files again, in the history
    answer = await chat.send(ANN, conversation, "And now?")
    assert "Received" not in answer
    earlier = chat.sent()[-3]
    assert earlier["role"] == "user" and earlier["content"][1]["type"] == "image_url"

    # an upload is used once: its id is unknown once sent
    with pytest.raises(Rejected, match=UNKNOWN_ATTACHMENT):
        await chat.service.start(ANN, conversation, "send", "again", attachment_ids=[image])

    # the export names them (Markdown) or describes them (JSON), never with their content
    markdown = await chat.service.export(ANN, conversation, "markdown")
    assert "*Attached: cat.png, hello.py*" in markdown["text"]
    document = json.loads((await chat.service.export(ANN, conversation, "json"))["text"])
    assert document["messages"][0]["attachments"] == [
        {"name": "cat.png", "type": "image/png", "size": len(PNG)},
        {"name": "hello.py", "type": "text/plain", "size": len(CODE)},
    ]


async def test_files_alone_are_a_message_and_an_edit_keeps_them(chat: Chat) -> None:
    conversation = await _new(chat)
    notes = await chat.upload(ANN, conversation, "notes.md", "text/markdown", b"# Notes\nfirst")
    answer = await chat.send(ANN, conversation, "", [notes])
    assert answer.endswith("Received: file notes.md 13 chars.")
    assert (await chat.service.open(ANN, conversation))["title"] == "Files", "a title given is kept"
    untitled = str((await chat.service.create(ANN, None))["id"])
    notes = await chat.upload(ANN, untitled, "notes.md", "text/markdown", b"# Notes\nfirst")
    await chat.send(ANN, untitled, " ", [notes])
    assert (await chat.service.open(ANN, untitled))["title"] == "notes.md", "named after its files"
    await chat.service.start(ANN, conversation, "edit", "Summarise it", 0)
    items = [item async for item in chat.service.follow(ANN, conversation, 0)]
    assert items[-1]["end"] == "completed"
    assert chat.sent()[-1]["content"][1]["text"].startswith("File: notes.md")


async def test_a_running_reply_shows_its_questions_files(chat: Chat) -> None:
    conversation = await _new(chat)
    image = await chat.upload(ANN, conversation, "cat.png", "image/png", PNG)
    started = await chat.service.start(ANN, conversation, "send", "[[slow]] look", attachment_ids=[image])
    meta = [{"id": image, "name": "cat.png", "type": "image/png", "size": len(PNG)}]
    assert started["userAttachments"] == meta
    reply = (await chat.service.open(ANN, conversation))["reply"]
    assert isinstance(reply, dict) and reply["running"] and reply["userAttachments"] == meta
    await chat.service.stop(ANN, conversation)


async def test_an_upload_never_sent_expires(chat: Chat) -> None:
    conversation = await _new(chat)
    chat.service.uploads.ttl = 0  # every upload has expired as soon as it is stored
    expired = await chat.upload(ANN, conversation, "late.txt", "text/plain", b"late")
    assert chat.service.uploads.count("user:ann") == 0
    with pytest.raises(Rejected) as refused:
        await chat.service.start(ANN, conversation, "send", "now", attachment_ids=[expired])
    assert refused.value.user_message == UNKNOWN_ATTACHMENT


# -- limits, checked while the file streams in ------------------------------------------------
async def test_an_oversize_file_is_refused_at_the_limit_and_nothing_of_it_is_kept(chat: Chat) -> None:
    conversation = await _new(chat)
    endless = Counted([], forever=b64(bytes(1000)))
    with pytest.raises(Rejected) as refused:
        await chat.service.upload(ANN, conversation, {"name": "big.txt", "type": "text/plain"}, endless.__aiter__())
    assert refused.value.user_message == too_large(LIMIT) == "The file is too large. The limit is 2 KB."
    assert endless.read == 3  # the third chunk passed the limit: nothing more was read
    assert chat.service.uploads.count("user:ann") == 0
    # exactly at the limit is allowed, and the service goes on
    await chat.upload(ANN, conversation, "full.txt", "text/plain", b"x" * LIMIT)


async def test_types_are_checked_by_name_and_by_content(chat: Chat) -> None:
    conversation = await _new(chat)

    async def refused(name: str, kind: str, data: bytes) -> tuple[str, int]:
        chunks = Counted([b64(data)])
        with pytest.raises(Rejected) as caught:
            await chat.service.upload(ANN, conversation, {"name": name, "type": kind}, chunks.__aiter__())
        return caught.value.user_message, chunks.read

    # refused before a byte is read
    assert await refused("a.zip", "application/zip", b"PK") == (wrong_type("a.zip"), 0)
    assert await refused("a.svg", "image/svg+xml", b"<svg/>") == (wrong_type("a.svg"), 0)
    # by content: an image that is not one, a text file that is not UTF-8, nothing at all
    message, _ = await refused("cat.png", "image/png", b"not an image")
    assert message == f"{wrong_type('cat.png')} Its content is not a PNG image."
    message, _ = await refused("x.txt", "text/plain", b"\xff\xfe\x00bad")
    assert message.endswith("Its content is not UTF-8 text.")
    assert (await refused("empty.txt", "text/plain", b""))[0] == "The file is empty."
    with pytest.raises(Rejected, match="chunks of base64 text or bytes"):
        await chat.service.upload(ANN, conversation, {"name": "a.txt", "type": "text/plain"}, Counted([5]).__aiter__())
    with pytest.raises(Rejected, match="described by its name and type"):
        await chat.service.upload(ANN, conversation, "a.txt", Counted([]).__aiter__())
    assert chat.service.uploads.count("user:ann") == 0
    # a PNG sent as a JPEG is kept as what it is
    entry = await chat.service.upload(
        ANN, conversation, {"name": "c:\\pics\\cat.jpg", "type": "image/jpeg"}, Counted([PNG]).__aiter__()
    )
    assert (entry["name"], entry["type"]) == ("cat.jpg", "image/png")


async def test_at_most_max_files_wait_for_a_message(chat: Chat) -> None:
    conversation = await _new(chat)
    first = await chat.upload(ANN, conversation, "1.txt", "text/plain", b"1")
    second = await chat.upload(ANN, conversation, "2.txt", "text/plain", b"2")
    third = Counted([b64(b"3")])
    with pytest.raises(Rejected) as refused:
        await chat.service.upload(ANN, conversation, {"name": "3.txt", "type": "text/plain"}, third.__aiter__())
    assert refused.value.user_message == too_many(2) == "At most 2 files can be attached to a message."
    assert third.read == 0
    await chat.send(ANN, conversation, "two files", [first, second])
    await chat.upload(ANN, conversation, "3.txt", "text/plain", b"3")  # sent ones no longer count


async def test_files_too_long_for_the_models_context_are_refused_before_they_are_lost(chat: Chat) -> None:
    conversation = await _new(chat)
    model = chat.service.chat.model
    # room for one 2 KB text file (about 683 tokens) with the system prompt, not for two
    model.context_tokens = model.max_output_tokens + 1100
    first = await chat.upload(ANN, conversation, "one.txt", "text/plain", b"x" * LIMIT)
    second = await chat.upload(ANN, conversation, "two.txt", "text/plain", b"y" * LIMIT)
    with pytest.raises(Rejected) as refused:
        await chat.service.start(ANN, conversation, "send", "both", attachment_ids=[first, second])
    assert refused.value.user_message == TOO_LONG_WITH_FILES
    assert chat.service.uploads.count("user:ann") == 2, "still waiting: one can be sent"
    await chat.send(ANN, conversation, "one", [first])
    # a file that never fits is refused as it arrives
    model.context_tokens = model.max_output_tokens + 600
    with pytest.raises(Rejected) as refused:
        await chat.upload(ANN, conversation, "long.txt", "text/plain", b"z" * LIMIT)
    assert refused.value.user_message == too_long_for_model("long.txt")
    assert chat.service.uploads.count("user:ann") == 1


# -- models that read no images -----------------------------------------------------------
async def test_an_image_for_a_model_that_reads_none_is_refused_before_it_is_read(chat: Chat) -> None:
    plain = await _new(chat, model="plain")
    chunks = Counted([b64(PNG)])
    with pytest.raises(Rejected) as refused:
        await chat.service.upload(ANN, plain, {"name": "cat.png", "type": "image/png"}, chunks.__aiter__())
    assert refused.value.user_message == no_images("plain")
    assert chunks.read == 0
    await chat.upload(ANN, plain, "a.txt", "text/plain", b"text goes to every model")

    # an image uploaded while the model read images, sent after the model was changed
    conversation = await _new(chat)
    image = await chat.upload(ANN, conversation, "cat.png", "image/png", PNG)
    await chat.send(ANN, conversation, "look", [image])
    second = await chat.upload(ANN, conversation, "dog.png", "image/png", PNG)
    await chat.service.set_model(ANN, conversation, "plain")
    with pytest.raises(Rejected, match="cannot read images"):
        await chat.service.start(ANN, conversation, "send", "and this", attachment_ids=[second])
    # the earlier turn's image is named to it, not sent
    await chat.send(ANN, conversation, "what did I send?")
    earlier = chat.sent()[-3]
    assert earlier["content"] == "look\n\n[Images not shown to this model: cat.png]"


def test_the_built_in_model_never_reads_images_and_files_count_in_the_budget() -> None:
    policy = AttachmentPolicy(vision_models=("*",))
    assert policy.reads_images("gpt-4o", "azure")
    assert not policy.reads_images("SmolLM2", "local")

    def count(text: str) -> int:
        return len(text)

    file = {"id": "f", "name": "a.py", "type": "text/plain", "size": 2, "data": b64(b"hi")}
    image = {"id": "i", "name": "a.png", "type": "image/png", "size": len(PNG), "data": b64(PNG)}
    message: ChatMessage = {"role": "user", "content": "abc", "attachments": [file, image]}  # type: ignore[list-item]
    assert message_tokens(message, count) == 3 + len(inlined(file)) + IMAGE_TOKENS  # type: ignore[arg-type]
    # the built-in model reads text: its files inlined, never an image
    assert as_text(message) == "abc\n\nFile: a.py\n```\nhi\n```"
    assert for_provider({"role": "user", "content": "plain"}) == {"role": "user", "content": "plain"}


# -- isolation and deletion ---------------------------------------------------------------
async def test_another_owners_upload_or_conversation_is_refused_as_an_unknown_one(chat: Chat) -> None:
    mine = await _new(chat)
    other = await _new(chat)
    theirs = await _new(chat, BOB)
    image = await chat.upload(ANN, mine, "cat.png", "image/png", PNG)
    for caller, conversation in ((BOB, theirs), (ANN, other)):
        with pytest.raises(Rejected) as refused:
            await chat.service.start(caller, conversation, "send", "x", attachment_ids=[image])
        assert refused.value.user_message == UNKNOWN_ATTACHMENT
    with pytest.raises(Rejected, match=UNKNOWN_ATTACHMENT):
        await chat.service.start(ANN, mine, "send", "x", attachment_ids=["no-such-id"])
    with pytest.raises(Rejected, match=NOT_FOUND):
        await chat.service.upload(BOB, mine, {"name": "a.txt", "type": "text/plain"}, Counted([b"a"]).__aiter__())
    await chat.send(ANN, mine, "mine", [image])
    with pytest.raises(Rejected, match=NOT_FOUND):
        await chat.service.attachment(BOB, mine, image)
    for conversation, attachment in ((theirs, image), (mine, "no-such-id"), (other, image)):
        caller = BOB if conversation == theirs else ANN
        with pytest.raises(Rejected) as refused:
            await chat.service.attachment(caller, conversation, attachment)
        assert refused.value.user_message == UNKNOWN_ATTACHMENT


async def test_deleting_removes_stored_and_waiting_files(chat: Chat) -> None:
    conversation = await _new(chat)
    image = await chat.upload(ANN, conversation, "cat.png", "image/png", PNG)
    await chat.send(ANN, conversation, "keep", [image])
    await chat.upload(ANN, conversation, "waiting.txt", "text/plain", b"w")
    await chat.service.delete(ANN, conversation)
    assert await chat.store.load(f"user:ann/{conversation}") == []
    assert chat.service.uploads.count("user:ann") == 0

    cleared = await _new(chat)
    image = await chat.upload(ANN, cleared, "cat.png", "image/png", PNG)
    await chat.send(ANN, cleared, "keep", [image])
    await chat.service.clear(ANN, cleared)
    assert await chat.store.load(f"user:ann/{cleared}") == []
    with pytest.raises(Rejected, match=UNKNOWN_ATTACHMENT):
        await chat.service.attachment(ANN, cleared, image)

    again = await _new(chat)
    image = await chat.upload(ANN, again, "cat.png", "image/png", PNG)
    await chat.send(ANN, again, "keep", [image])
    await chat.upload(ANN, again, "waiting.txt", "text/plain", b"w")
    await chat.service.delete_all(ANN)
    assert chat.service.uploads.count("user:ann") == 0
    assert await chat.store.load(f"user:ann/{again}") == []


async def test_an_sqlite_file_of_schema_1_gains_attachments_and_keeps_its_messages(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old = SqliteHistoryStore(path, keep=50)
    await old.open()
    await old.append("user:ann/c1", [{"role": "user", "content": "before"}])
    await old.close()
    with sqlite3.connect(path) as db:  # as schema 1 left it: no attachments column
        db.execute("ALTER TABLE messages DROP COLUMN attachments")
        db.execute("PRAGMA user_version = 1")
    store = SqliteHistoryStore(path, keep=50)
    await store.open()
    try:
        file = {"id": "f", "name": "a.txt", "type": "text/plain", "size": 1, "data": b64(b"a")}
        with_file: ChatMessage = {"role": "user", "content": "after", "attachments": [file]}  # type: ignore[list-item]
        await store.append("user:ann/c1", [with_file])
        assert await store.load("user:ann/c1") == [{"role": "user", "content": "before"}, with_file]
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (2,)


async def test_a_connections_uploads_go_with_it_unless_it_is_a_guest(chat: Chat) -> None:
    visitor, guest = Caller("v1"), Caller("g1", None, "guest-1")
    for caller in (visitor, guest):
        conversation = await _new(chat, caller)
        await chat.upload(caller, conversation, "a.txt", "text/plain", b"a")
        await chat.service.disconnected(caller)
    assert chat.service.uploads.count(visitor.owner) == 0
    assert chat.service.uploads.count(guest.owner) == 1, "a guest comes back within the expiry"


async def test_a_refused_upload_never_holds_up_the_connection(chat: Chat) -> None:
    """Through the hub: the client sends more chunks than the hub buffers for the stream while the
    upload is being refused; the chunks waiting for room are let go, and the connection reads on."""
    endpoint = HubEndpoint(ChatHub, factory=lambda: ChatHub(chat.service))
    connection, hub = await opened(endpoint)
    # the refusal waits until the chunks filled the stream's buffer (the order a slow store gives)
    gate, real = asyncio.Event(), chat.service.upload

    async def gated(*args: Any) -> dict[str, object]:
        await gate.wait()
        return await real(*args)

    chat.service.upload = gated  # type: ignore[method-assign]
    file = {"name": "a.zip", "type": "application/zip"}
    upload = {"type": 1, "invocationId": "1", "target": "UploadAttachment", "arguments": ["default", file]}
    await hub.receive(record({**upload, "streamIds": ["s"]}))
    items = b"".join(record({"type": 2, "invocationId": "s", "item": b64(b"PK")}) for _ in range(15))
    feeding = asyncio.ensure_future(hub.receive(items))
    await settle()
    assert not feeding.done(), "the buffer is full: the connection waits for room"
    gate.set()
    await settle(feeding.done)
    assert feeding.done(), "the connection reads on"
    await hub.receive(record({"type": 1, "invocationId": "2", "target": "GetChatInfo", "arguments": []}))
    completions: list[dict[str, Any]] = []

    def answered() -> bool:
        completions.extend(r for r in records(connection.take_pending()) if r.get("type") == 3)
        return len(completions) >= 2

    await settle(answered)
    answers = {r["invocationId"]: r for r in completions}
    assert answers["1"]["error"].endswith(wrong_type("a.zip"))
    assert answers["2"]["result"]["attachments"]["maxFiles"] == 2
