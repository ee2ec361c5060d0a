"""Issue 22, isolation: no user, guest or conversation id, whatever it holds, reaches another
owner's data, in every store (memory, SQLite, a real Redis), and every chat method that takes
a conversation id answers another owner's id exactly as it answers an id that never existed.
In process, against the services the hub adapts (both hub paths use the same service); the
same through the stock JS client is in tests/js/chat/isolation.test.mjs."""

from __future__ import annotations

import itertools
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from signalr_chat.ai import ChatMessage
from signalr_chat.app.settings import Settings
from signalr_chat.chat.conversations import DEFAULT, NOT_FOUND, ConversationService
from signalr_chat.chat.guests import GuestSessions
from signalr_chat.chat.history import HistoryStore, InMemoryHistoryStore, conversation_key
from signalr_chat.chat.rate_limit import InMemoryRateLimits, RateLimiter
from signalr_chat.chat.redis_history import RedisHistoryStore
from signalr_chat.chat.replies import LocalReplies, ReplySharing
from signalr_chat.chat.service import Backends, ChatService, Limits, Rejected
from signalr_chat.chat.shared_replies import SharedReplies
from signalr_chat.chat.sqlite_history import SqliteHistoryStore
from tests.support.callers import Callers
from tests.support.redis_server import RedisServer

#: Ids an attacker may choose (a `sub` is whatever the identity provider lets them have).
HOSTILE = [
    "a/b",
    "/",
    "//",
    "%",
    "%2F",
    "a%2Fb",
    "a%252Fb",
    "user:alice",
    "default",
    "ünï/cödé ✓",
    "\x00/\n",
    "",
    "x" * 10_000,
    "x" * 9_999 + "/",
]


def test_no_two_owner_conversation_pairs_share_a_key() -> None:
    owners = [f"user:{sub}" for sub in HOSTILE] + ["guest:" + "g" * 32]
    ids = [DEFAULT, *HOSTILE, "0123456789abcdef"]
    keys: dict[str, tuple[str, str]] = {}
    for owner, conversation in itertools.product(owners, ids):
        pair = (owner, conversation)  # "default" is DEFAULT: the owner's default conversation
        key = conversation_key(owner, conversation, DEFAULT)
        assert keys.setdefault(key, pair) == pair, f"{pair} and {keys[key]} share the key {key!r}"
    # what existing data is stored under stays where it is
    assert conversation_key("user:alice", DEFAULT, DEFAULT) == "user:alice"
    assert conversation_key("user:alice", "0123456789abcdef", DEFAULT) == "user:alice/0123456789abcdef"


class EchoModel:
    """Answers at once: "re: " and the last message."""

    name = "fake:echo"
    models = ("echo",)
    context_tokens = 100_000
    max_output_tokens = 256

    def count_tokens(self, text: str) -> int:
        return len(text) // 3 + 1

    async def stream(
        self, messages: Sequence[ChatMessage], usage: dict[str, int] | None = None, model: str | None = None
    ) -> AsyncGenerator[str]:
        yield "re: "
        yield messages[-1]["content"]


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def chat(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Callers]:
    settings = Settings(rate_limit_messages=0)
    model = ChatService(cast(Any, EchoModel()), Limits.from_settings(settings), settings.system_prompt)
    limits = InMemoryRateLimits(RateLimiter(0, 60))
    closes: list[Any] = []
    users: HistoryStore
    guests_store: HistoryStore
    replies: ReplySharing
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        users = RedisHistoryStore(server.url, keep=50)
        guests_store = RedisHistoryStore(server.url, keep=50, ttl=600)
        replies = SharedReplies(server.url)
        closes += [users, guests_store, replies]
    else:
        if request.param == "sqlite":
            sqlite = SqliteHistoryStore(tmp_path / "h.sqlite3", keep=50)
            await sqlite.open()
            users = sqlite
        else:
            users = InMemoryHistoryStore(50)
        guests_store = InMemoryHistoryStore(50)
        replies = LocalReplies()
        closes += [users, guests_store]
    conversations = ConversationService(
        model,
        signed_in=Backends(users, limits, replies),
        anonymous=Backends(guests_store, limits, replies),
        guests=GuestSessions(600),
    )
    await conversations.start_sharing()
    yield Callers(conversations)
    await conversations.close()
    for part in closes:
        await part.close()


def contents(opened: dict[str, object]) -> list[str]:
    return [m["content"] for m in cast(list[dict[str, str]], opened["messages"])]


@pytest.mark.parametrize("sub_of", ["{owner}/{id}", "{owner}%2F{id}"])
async def test_a_sub_that_spells_another_users_conversation_reaches_nothing(chat: Callers, sub_of: str) -> None:
    service = chat.conversations
    alice = chat.user("alice")
    created = await service.create(alice, None)
    cid = str(created["id"])
    await chat.talk(alice, cid, "alice's secret")
    await service.reply(alice, "alice's default secret", _ignore)

    mallory = chat.user(sub_of.format(owner="alice", id=cid))
    assert await service.history(mallory) == []
    assert contents(await service.open(mallory, DEFAULT)) == []
    assert await service.list(mallory) == []
    await service.reply(mallory, "mallory writes", _ignore)
    await service.clear_default(mallory)
    # alice's conversations are as she left them
    assert contents(await service.open(alice, cid)) == ["alice's secret", "re: alice's secret"]
    assert [m["content"] for m in await service.history(alice)] == [
        "alice's default secret",
        "re: alice's default secret",
    ]


async def test_hostile_ids_each_keep_their_own_conversations(chat: Callers) -> None:
    service = chat.conversations
    callers = [chat.user(sub) for sub in HOSTILE]
    created = []
    for n, caller in enumerate(callers):
        await service.reply(caller, f"default of {n}", _ignore)
        conversation = await service.create(caller, f"title {n}")
        created.append(str(conversation["id"]))
        await chat.talk(caller, created[-1], f"conversation of {n}")
    for n, caller in enumerate(callers):
        assert [m["content"] for m in await service.history(caller)] == [f"default of {n}", f"re: default of {n}"]
        assert contents(await service.open(caller, created[n])) == [f"conversation of {n}", f"re: conversation of {n}"]
        assert {c["id"] for c in await service.list(caller)} == {created[n], DEFAULT}
    for n, caller in enumerate(callers):
        await service.delete(caller, created[n])
        await service.clear_default(caller)
        for m, other in enumerate(callers[n + 1 :], n + 1):
            assert contents(await service.open(other, created[m])) != [], f"{n}'s delete reached {m}"
            assert await service.history(other) != [], f"{n}'s clear reached {m}"


async def _ignore(token: str) -> None:
    return None


async def _drain(items: AsyncIterator[dict[str, object]]) -> None:
    async for _ in items:
        pass


async def _one_chunk() -> AsyncIterator[object]:
    yield "YQ=="  # "a"


#: Every method that takes a conversation id, as the hub calls it (hub.py); each must refuse
#: another owner's id with the text an unknown id gets.
METHODS = {
    "GetConversation": lambda s, c, i: s.open(c, i),
    "RenameConversation": lambda s, c, i: s.rename(c, i, "taken over"),
    "DeleteConversation": lambda s, c, i: s.delete(c, i),
    "ClearConversation": lambda s, c, i: s.clear(c, i),
    "RestoreConversation": lambda s, c, i: s.restore(c, i),
    "StartReply": lambda s, c, i: s.start(c, i, "send", "hello"),
    "RegenerateReply": lambda s, c, i: s.start(c, i, "regenerate"),
    "EditMessage": lambda s, c, i: s.start(c, i, "edit", "changed", 0),
    "ContinueReply": lambda s, c, i: s.start(c, i, "continue"),
    "StopReply": lambda s, c, i: s.stop(c, i),
    "ResumeReply": lambda s, c, i: _drain(s.follow(c, i, 0)),
    "UploadAttachment": lambda s, c, i: s.upload(c, i, {"name": "a.txt", "type": "text/plain"}, _one_chunk()),
    "StartReplyWithAttachments": lambda s, c, i: s.start(c, i, "send", "hello", attachment_ids=[]),
    "GetAttachment": lambda s, c, i: s.attachment(c, i, "0123456789abcdef"),
}


async def refusal(work: Any) -> str:
    with pytest.raises(Rejected) as refused:
        await work
    return refused.value.user_message


async def test_no_method_reaches_another_users_or_guests_conversation(chat: Callers) -> None:
    service = chat.conversations
    owners = [chat.user("alice"), chat.user("bob"), await chat.guest(), await chat.guest()]
    theirs: list[str] = []
    for n, owner in enumerate(owners):
        conversation = str((await service.create(owner, f"mine {n}"))["id"])
        await chat.talk(owner, conversation, f"secret {n}")
        await service.clear(owner, conversation)  # something to restore: a restore by another must not
        await chat.talk(owner, conversation, f"secret {n}")
        theirs.append(conversation)
    before = [await service.open(owner, theirs[n]) for n, owner in enumerate(owners)]

    for name, method in METHODS.items():
        for n, intruder in enumerate(owners):
            unknown = await refusal(method(service, intruder, "0123456789abcdef"))
            assert unknown == NOT_FOUND, name
            for m, victim_conversation in enumerate(theirs):
                if m == n:
                    continue
                assert await refusal(method(service, intruder, victim_conversation)) == unknown, (
                    f"{name}: owner {n} on owner {m}'s conversation"
                )

    for n, owner in enumerate(owners):
        after = await service.open(owner, theirs[n])
        assert contents(after) == contents(before[n]) == [f"secret {n}", f"re: secret {n}"]
        assert after["title"] == before[n]["title"]
        assert [c["id"] for c in await service.list(owner)] == [theirs[n]]
