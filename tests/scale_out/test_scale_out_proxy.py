"""Two chat instances behind a real nginx, configured as docs/scale-out.md says.

The stock JS client chats through nginx over WebSockets, Server-Sent Events and long
polling (JSON and MessagePack); nginx's access log shows that each client's requests, its
negotiate included, all reached one instance, and that both instances served clients.
Then the page, signed in, loses its instance to SIGKILL: its automatic reconnect lands on
the other instance, which shows the same conversation. The instances run as deployed: on
one Redis, their backplane and (HISTORY_STORE=redis, the default with REDIS_URL) their history.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import OpenPage
from tests.support.chat_fixtures import ChatServer, FakeAI, assert_clean_log, azure_settings, server_env, token_for
from tests.support.nginx_proxy import CONFIG, NginxProxy, site_config
from tests.support.node_runner import JS_DIR
from tests.support.paths import ROOT
from tests.support.redis_server import RedisServer

CLIENTS = JS_DIR / "nginx" / "chat_clients.mjs"
COMBOS = [
    ("WebSockets", "json"),
    ("WebSockets", "messagepack"),
    ("ServerSentEvents", "json"),
    ("LongPolling", "json"),
    ("LongPolling", "messagepack"),
]
TRANSPORT_CLASSES = {
    "WebSockets": "WebSocketTransport",
    "ServerSentEvents": "ServerSentEventsTransport",
    "LongPolling": "LongPollingTransport",
}
# What Chromium logs while the page's instance is dead and before nginx moves it on.
INSTANCE_DOWN = (
    "ERR_CONNECTION_REFUSED",
    "status of 502 (Bad Gateway)",
    "WebSocket connection to",
    "WebSocket closed with status code: 1006",
    "Failed to start the connection",
    "Failed to complete negotiation",
)


@dataclass
class Deployment:
    proxy: NginxProxy
    instances: list[ChatServer]
    logs: list[Path]

    def instance_at(self, upstream: str) -> ChatServer:
        [found] = [s for s in self.instances if upstream == f"127.0.0.1:{s.port}"]
        return found


@pytest.fixture
def deployment(fake_ai: FakeAI, redis_server: RedisServer, tmp_path: Path) -> Iterator[Deployment]:
    """Two `python -m signalr_chat` instances on one Redis (backplane and history), behind nginx."""
    instances, logs = [], []
    proxy: NginxProxy | None = None
    try:
        for n in range(2):
            logs.append(tmp_path / f"instance-{n}.log")
            env = server_env(fake_ai, **azure_settings(fake_ai, redis_url=redis_server.url))
            instances.append(ChatServer(env, log=logs[-1]).start())
        for instance in instances:  # each is subscribed to Redis before it listens
            with urllib.request.urlopen(f"{instance.base}/readyz", timeout=10) as ready:
                assert json.load(ready) == {"status": "ready"}
        proxy = NginxProxy(tmp_path / "nginx", [s.port for s in instances]).start()
        yield Deployment(proxy, instances, logs)
    finally:
        if proxy is not None:
            proxy.stop()
        for instance in instances:
            instance.stop()
    for log in logs:
        assert_clean_log(log)


def chat_clients(url: str, specs: list[dict[str, str]]) -> list[dict[str, Any]]:
    node = shutil.which("node")
    assert node is not None, "node is not installed"
    result = subprocess.run(
        [node, str(CLIENTS), url, json.dumps(specs)], cwd=JS_DIR, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def test_the_config_is_the_documented_one_with_our_instances() -> None:
    text = site_config(8080, [5001, 5002, 5003])
    assert "listen 127.0.0.1:8080;" in text
    upstream = text[text.index("upstream signalr_chat {") :]
    upstream = upstream[: upstream.index("}")]
    assert [line.split()[1] for line in upstream.splitlines() if line.strip().startswith("server ")] == [
        "127.0.0.1:5001",
        "127.0.0.1:5002",
        "127.0.0.1:5003",
    ]


def test_the_docs_show_the_tested_config() -> None:
    doc = (ROOT / "docs" / "scale-out.md").read_text()
    shown = re.findall(r"```nginx\n(.*?)```", doc, re.DOTALL)
    assert shown == [CONFIG.read_text()], "docs/scale-out.md must show docs/nginx/signalr-chat.conf as it is"


def test_stock_client_through_nginx_on_every_transport(deployment: Deployment) -> None:
    proxy = deployment.proxy
    everyone = {f"127.0.0.1:{s.port}" for s in deployment.instances}
    outcomes: list[dict[str, Any]] = []
    # the affinity keys are random: a few more clients until both instances have had some
    for _round in range(5):
        specs = [
            {"transport": t, "protocol": p, "message": f"via nginx {t} {p} {i} {uuid.uuid4().hex[:8]}"}
            for t, p in COMBOS
            for i in range(2)
        ]
        for spec, outcome in zip(specs, chat_clients(f"{proxy.base}/chatHub", specs), strict=True):
            assert "error" not in outcome, outcome
            assert outcome["transportUsed"] == TRANSPORT_CLASSES[spec["transport"]], outcome
            assert outcome["reply"] == f"Echo: {spec['message']} (history: 2 messages)", outcome
            outcomes.append(outcome)
        if {r["upstream"] for r in proxy.requests()} >= everyone:
            break

    hub = [r for r in proxy.requests() if r["uri"].lower().startswith("/chathub")]
    negotiates = [r for r in hub if r["uri"].lower() == "/chathub/negotiate"]
    assert len(negotiates) == len(outcomes), "one negotiate per client"
    by_client: dict[str, set[str]] = defaultdict(set)
    by_connection: dict[str, set[str]] = defaultdict(set)
    for request in hub:
        by_client[request["affinity"]].add(request["upstream"])
        if request["id"]:
            by_connection[request["id"]].add(request["upstream"])
    assert len(by_client) == len(outcomes), "each client kept the cookie nginx gave it"
    assert all(len(upstreams) == 1 for upstreams in by_client.values()), f"a client moved: {dict(by_client)}"
    assert all(len(upstreams) == 1 for upstreams in by_connection.values()), "a connection's requests were split"
    assert {u for upstreams in by_client.values() for u in upstreams} == everyone, "both instances served"
    streams_ended: set[str] = set()
    long_polling = {r["id"] for r in hub if r["method"] == "DELETE"}
    for request in hub:  # in the order nginx finished them
        if request["status"] == "499":
            # a stopping long-polling client drops its pending poll (then sends DELETE)
            assert request["method"] == "GET" and request["id"] in long_polling, request
        elif request["status"] == "404":
            # a stopping SSE client's last send, after its event stream ended: the connection is gone
            assert request["method"] == "POST" and request["id"] in streams_ended, request
        else:
            assert request["status"] in ("101", "200", "202", "204"), request
        if request["method"] == "GET":
            streams_ended.add(request["id"])


def replies(page: Page) -> Any:
    return page.locator(".message.assistant")


def chat(page: Page, text: str) -> str:
    """Sends `text` from the page; the whole reply's text."""
    count = replies(page).count()
    page.locator("#message-input").fill(text)
    page.locator("#message-input").press("Enter")
    reply = replies(page).nth(count)
    expect(reply).to_have_attribute("aria-busy", "false", timeout=30_000)
    return str(reply.locator(".content").text_content()).strip()


def test_the_page_moves_to_the_other_instance_when_its_own_is_killed(
    deployment: Deployment, new_page: OpenPage
) -> None:
    proxy = deployment.proxy
    user = f"scale-out-{uuid.uuid4().hex[:8]}"
    page, errors = new_page(f"{proxy.base}/#token={token_for(user)}")
    errors.allow(*INSTANCE_DOWN)
    expect(page.locator("#status")).to_have_text("Connected")
    first = chat(page, "remember the blue door")
    assert first == "Echo: remember the blue door (history: 2 messages)"

    # the page's instance: the one nginx sent its affinity cookie to (the page itself included)
    [cookie] = [c["value"] for c in page.context.cookies() if c["name"] == "signalr_affinity"]
    [upstream] = {r["upstream"] for r in proxy.requests() if r["affinity"] == cookie}
    victim = deployment.instance_at(upstream)
    [survivor] = [s for s in deployment.instances if s is not victim]
    assert victim.process is not None
    # mid-chat: a long reply is streaming from the victim
    page.locator("#message-input").fill("[[tokens:600]] a long one")
    page.locator("#message-input").press("Enter")
    expect(replies(page).nth(1).locator(".content")).to_contain_text("t40")
    victim.process.kill()  # SIGKILL: no drain, no goodbye to the clients
    victim.process.wait()

    expect(page.locator("#status")).to_have_text("Reconnecting")
    expect(page.locator("#status")).to_have_text("Connected", timeout=30_000)
    expect(page.locator(".message.notice")).to_have_text("Reconnected.")
    # the other instance shows the stored conversation and goes on with it. The question the
    # dead instance was answering was stored when its turn began: it is there, its reply is
    # not, and the page marks it as interrupted (issue 22: nothing accepted is lost)
    expect(page.locator(".message.user")).to_have_text(["remember the blue door", "[[tokens:600]] a long one"])
    expect(replies(page).locator(".content")).to_have_text([first])
    expect(page.get_by_text("The reply to this message was interrupted.")).to_be_visible()
    assert chat(page, "and now?") == "Echo: and now? (history: 5 messages)"

    negotiates = [r for r in proxy.requests() if r["affinity"] == cookie and r["uri"].endswith("/negotiate")]
    assert negotiates[-1]["upstream"].endswith(f"127.0.0.1:{survivor.port}"), negotiates[-1]
    page.reload()  # and it stays there
    expect(page.locator("#status")).to_have_text("Connected")
    expect(page.locator(".message.user")).to_have_count(3)
