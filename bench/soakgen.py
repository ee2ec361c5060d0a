"""The load side of the soak: N signed-in chats for minutes, a tenth of them reconnecting at every churn.

Each chat is one user (a JWT with its own `sub`) on one connection at a time, taking turns:
a message, its streamed reply read to the end, a pause, the next message. Most chats use the
resumable replies both front ends use (`CreateConversation`, `StartReply`, then
`ResumeReply(id, 0)`; a new conversation every `per_conversation` turns, so the history
limit never trims one); a share (`seed_share`) use the seed page's `SendMessage`, whose
reply belongs to its connection, and `ClearHistory` every `per_conversation` turns.

At every churn a tenth of the chats (`churn_fraction`) lose their connection and come back
after 0-2 s, as the stock client's first two reconnect attempts do: about half while a
reply streams, the others between turns. A resumable chat cut mid-reply asks
`ResumeReply(id, last sequence)` on its new connection, and must get every chunk after it,
in order, none twice, then the end item of the same reply; a `SendMessage` chat cut
mid-reply loses that reply (the server stores it as far as it got) and goes on.

The server is sampled from /proc (RSS, open descriptors by kind) and from the bench's
diagnostic route (`/bench/diag`: asyncio tasks, the chat's bookkeeping, objects): cold
(before any client), primed (after one turn of each kind of chat), through the run, at the
landmarks (start after the warm-up, middle, end), then after the last client leaves until
`after_wait` s later. The result also names every conversation's completed turns, for the
harness to compare with the SQLite file.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import itertools
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import jwt
import orjson

from . import procfs, wire
from .loadgen import Result, Spec, Window
from .wsclient import HandshakeFailed, SignalRSocket, connect, negotiate

#: One upstream token's text (bench/fake_upstream.py): `t<emit time ns> `.
TOKEN = re.compile(r"t\d+ ")
IDLE, BUSY, STREAMING = "idle", "busy", "streaming"
#: A reply longer than this (s) counts as lost: the chat says so and goes on.
TURN_TIMEOUT = 60.0


class Churned(Exception):
    """The connection went away under a call: a churn, or a drop."""


class TurnLost(Exception):
    """A call whose outcome the chat cannot know (its connection dropped mid-call)."""


def stream_invocation(invocation_id: str, target: str, arguments: list[Any]) -> bytes:
    record = {"type": 4, "invocationId": invocation_id, "target": target, "arguments": arguments}
    return orjson.dumps(record) + wire.RS


class Link(SignalRSocket):
    """One connection of a chat: its calls by invocation id, records parsed and handed over."""

    def __init__(self, chat: Chat, port: int, path: str) -> None:
        super().__init__(port, path, "json")
        self.chat = chat
        self.access_token = chat.access_token
        self.calls: dict[str, asyncio.Future[Any]] = {}
        self.streams: dict[str, Callable[[dict[str, Any]], None]] = {}
        self.ids = itertools.count(1)

    def invoke(
        self, target: str, arguments: list[Any], on_item: Callable[[dict[str, Any]], None] | None = None
    ) -> asyncio.Future[Any]:
        """The call's Completion as a future (its `result`, or HubError); a stream's items go to `on_item`."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.transport is None or self.transport.is_closing():
            future.set_exception(Churned())
            return future
        invocation_id = str(next(self.ids))
        self.calls[invocation_id] = future
        if on_item is None:
            record = wire.invocation("json", target, arguments, invocation_id)
        else:
            self.streams[invocation_id] = on_item
            record = stream_invocation(invocation_id, target, arguments)
        self.send(wire.client_frame(record, wire.OP_TEXT))
        return future

    def fail_calls(self) -> None:
        calls, self.calls = self.calls, {}
        self.streams = {}
        for future in calls.values():
            if not future.done():
                future.set_exception(Churned())

    def on_message(self, payload: bytes) -> None:
        for raw in payload.split(wire.RS):
            if not raw:
                continue
            message = orjson.loads(raw)
            kind = message.get("type")
            if kind == 2:
                handler = self.streams.get(message["invocationId"])
                if handler is not None:
                    handler(message["item"])
            elif kind == 3:
                invocation_id = message["invocationId"]
                self.streams.pop(invocation_id, None)
                future = self.calls.pop(invocation_id, None)
                if future is not None and not future.done():
                    if "error" in message:
                        future.set_exception(HubError(str(message["error"])))
                    else:
                        future.set_result(message.get("result"))
            elif kind == 1:
                self.chat.on_event(message["target"], message.get("arguments") or [])
            elif kind == 7:
                self.chat.soak.error("close", f"{self.chat.user}: server sent Close {message}")

    def on_lost(self) -> None:
        self.fail_calls()
        self.chat.link_lost(self)


class HubError(Exception):
    """A Completion with an error."""


def _same(link: Link) -> Link:
    return link


class Chat:
    """One user's chat, across the connections churn gives it."""

    def __init__(self, soak: Soak, index: int, seed: bool, user: str | None = None) -> None:
        self.soak = soak
        self.user = user or f"soak-{index}"
        self.seed = seed
        self.rng = random.Random(index)
        claims = {"sub": self.user, "exp": int(time.time()) + 24 * 3600}
        self.access_token = jwt.encode(claims, soak.spec["secret"], algorithm="HS256")
        self.link: Link | None = None
        self.ready = asyncio.Event()
        self.state = IDLE
        self.churning = False
        self.turn_number = 0
        # resumable replies: the conversation, and the reply being read
        self.conversation: str | None = None
        self.turns_here = 0
        self.sequence = 0
        self.reply_id = ""
        self.tokens = 0
        self.end: dict[str, Any] | None = None
        #: Completed turns by conversation id (the rows the SQLite file must hold: two per turn).
        self.turns: dict[str, int] = {}
        #: Conversations whose turns cannot be known (a connection dropped mid-call).
        self.uncertain: list[str] = []
        # SendMessage: turns since the last ClearHistory, completed and cut by a churn
        self.seed_completed = 0
        self.seed_cut = 0
        self.seed_error: str | None = None

    # -- the connection ---------------------------------------------------------------
    async def open(self) -> None:
        spec = self.soak.spec
        for attempt in range(5):
            link = Link(self, spec["port"], spec["path"])
            try:
                answer = await asyncio.wait_for(
                    negotiate(spec["port"], spec["path"], access_token=self.access_token), 30
                )
                if not isinstance(answer, str):
                    raise HandshakeFailed(f"negotiate redirected: {answer}")
                link.token = answer
                await asyncio.wait_for(connect(functools.partial(_same, link), spec["port"], "127.0.0.1"), 30)
                await asyncio.wait_for(link.opened, 30)
            except (OSError, TimeoutError, HandshakeFailed) as exc:
                self.soak.error("connect", f"{self.user} attempt {attempt + 1}: {exc!r}")
                link.close()
                await asyncio.sleep(1)
                continue
            self.link = link
            self.soak.connects += 1
            self.ready.set()
            return
        raise ConnectionError(f"{self.user} could not connect")

    async def current(self) -> Link:
        await self.ready.wait()
        assert self.link is not None
        return self.link

    def link_lost(self, link: Link) -> None:
        if link is not self.link:
            return  # a connection the chat already left (a churn, the end)
        self.link = None
        self.ready.clear()
        if self.soak.leaving:
            return
        self.soak.error("dropped", f"{self.user}: connection lost while {self.state}")
        self.soak.spawn(self.open())

    async def churn(self, delay: float) -> None:
        """Closes the connection at once (what the chat was doing fails with Churned) and opens
        another after `delay` s."""
        link = self.link
        if link is None:
            return
        self.churning = True
        self.link = None
        self.ready.clear()
        link.fail_calls()
        link.close()
        try:
            await asyncio.sleep(delay)
            await self.open()
        finally:
            self.churning = False

    def close(self) -> None:
        link, self.link = self.link, None
        self.ready.clear()
        if link is not None:
            link.close()

    async def call(self, target: str, arguments: list[Any]) -> Any:
        """A call the churn leaves alone (it picks chats between turns or mid-reply only)."""
        link = await self.current()
        self.state = BUSY
        try:
            return await asyncio.wait_for(link.invoke(target, arguments), 30)
        except Churned:
            raise TurnLost(f"{target}: connection lost during the call") from None
        finally:
            self.state = IDLE

    # -- the chat -------------------------------------------------------------------
    async def live(self, start_after: float) -> None:
        soak = self.soak
        await asyncio.sleep(start_after)
        await self.open()
        spec = soak.spec
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(soak.stopping.wait(), self.rng.uniform(0, spec["pause_max"]))
        while soak.running:
            self.turn_number += 1
            tokens = self.rng.randint(spec["tokens_min"], spec["tokens_max"])
            message = f"{self.user} turn {self.turn_number} tokens:{tokens}"
            try:
                await asyncio.wait_for(
                    self.seed_turn(message, tokens) if self.seed else self.turn(message, tokens), TURN_TIMEOUT
                )
            except TurnLost as exc:
                soak.error("lost", f"{self.user}: {exc}")
                if self.conversation is not None:
                    self.uncertain.append(self.conversation)
                self.conversation = None
            except HubError as exc:
                soak.error("hub", f"{self.user}: {exc}")
            except TimeoutError:
                soak.error("timeout", f"{self.user}: turn {self.turn_number} took over {TURN_TIMEOUT} s")
                if self.conversation is not None:
                    self.uncertain.append(self.conversation)
                self.conversation = None
            self.state = IDLE
            pause = self.rng.uniform(spec["pause_min"], spec["pause_max"])
            with contextlib.suppress(TimeoutError):  # the end of the soak cuts the pause short
                await asyncio.wait_for(soak.stopping.wait(), pause)

    async def turn(self, message: str, tokens: int) -> None:
        """StartReply, then ResumeReply from 0, and from the last chunk after every churn."""
        soak = self.soak
        if self.conversation is None or self.turns_here >= soak.spec["per_conversation"]:
            created = await self.call("CreateConversation", [None])
            self.conversation = str(created["id"])
            self.turns_here = 0
            self.turns[self.conversation] = 0
        conversation = self.conversation
        started = await self.call("StartReply", [conversation, message])
        self.reply_id = str(started["replyId"])
        self.sequence = 0
        self.tokens = 0
        self.end = None
        self.state = STREAMING
        began = time.perf_counter()
        resumed = False
        while self.end is None:
            link = await self.current()
            if resumed:
                soak.resumes += 1
            expected_next = self.sequence + 1
            checked = False

            def on_item(item: dict[str, Any], link: Link = link, resumed: bool = resumed) -> None:
                nonlocal checked
                if link is not self.link:
                    return
                if "end" in item:
                    if item.get("sequence") != self.sequence:
                        soak.error("sequence", f"{self.user}: end at {item.get('sequence')} after {self.sequence}")
                    self.end = item
                    return
                sequence = item["sequence"]
                if not checked:
                    checked = True
                    if resumed:
                        soak.resume_checked += 1
                if sequence != self.sequence + 1:
                    kind = "gap" if sequence > self.sequence + 1 else "duplicate"
                    soak.error("sequence", f"{self.user}: {kind}: {sequence} after {self.sequence}")
                self.sequence = sequence
                self.tokens += len(TOKEN.findall(item["text"]))

            try:
                await link.invoke("ResumeReply", [conversation, self.sequence], on_item)
            except Churned:
                resumed = True
                continue
            if self.end is None:
                soak.error("resume", f"{self.user}: ResumeReply from {expected_next - 1} ended without its end item")
                raise TurnLost("no end item")
        self.state = BUSY
        end = self.end
        if end.get("replyId") != self.reply_id:
            soak.error("resume", f"{self.user}: followed reply {end.get('replyId')}, started {self.reply_id}")
        if end.get("end") != "completed":
            soak.error("reply", f"{self.user}: reply ended {end.get('end')}: {end.get('error')}")
            self.uncertain.append(conversation)
            self.conversation = None
            return
        if self.tokens != tokens:
            soak.error("tokens", f"{self.user}: {self.tokens} tokens of {tokens}")
        self.turns[conversation] += 1
        self.turns_here += 1
        soak.completed(time.perf_counter() - began, resumed)

    async def seed_turn(self, message: str, tokens: int) -> None:
        """SendMessage; a churn mid-reply cuts it (the server stores it as far as it got)."""
        soak = self.soak
        if self.seed_completed + self.seed_cut >= soak.spec["per_conversation"]:
            await self.call("ClearHistory", [])
            self.seed_completed = self.seed_cut = 0
        link = await self.current()
        self.tokens = 0
        self.seed_error = None
        self.state = STREAMING
        began = time.perf_counter()
        try:
            await link.invoke("SendMessage", [message])
        except Churned:
            if self.churning:
                self.seed_cut += 1
                soak.seed_cut += 1
                return
            raise TurnLost("SendMessage: connection lost") from None
        self.state = IDLE
        if self.seed_error is not None:
            soak.error("reply", f"{self.user}: ReceiveError {self.seed_error}")
            return
        if self.tokens != tokens:
            soak.error("tokens", f"{self.user}: {self.tokens} tokens of {tokens}")
        self.seed_completed += 1
        soak.completed(time.perf_counter() - began, False, seed=True)

    def on_event(self, target: str, arguments: list[Any]) -> None:
        if target == "ReceiveStreamToken":
            self.tokens += len(TOKEN.findall(str(arguments[0])))
        elif target == "ReceiveError":
            self.seed_error = str(arguments[0]) if arguments else "?"

    def expected(self) -> dict[str, Any]:
        if self.seed:
            return {"seed": [self.seed_completed, self.seed_cut], "uncertain": bool(self.uncertain)}
        return {"turns": self.turns, "uncertain": self.uncertain}


class Soak:
    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.running = True
        self.stopping = asyncio.Event()
        self.leaving = False
        self.connects = 0
        self.resumes = 0
        self.resume_checked = 0
        self.seed_cut = 0
        self.turns = 0
        self.seed_turns = 0
        self.resumed_turns = 0
        self.turn_seconds: list[float] = []
        self.errors: Counter[str] = Counter()
        self.examples: list[str] = []
        self.churns: Counter[str] = Counter()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.started = time.monotonic()

    def spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def error(self, kind: str, text: str) -> None:
        self.errors[kind] += 1
        if len(self.examples) < 10:
            self.examples.append(f"{kind}: {text}")
            print(f"error: {kind}: {text}", file=sys.stderr, flush=True)

    def forget_turns(self) -> None:
        """The priming turns are not the soak's."""
        self.turns = self.seed_turns = self.resumed_turns = 0
        self.turn_seconds.clear()

    def completed(self, seconds: float, resumed: bool, seed: bool = False) -> None:
        self.turns += 1
        self.seed_turns += seed
        self.resumed_turns += resumed
        self.turn_seconds.append(seconds)

    def now(self) -> float:
        return round(time.monotonic() - self.started, 2)

    # -- what the server holds -----------------------------------------------------------
    async def diag(self, objects: bool = False) -> dict[str, Any]:
        port = self.spec["port"]
        target = "/bench/diag?objects=1" if objects else "/bench/diag"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(wire.http_request("GET", target, port, {"Connection": "close"}))
            data = await asyncio.wait_for(reader.read(), 60)
        finally:
            writer.close()
        status, _headers, body = wire.HttpResponses().feed(data)[0]
        if status != 200:
            raise RuntimeError(f"{target}: HTTP {status}")
        answer: dict[str, Any] = orjson.loads(body)
        return answer

    def fds(self) -> dict[str, int]:
        return procfs.open_fds(self.spec["server_pid"], self.spec["port"], self.spec["upstream_port"])

    async def sample(self, objects: bool = False) -> dict[str, Any]:
        """RSS and descriptors first (the diagnostic request's own socket is not among them), then the diagnostics."""
        pid = self.spec["server_pid"]
        point: dict[str, Any] = {"t": self.now(), "rss_kb": procfs.rss_kb(pid), "fds": self.fds()}
        point.update(await self.diag(objects))
        return point


async def prime(soak: Soak, cold: dict[str, Any]) -> list[Chat]:
    """One turn of each kind of chat, then gone: what the server sets up once, on first use
    (modules, the SDK's models, caches), is then in the `primed` baseline, so the objects
    left after the soak can be told from it."""
    primers = [Chat(soak, -1 - i, seed, user=f"soak-prime-{i}") for i, seed in enumerate((False, True))]
    tokens = soak.spec["tokens_min"]
    for chat in primers:
        await chat.open()
        message = f"{chat.user} turn 1 tokens:{tokens}"
        await asyncio.wait_for(chat.seed_turn(message, tokens) if chat.seed else chat.turn(message, tokens), 30)
        chat.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        point = await soak.sample()
        if point["tasks"] <= cold["tasks"] and point["fds"]["clients"] == 0:
            break
    soak.forget_turns()
    return primers


async def run_soak(spec: Spec) -> Result:
    gc.enable()  # minutes of futures and closures: the load generator's own garbage must go
    soak = Soak(spec)
    loop = asyncio.get_running_loop()
    cold = await soak.sample(objects=True)
    landmarks: dict[str, dict[str, Any]] = {"cold": cold}
    primers = await prime(soak, cold)
    landmarks["primed"] = await soak.sample(objects=True)
    chats_n = spec["chats"]
    rng = random.Random(22)
    seeds = set(rng.sample(range(chats_n), round(chats_n * spec["seed_share"])))
    chats = [Chat(soak, i, i in seeds) for i in range(chats_n)]
    soak.started = time.monotonic()
    began = loop.time()
    total = spec["warmup"] + spec["window"]
    lives = [asyncio.ensure_future(chat.live(spec["ramp"] * i / chats_n)) for i, chat in enumerate(chats)]
    timeline: list[dict[str, Any]] = []
    last_turns = [0, time.monotonic()]

    def light(point: dict[str, Any]) -> dict[str, Any]:
        now = time.monotonic()
        rate = (soak.turns - last_turns[0]) / max(1e-6, now - last_turns[1])
        last_turns[:] = [soak.turns, now]
        return {
            "t": point["t"],
            "rss_kb": point["rss_kb"],
            "fds": point["fds"]["total"],
            "clients": point["fds"]["clients"],
            "upstream": point["fds"]["upstream"],
            "tasks": point["tasks"],
            "conversations": point.get("chat", {}).get("conversations"),
            "streaming": sum(1 for c in chats if c.state == STREAMING),
            "turns_per_s": round(rate, 1),
        }

    async def sampler() -> None:
        while True:
            await asyncio.sleep(spec["sample_every"])
            timeline.append(light(await soak.sample()))

    async def churner() -> None:
        for k in itertools.count(1):
            at = began + k * spec["churn_every"]
            if at >= began + total - 1:
                return
            await asyncio.sleep(at - loop.time())
            count = round(chats_n * spec["churn_fraction"])
            streaming = [c for c in chats if c.state == STREAMING and c.link is not None]
            idle = [c for c in chats if c.state == IDLE and c.link is not None]
            mid = rng.sample(streaming, min(len(streaming), (count + 1) // 2))
            rest = rng.sample(idle, min(len(idle), count - len(mid)))
            for chat in mid:
                soak.churns["mid-reply seed" if chat.seed else "mid-reply"] += 1
                soak.spawn(chat.churn(rng.uniform(*spec["reconnect_delay"])))
            for chat in rest:
                soak.churns["between turns"] += 1
                soak.spawn(chat.churn(rng.uniform(*spec["reconnect_delay"])))

    async def pinger() -> None:
        """Every 10 s a Ping on every connection, as the SignalR clients send one when they have
        sent nothing else for 15 s (the server drops a client silent for 30 s)."""
        ping = wire.client_frame(wire.ping("json"), wire.OP_TEXT)
        while True:
            await asyncio.sleep(10)
            for chat in chats:
                if chat.link is not None:
                    chat.link.send(ping)

    sampling = asyncio.ensure_future(sampler())
    churning = asyncio.ensure_future(churner())
    pinging = asyncio.ensure_future(pinger())
    await asyncio.sleep(max(0.0, began + spec["warmup"] - loop.time()))
    window = Window(spec["server_pid"])
    upstream_cpu = procfs.cpu_seconds(spec["upstream_pid"])
    turns_at_start = soak.turns
    landmarks["start"] = await soak.sample(objects=True)
    await asyncio.sleep(max(0.0, began + spec["warmup"] + spec["window"] / 2 - loop.time()))
    landmarks["middle"] = await soak.sample(objects=True)
    await asyncio.sleep(max(0.0, began + total - loop.time()))
    cpu = window.stop()
    upstream_used = procfs.cpu_seconds(spec["upstream_pid"]) - upstream_cpu
    turns_in_window = soak.turns - turns_at_start
    landmarks["end"] = await soak.sample(objects=True)
    churning.cancel()
    # the chats finish the turn they are in, then leave
    soak.running = False
    soak.stopping.set()
    _, late = await asyncio.wait(lives, timeout=TURN_TIMEOUT + 10)
    for life in late:
        life.cancel()
        soak.error("timeout", "a chat did not finish its last turn")
    for life in lives:
        if life.done() and not life.cancelled() and life.exception() is not None:
            soak.error("chat", repr(life.exception()))
    if soak.tasks:
        await asyncio.wait(list(soak.tasks), timeout=30)
    sampling.cancel()
    pinging.cancel()
    soak.leaving = True
    for chat in chats:
        chat.close()
    left = time.monotonic()
    await asyncio.sleep(0)
    # after the last client left: how long until each figure is back to its cold value
    settled: dict[str, float | None] = {"tasks": None, "fds": None, "clients": None, "upstream": None}
    after: list[dict[str, Any]] = []
    while time.monotonic() - left < spec["after_wait"]:
        await asyncio.sleep(0.5)
        point = await soak.sample()
        after.append(light(point))
        elapsed = round(time.monotonic() - left, 1)
        for key, now, then in (
            ("tasks", point["tasks"], cold["tasks"]),
            ("fds", point["fds"]["total"], cold["fds"]["total"]),
            ("clients", point["fds"]["clients"], 0),
            ("upstream", point["fds"]["upstream"], 0),
        ):
            if now <= then and settled[key] is None:
                settled[key] = elapsed
            elif now > then:
                settled[key] = None  # back up again: not settled yet
        if len(after) == 2:
            landmarks["left"] = point
    landmarks["after"] = await soak.sample(objects=True)
    elapsed = cpu["elapsed_s"]
    seconds = sorted(soak.turn_seconds)
    result: Result = {
        "chats": chats_n,
        "seed_chats": len(seeds),
        "connects": soak.connects,
        "landmarks": landmarks,
        "timeline": timeline,
        "after_leaving": after[:: max(1, len(after) // 40)],
        "settled_s": settled,
        "turns_completed": soak.turns,
        "seed_turns_completed": soak.seed_turns,
        "turns_resumed": soak.resumed_turns,
        "turns_per_s": round(turns_in_window / elapsed, 1),
        "turn_s": {
            "p50": round(seconds[len(seconds) // 2], 3) if seconds else None,
            "p99": round(seconds[int(len(seconds) * 0.99)], 3) if seconds else None,
        },
        "churns": dict(soak.churns),
        "resumes": soak.resumes,
        "resumes_checked": soak.resume_checked,
        "seed_cut": soak.seed_cut,
        "error_kinds": dict(soak.errors),
        "error_examples": soak.examples,
        "errors": sum(soak.errors.values()),
        "server_cpu_pct": cpu["server_cpu_pct"],
        "client_cpu_pct": cpu["client_cpu_pct"],
        "upstream_cpu_pct": round(100 * upstream_used / elapsed, 1),
        "core1_cpu_pct": round(cpu["client_cpu_pct"] + 100 * upstream_used / elapsed, 1),
        "expected_history": {chat.user: chat.expected() for chat in primers + chats},
        "loadgen_pid": os.getpid(),
    }
    return result


MODES = {"soak": run_soak}
