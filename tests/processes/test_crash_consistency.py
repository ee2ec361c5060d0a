"""Issue 22, crash consistency: `kill -9` of a chat server while 50 replies stream (and an edit
and a regenerate are being answered), with SQLite history and with Redis history (Redis kept
running). After a restart every accepted user message is in its conversation, every reply is
absent (its user message then marked `interrupted`) or whole, an edit or regenerate left its
conversation as before, the list points at nothing missing, and SQLite's integrity check is
`ok`. Deletes of conversations whose replies stream, answered or only sent just before the kill,
leave each conversation whole or gone, never its entry without its messages. The
stock JS client drives the server; the fake Azure OpenAI's [[slow]] replies take 20 s, so the
kill lands mid-reply; every step waits on what the clients report."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from signalr_chat.chat.history import conversation_key
from tests.support.chat_fixtures import ChatServer, FakeAI, azure_settings, server_env, token_for
from tests.support.paths import JS_DIR
from tests.support.redis_server import RedisServer

USERS = 50

# Phase 1: each user starts a slow reply (even users: SendMessage in the default conversation;
# odd users: StartReply in a new conversation); user 0 also has a finished conversation in
# which an edit (users 0) and a regenerate (user 1) start; users 2-5 also stream a reply in a
# conversation they delete once every reply streams (two deletes answered, two only sent). A line
# per reply once its first token arrived; "all" when every one streams and the deletes are sent.
# Then it waits to be killed.
LOAD = """
import * as signalR from "@microsoft/signalr";
const [base, tokensJson] = process.argv.slice(1);
const tokens = JSON.parse(tokensJson);
const say = (o) => process.stdout.write(JSON.stringify(o) + "\\n");
function connect(user) {
    return new signalR.HubConnectionBuilder()
        .withUrl(`${base}/chatHub`, { accessTokenFactory: () => tokens[user] })
        .configureLogging(signalR.LogLevel.None).build();
}
function firstItem(c, id) {
    return new Promise((resolve, reject) => {
        c.stream("ResumeReply", id, 0).subscribe({ next: resolve, complete: () => {}, error: reject });
    });
}
async function finished(c, id) {
    return new Promise((resolve, reject) => {
        c.stream("ResumeReply", id, 0).subscribe({ next: () => {}, complete: resolve, error: reject });
    });
}
const started = [];
for (const [i, user] of Object.keys(tokens).entries()) {
    const c = connect(user);
    await c.start();
    const message = `question of ${user} [[slow]]`;
    if (i < 2) {
        // a finished turn first, then the edit (user 0) or the regenerate (user 1), slow
        const conversation = await c.invoke("CreateConversation", "kept");
        await c.invoke("StartReply", conversation.id, `first of ${user}`);
        await finished(c, conversation.id);
        const before = await c.invoke("GetConversation", conversation.id);
        if (i === 0) await c.invoke("EditMessage", conversation.id, 0, `edited by ${user} [[slow]]`);
        else await c.invoke("RegenerateReply", conversation.id);
        say({ user, kind: i === 0 ? "edit" : "regenerate", conversation: conversation.id, before: before.messages });
        started.push(firstItem(c, conversation.id));
    }
    if (i % 2 === 0) {
        started.push(new Promise((resolve) => c.on("ReceiveStreamToken", resolve)));
        c.send("SendMessage", message);
        say({ user, kind: "send", conversation: "default", message });
    } else {
        const other = connect(user);
        await other.start();
        const conversation = await other.invoke("CreateConversation", null);
        await other.invoke("StartReply", conversation.id, message);
        say({ user, kind: "start", conversation: conversation.id, message });
        started.push(firstItem(other, conversation.id));
    }
}
const doomed = [];
for (const [i, user] of Object.keys(tokens).entries()) {
    if (i < 2 || i > 5) continue;
    const c = connect(user);
    await c.start();
    const conversation = await c.invoke("CreateConversation", "doomed");
    const message = `doomed of ${user} [[slow]]`;
    await c.invoke("StartReply", conversation.id, message);
    started.push(firstItem(c, conversation.id));
    doomed.push({ c, user, conversation: conversation.id, message });
}
await Promise.all(started);
// two deletes answered before the kill, two sent just before it (in flight, or not yet read)
for (const [n, { c, user, conversation, message }] of doomed.entries()) {
    if (n < 2) await c.invoke("DeleteConversation", conversation);
    else await c.send("DeleteConversation", conversation);
    say({ user, kind: "delete", conversation, message, answered: n < 2 });
}
say({ all: true });
setInterval(() => {}, 1000);
"""

# Phase 2: what each user finds after the restart.
CHECK = """
import * as signalR from "@microsoft/signalr";
const [base, tokensJson] = process.argv.slice(1);
const tokens = JSON.parse(tokensJson);
const found = {};
await Promise.all(Object.keys(tokens).map(async (user) => {
    const c = new signalR.HubConnectionBuilder()
        .withUrl(`${base}/chat`, { accessTokenFactory: () => tokens[user] })
        .configureLogging(signalR.LogLevel.None).build();
    await c.start();
    const history = await c.invoke("GetHistory");
    const listed = await c.invoke("ListConversations");
    const conversations = {};
    for (const entry of listed) {
        // a reply of the killed server shows as running until its Redis lease lapses (seconds)
        let opened = await c.invoke("GetConversation", entry.id);
        while (opened.reply?.running) {
            await new Promise((resolve) => setTimeout(resolve, 200));
            opened = await c.invoke("GetConversation", entry.id);
        }
        conversations[entry.id] = opened;
    }
    found[user] = { history, listed, conversations };
    await c.stop();
}));
console.log(JSON.stringify(found));
"""


def node() -> str:
    found = shutil.which("node")
    assert found is not None, "node is not installed"
    return found


def start_load(server: ChatServer, tokens: dict[str, str]) -> tuple[subprocess.Popen[str], list[dict[str, Any]]]:
    """Runs phase 1 until every reply streams; the client process and what it reported."""
    load = subprocess.Popen(
        [node(), "--input-type=module", "-e", LOAD, server.base, json.dumps(tokens)],
        cwd=JS_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert load.stdout is not None
    said: list[dict[str, Any]] = []
    for line in load.stdout:  # the client's own lines: no sleep, no poll
        record = json.loads(line)
        if record.get("all"):
            return load, said
        said.append(record)
    load.wait(10)
    assert load.stderr is not None
    raise AssertionError(f"the load client ended early: {load.stderr.read()[-3000:]}")


def check(server: ChatServer, tokens: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        [node(), "--input-type=module", "-e", CHECK, server.base, json.dumps(tokens)],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def kill_mid_reply(server: ChatServer, tokens: dict[str, str]) -> list[dict[str, Any]]:
    load, said = start_load(server, tokens)
    try:
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
        server.process = None
    finally:
        load.kill()
        load.wait(10)
    server.start()
    return said


def assert_consistent(said: list[dict[str, Any]], found: dict[str, Any]) -> None:
    for record in said:
        mine = found[record["user"]]
        kind, conversation = record["kind"], record["conversation"]
        listed = {entry["id"] for entry in mine["listed"]}
        if kind in ("edit", "regenerate"):
            opened = mine["conversations"][conversation]
            assert [(m["role"], m["content"]) for m in opened["messages"]] == [
                (m["role"], m["content"]) for m in record["before"]
            ], f"the {kind} killed mid-reply left its conversation as it was"
            continue
        if kind == "delete" and conversation not in listed:
            continue  # deleted whole: check_no_orphans looks for what it may have left
        assert not record.get("answered"), "an answered delete is kept"
        messages = mine["history"] if conversation == "default" else mine["conversations"][conversation]["messages"]
        assert conversation in listed, "a conversation with an accepted message is listed"
        user_messages = [m for m in messages if m["role"] == "user"]
        assert [m["content"] for m in user_messages] == [record["message"]], "the accepted message is stored"
        last = messages[-1]
        if last["role"] == "user":
            assert last.get("interrupted") is True, f"a reply lost to the crash is marked: {messages}"
        else:
            assert last["content"], "a stored reply is not empty"
            assert "interrupted" not in last
    for user, mine in found.items():
        for conversation_id in {entry["id"] for entry in mine["listed"]}:
            assert conversation_id in mine["conversations"], f"{user}'s list points at nothing"


def check_no_orphans(db: Path) -> None:
    """Every stored message of a listed conversation's key has its list entry (an owner's
    default conversation, keyed by the owner alone, is never listed)."""
    with sqlite3.connect(db) as connection:
        listed = {
            conversation_key(owner, id_) for owner, id_ in connection.execute("SELECT owner, id FROM conversations")
        }
        stored = {key for (key,) in connection.execute("SELECT DISTINCT conversation FROM messages")}
    assert {key for key in stored if "/" in key} <= listed, "messages left without their list entry"


@pytest.fixture
def tokens() -> dict[str, str]:
    return {f"crash-{n:02d}": token_for(f"crash-{n:02d}") for n in range(USERS)}


@pytest.fixture
def server_log(tmp_path: Path) -> Iterator[Path]:
    log = tmp_path / "server.log"
    yield log


def serve(fake_ai: FakeAI, log: Path, **settings: str) -> ChatServer:
    env = server_env(fake_ai, **azure_settings(fake_ai, reply_grace_seconds="60", rate_limit_messages="0", **settings))
    return ChatServer(env, log=log).start()


def test_kill_9_with_sqlite_history(fake_ai: FakeAI, tmp_path: Path, tokens: dict[str, str], server_log: Path) -> None:
    db = tmp_path / "history.sqlite3"
    server = serve(fake_ai, server_log, history_store="sqlite", history_db=str(db))
    try:
        said = kill_mid_reply(server, tokens)
        found = check(server, tokens)
    finally:
        server.stop()
    assert len([r for r in said if r["kind"] in ("send", "start")]) == USERS
    assert len([r for r in said if r["kind"] == "delete"]) == 4
    assert_consistent(said, found)
    check_no_orphans(db)
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_kill_9_with_redis_history(
    fake_ai: FakeAI, redis_server: RedisServer, tokens: dict[str, str], server_log: Path
) -> None:
    server = serve(fake_ai, server_log, history_store="redis", redis_url=redis_server.url, redis_timeout="2")
    try:
        said = kill_mid_reply(server, tokens)
        found = check(server, tokens)
    finally:
        server.stop()
    assert len([r for r in said if r["kind"] in ("send", "start")]) == USERS
    assert len([r for r in said if r["kind"] == "delete"]) == 4
    assert_consistent(said, found)
