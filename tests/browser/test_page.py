"""The wwwroot chat page in headless Chromium, against a chat server and the fake Azure OpenAI."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from playwright.sync_api import Page, Request, WebSocket, expect

from tests.support.browser import DESKTOP, PHONE, OpenPage, save_screenshot, serious_accessibility_violations
from tests.support.chat_fixtures import ChatServer, FakeAI, azure_settings, serve_chat, token_for
from tests.support.page import (
    BUSY,
    CAT,
    DELETED,
    KILLED,
    MARKDOWN,
    PNG,
    SERVER_DOWN,
    chat,
    check_models_and_instructions,
    choose_files,
    crash_and_start_again,
    delete_all,
    expect_chips_removed_by_keyboard,
    expect_cut_short_and_continue,
    expect_exports,
    expect_files_reach_the_model,
    expect_files_too_long_together_come_back,
    expect_interrupted_mark,
    expect_refusals_keep_the_text,
    expect_the_image_after_a_reload_mid_reply,
    expect_withdrawn,
    full,
    nonce,
    replies,
    search_for,
    send,
    wait_reply,
)

# Records each distinct text of the newest reply as it renders, with the composer's state then.
RECORD_RENDERS = """
window.__renders = [];
document.addEventListener("DOMContentLoaded", () => {
    const input = document.getElementById("message-input");
    let last = null;
    new MutationObserver(() => {
        const replies = document.querySelectorAll(".message.assistant");
        const reply = replies[replies.length - 1];
        const content = reply && reply.querySelector(".content");
        if (!content || content.textContent === last) return;
        last = content.textContent;
        window.__renders.push({ text: last, inputDisabled: input.disabled, busy: reply.getAttribute("aria-busy") });
    }).observe(document.body, { subtree: true, childList: true, characterData: true });
});
"""


@pytest.fixture(scope="module")
def page_server(fake_ai: FakeAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    """The page's own server: the restart tests must not disturb the other suites' servers."""
    yield from serve_chat(fake_ai, tmp_path_factory.mktemp("page"), **azure_settings(fake_ai, reply_grace_seconds="2"))


def open_chat(new_page: OpenPage, server: ChatServer, query: str = "", **kwargs: Any) -> Page:
    page, _ = new_page(f"{server.base}/{query}", **kwargs)
    expect(page.locator("#status")).to_have_text("Connected")
    return page


def open_chat_recording(new_page: OpenPage, server: ChatServer) -> Page:
    """A page whose renders are recorded from the first one."""
    return open_chat(new_page, server, init_script=RECORD_RENDERS)


def test_page_loads_connected_from_our_server_only(page_server: ChatServer, new_page: OpenPage) -> None:
    page, _ = new_page("about:blank")
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(page_server.base + "/")
    expect(page.locator("#status")).to_have_text("Connected")
    expect(page.locator("#status")).to_have_class(re.compile(r"\bconnected\b"))
    expect(page.locator("#message-input")).to_be_enabled()
    expect(page.locator("#message-input")).to_be_focused()
    expect(page.locator("#send-btn")).to_be_enabled()
    expect(page.locator("#stop-btn")).to_be_hidden()
    assert requested, "the page loaded something"
    foreign = [url for url in requested if not url.startswith((page_server.base, "data:"))]
    assert not foreign, f"requests that left our server: {foreign}"
    for library in ("/lib/signalr/signalr.min.js", "/lib/marked/marked.umd.js", "/lib/dompurify/purify.min.js"):
        assert page_server.base + library in requested


def test_reply_streams_with_the_composer_open_for_a_draft(page_server: ChatServer, new_page: OpenPage) -> None:
    page = open_chat_recording(new_page, page_server)
    tag = nonce()
    send(page, f"[[tokens:60]] {tag}")
    expect(page.locator(".message.user")).to_have_text(f"[[tokens:60]] {tag}")
    text = wait_reply(page, 1)
    assert text == " ".join(f"t{i}" for i in range(60))
    renders: list[dict[str, Any]] = page.evaluate("window.__renders")
    streaming = [r for r in renders if r["busy"] == "true" and r["text"].strip() not in ("", text)]
    assert len(streaming) >= 2, f"intermediate renders before the end: {renders}"
    assert not any(r["inputDisabled"] for r in streaming), "the input stays usable while the reply streams"
    expect(page.locator("#message-input")).to_be_enabled()
    expect(page.locator("#message-input")).to_be_focused()
    expect(page.locator("#stop-btn")).to_be_hidden()
    expect(page.locator(".thinking")).to_have_count(0)
    expect(page.locator(".message.assistant > .copy-btn")).to_be_visible()


def test_the_next_message_can_be_drafted_while_a_reply_streams(page_server: ChatServer, new_page: OpenPage) -> None:
    """As in the Angular client: type the next message during a reply; it is sent only after."""
    page = open_chat(new_page, page_server)
    tag = nonce()
    send(page, f"[[slow]] {tag}")
    reply = replies(page).first
    expect(reply.locator(".content")).to_contain_text("tok3")
    composer = page.locator("#message-input")
    expect(composer).to_be_enabled()
    composer.fill(f"next {tag}")
    expect(page.locator("#send-btn")).to_be_disabled()
    composer.press("Enter")  # no second message while one streams: the draft stays
    expect(page.locator(".message.user")).to_have_count(1)
    expect(composer).to_have_value(f"next {tag}")
    page.locator("#stop-btn").click()
    expect(reply).to_have_attribute("aria-busy", "false")
    expect(composer).to_have_value(f"next {tag}")
    expect(page.locator("#send-btn")).to_be_enabled()
    composer.press("Enter")
    expect(page.locator(".message.user")).to_have_count(2)
    expect(page.locator(".message.user").nth(1)).to_have_text(f"next {tag}")


def test_a_long_reply_is_rendered_once_per_frame(page_server: ChatServer, new_page: OpenPage) -> None:
    page = open_chat_recording(new_page, page_server)
    text = chat(page, f"[[tokens:1000]] {nonce()}")
    assert text.endswith("t998 t999") and text.startswith("t0 t1 ")
    renders = page.evaluate("window.__renders.length")
    # one render per token would be 1,000; tokens arrive every 5 ms, frames every ~16 ms
    assert 2 <= renders < 500, f"{renders} renders for 1,000 tokens"


def test_multi_turn_history_reaches_the_model(page_server: ChatServer, fake_ai: FakeAI, new_page: OpenPage) -> None:
    page = open_chat(new_page, page_server)
    tag = nonce()
    assert chat(page, f"first {tag}") == f"Echo: first {tag} (history: 2 messages)"
    assert chat(page, f"second {tag}") == f"Echo: second {tag} (history: 4 messages)"
    [record] = fake_ai.requests_with(f"second {tag}")
    sent = [(m["role"], m["content"]) for m in record["body"]["messages"][1:]]
    assert sent == [
        ("user", f"first {tag}"),
        ("assistant", f"Echo: first {tag} (history: 2 messages)"),
        ("user", f"second {tag}"),
    ]
    expect(page.locator(".message.user")).to_have_count(2)


def test_clear_resets_the_conversation(page_server: ChatServer, new_page: OpenPage) -> None:
    page = open_chat(new_page, page_server)
    chat(page, f"remember {nonce()}")
    page.locator("#clear-btn").click()
    expect(page.locator(".message.notice")).to_have_text("Conversation cleared.")
    expect(page.locator(".message.user")).to_have_count(0)
    expect(replies(page)).to_have_count(0)
    assert chat(page, "again").endswith("(history: 2 messages)")


def test_stop_ends_the_reply_and_keeps_it(page_server: ChatServer, fake_ai: FakeAI, new_page: OpenPage) -> None:
    page = open_chat(new_page, page_server)
    tag = nonce()
    send(page, f"[[slow]] {tag}")
    reply = replies(page).first
    expect(reply.locator(".content")).to_contain_text("tok3")
    expect(page.locator("#stop-btn")).to_be_focused()  # sent from the keyboard: Stop is one key away
    page.locator("#stop-btn").click()
    expect(reply).to_have_attribute("aria-busy", "false")
    expect(page.locator("#stop-btn")).to_be_hidden()
    expect(page.locator("#message-input")).to_be_enabled()
    partial = str(reply.locator(".content").text_content())
    assert partial.startswith("tok0 tok1 tok2 tok3") and "tok399" not in partial
    deadline = time.monotonic() + 5
    while fake_ai.requests_with(tag)[0]["outcome"] != "aborted" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake_ai.requests_with(tag)[0]["outcome"] == "aborted"
    assert chat(page, "after").endswith("(history: 4 messages)"), "the partial reply stays in history"


def test_busy_upstream_shows_the_friendly_error_and_chat_goes_on(page_server: ChatServer, new_page: OpenPage) -> None:
    page = open_chat(new_page, page_server)
    send(page, f"[[429]] {nonce()}")
    error = page.locator(".message.error")
    expect(error).to_have_text(BUSY)
    expect(error).to_have_attribute("role", "alert")
    expect(page.locator("#message-input")).to_be_enabled()
    expect(page.locator(".thinking")).to_have_count(0)
    assert chat(page, "next one").startswith("Echo: next one")


def test_markdown_renders_and_html_from_the_model_never_runs(page_server: ChatServer, new_page: OpenPage) -> None:
    page = open_chat(new_page, page_server, permissions=("clipboard-read", "clipboard-write"))
    text = chat(page, MARKDOWN)
    reply = replies(page).first
    expect(reply.locator("pre code")).to_have_text('print("hi")\n')
    expect(reply.locator("strong")).to_have_text("bold")
    assert "<script>window.__xss = 1</script>" in text, "the model's HTML is shown as text"
    assert '<img src="x" onerror="window.__xss = 2">' in text
    expect(page.locator("#chat-container script, #chat-container img, #chat-container [onerror]")).to_have_count(0)
    link = reply.locator("a", has_text="click me")
    assert not (link.get_attribute("href") or "").lower().startswith("javascript")
    link.click()
    expect(page.locator(".message.user")).to_have_text(MARKDOWN)  # the user's text stays plain text
    assert page.evaluate("window.__xss") is None

    reply.locator(".code-block .copy-btn").click()
    assert page.evaluate("navigator.clipboard.readText()") == 'print("hi")\n'
    reply.locator(":scope > .copy-btn").click()
    expect(reply.locator(":scope > .copy-btn")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()").startswith("Echo: Here is code:\n\n```python")


def test_enter_sends_and_shift_enter_makes_a_newline(page_server: ChatServer, new_page: OpenPage) -> None:
    page = open_chat(new_page, page_server)
    composer = page.get_by_label("Message")
    composer.press_sequentially("line one")
    composer.press("Shift+Enter")
    composer.press_sequentially("line two")
    expect(composer).to_have_value("line one\nline two")
    expect(page.locator(".message.user")).to_have_count(0)
    composer.press("Enter")
    expect(page.locator(".message.user")).to_have_text("line one\nline two")
    expect(composer).to_have_value("")
    wait_reply(page, 1)


def test_accessible_structure(page_server: ChatServer, new_page: OpenPage) -> None:
    page = open_chat(new_page, page_server)
    log = page.get_by_role("log", name="Conversation")
    expect(log).to_have_attribute("aria-live", "polite")
    expect(page.get_by_role("status")).to_have_text("Connected")
    expect(page.get_by_role("textbox", name="Message")).to_be_focused()
    for name in ("Send", "Clear the conversation"):
        expect(page.get_by_role("button", name=name)).to_be_visible()
    send(page, f"[[slow]] {nonce()}")
    expect(replies(page).first).to_have_attribute("aria-busy", "true")
    page.get_by_role("button", name="Stop the reply").press("Enter")
    expect(replies(page).first).to_have_attribute("aria-busy", "false")
    expect(page.get_by_role("button", name="Copy reply")).to_be_visible()


@pytest.mark.parametrize("transport", ["WebSockets", "ServerSentEvents", "LongPolling"])
def test_each_transport_can_be_forced(page_server: ChatServer, new_page: OpenPage, transport: str) -> None:
    page, _ = new_page("about:blank")
    sockets: list[WebSocket] = []
    requests: list[Request] = []
    page.on("websocket", lambda ws: sockets.append(ws))
    page.on("request", lambda request: requests.append(request))
    page.goto(f"{page_server.base}/?transport={transport}")
    expect(page.locator("#status")).to_have_text("Connected")
    tag = nonce()
    assert chat(page, f"over {transport} {tag}") == f"Echo: over {transport} {tag} (history: 2 messages)"
    hub = [r for r in requests if "/chatHub?id=" in r.url]
    streams = [r for r in hub if r.method == "GET" and "text/event-stream" in r.headers.get("accept", "")]
    polls = [r for r in hub if r.method == "GET" and r not in streams]
    if transport == "WebSockets":
        assert [s.url for s in sockets if "/chatHub" in s.url], "a WebSocket to /chatHub"
        assert not hub
    elif transport == "ServerSentEvents":
        assert not sockets and len(streams) == 1 and not polls
    else:
        assert not sockets and not streams and len(polls) >= 2


def test_messagepack_protocol(page_server: ChatServer, new_page: OpenPage) -> None:
    page, _ = new_page("about:blank")
    sent: list[str | bytes] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda frame: sent.append(frame)))
    page.goto(f"{page_server.base}/?protocol=messagepack")
    expect(page.locator("#status")).to_have_text("Connected")
    assert chat(page, "packed").startswith("Echo: packed")
    assert '"protocol":"messagepack"' in str(sent[0]), "the handshake asks for MessagePack"
    assert any(isinstance(frame, bytes) for frame in sent[1:]), "invocations go as binary frames"


def test_server_restart_reconnects_and_says_the_conversation_was_reset(
    page_server: ChatServer, new_page: OpenPage
) -> None:
    page, errors = new_page(page_server.base + "/")
    errors.allow(*SERVER_DOWN)
    expect(page.locator("#status")).to_have_text("Connected")
    chat(page, "before the restart")
    page_server.restart()
    expect(page.locator("#status")).to_have_text("Reconnecting")
    expect(page.locator("#status")).to_have_text("Connected", timeout=30_000)
    expect(page.locator(".message.notice")).to_have_text("Reconnected. The conversation was reset.")
    assert chat(page, "after the restart").endswith("(history: 2 messages)")


def test_signed_in_conversation_is_reloaded_after_a_restart(page_server: ChatServer, new_page: OpenPage) -> None:
    user = f"page-user-{nonce()}"
    page, errors = new_page(f"{page_server.base}/#token={token_for(user)}")
    errors.allow(*SERVER_DOWN)
    expect(page.locator("#status")).to_have_text("Connected")
    assert "token" not in page.url, "the token leaves the address bar"
    first = chat(page, "remember the blue door")
    page_server.restart()
    expect(page.locator("#status")).to_have_text("Reconnecting")
    expect(page.locator("#status")).to_have_text("Connected", timeout=30_000)
    expect(page.locator(".message.notice")).to_have_text("Reconnected.")
    expect(page.locator(".message.user")).to_have_text("remember the blue door")
    expect(replies(page).locator(".content")).to_have_text(first)
    assert chat(page, "and now?").endswith("(history: 4 messages)")
    page.reload()  # a reload keeps the sign-in (sessionStorage) and shows the conversation
    expect(page.locator("#status")).to_have_text("Connected")
    expect(page.locator(".message.user")).to_have_count(2)


# -- the defects of issue 13 ---------------------------------------------------------------


@pytest.fixture(scope="module")
def strict_server(fake_ai: FakeAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    """A short length limit and rate limit, so both are reached by hand."""
    yield from serve_chat(
        fake_ai,
        tmp_path_factory.mktemp("strict"),
        **azure_settings(fake_ai, max_message_length="100", rate_limit_messages="2"),
    )


def scroll_state(page: Page) -> dict[str, float]:
    return dict(
        page.evaluate(
            """() => { const c = document.getElementById("chat-container");
            return { top: c.scrollTop, max: c.scrollHeight - c.clientHeight }; }"""
        )
    )


def test_a_reader_who_scrolled_up_stays_there_and_can_jump_to_latest(
    page_server: ChatServer, new_page: OpenPage
) -> None:
    page = open_chat(new_page, page_server)
    chat(page, f"[[tokens:500]] {nonce()}")  # taller than the log
    send(page, f"[[slow]] {nonce()}")
    reply = replies(page).nth(1)
    expect(reply.locator(".content")).to_contain_text("tok2")
    jump = page.get_by_role("button", name="Jump to latest")
    expect(jump).to_be_hidden()  # following: nothing to jump to
    page.locator("#chat-container").evaluate("c => { c.scrollTop = 0; }")
    expect(reply.locator(".content")).to_contain_text("tok30")  # many frames later
    assert scroll_state(page)["top"] == 0, "the reader is not dragged back to the bottom"
    expect(jump).to_be_visible()
    jump.click()
    expect(jump).to_be_hidden()
    expect(reply.locator(".content")).to_contain_text("tok40")
    state = scroll_state(page)
    assert state["max"] - state["top"] < 40, f"following the reply again: {state}"
    page.locator("#stop-btn").click()
    expect(reply).to_have_attribute("aria-busy", "false")


def test_the_counter_shows_near_the_limit_and_a_message_over_it_is_not_sent(
    strict_server: ChatServer, new_page: OpenPage
) -> None:
    page = open_chat(new_page, strict_server)
    composer, counter = page.locator("#message-input"), page.locator("#char-count")
    composer.fill("x" * 79)
    expect(counter).to_be_hidden()
    composer.fill("é" * 80)  # counted in characters, as the server counts
    expect(counter).to_have_text("80 / 100")
    composer.fill("x" * 101)
    expect(counter).to_have_text("101 / 100")
    expect(counter).to_have_class(re.compile(r"\bover\b"))
    expect(page.locator("#send-btn")).to_be_disabled()
    composer.press("Enter")
    expect(composer).to_have_value("x" * 101)
    expect(page.locator(".message.user")).to_have_count(0)


def test_a_rejected_message_stays_in_the_input_marked_not_sent(strict_server: ChatServer, new_page: OpenPage) -> None:
    page = open_chat(new_page, strict_server)
    chat(page, "one")
    chat(page, "two")
    send(page, "three, over the rate limit")
    expect(page.locator(".message.error")).to_contain_text("You are sending messages too quickly")
    rejected = page.locator(".message.user").nth(2)
    expect(rejected).to_have_class(re.compile(r"\bnot-sent\b"))
    expect(rejected.locator(".message-state")).to_have_text("Not sent")
    expect(page.locator("#message-input")).to_have_value("three, over the rate limit")
    expect(page.locator(".message.user.not-sent")).to_have_count(1)


def test_an_upstream_error_before_any_reply_gives_the_text_back(page_server: ChatServer, new_page: OpenPage) -> None:
    page = open_chat(new_page, page_server)
    text = f"[[429]] {nonce()}"
    send(page, text)
    expect(page.locator(".message.error")).to_have_text(BUSY)
    expect(page.locator(".message.user")).to_have_class(re.compile(r"\bnot-sent\b"))
    expect(page.locator("#message-input")).to_have_value(text)


def test_the_copy_button_is_above_the_composer_and_empty_code_blocks_get_none(
    page_server: ChatServer, new_page: OpenPage
) -> None:
    page = open_chat(new_page, page_server)
    chat(page, f"[[tokens:500]] {nonce()}")
    text = chat(page, "two blocks\n\n```\n```\n\n```js\nlet x = 1;\n```\n")
    assert "let x = 1;" in text
    reply = replies(page).nth(1)
    expect(reply.locator("pre")).to_have_count(2)
    expect(reply.locator(".code-block .copy-btn")).to_have_count(1)
    copy = reply.locator(":scope > .copy-btn")
    expect(copy).to_be_visible()
    box, composer = copy.bounding_box(), page.locator("#composer").bounding_box()
    assert box and composer
    assert box["y"] + box["height"] <= composer["y"], f"the copy button {box} is under the composer {composer}"
    expect(copy).to_be_in_viewport(ratio=1)


def test_on_a_phone_the_composer_gives_the_input_the_width(page_server: ChatServer, new_page: OpenPage) -> None:
    page = open_chat(new_page, page_server, viewport=PHONE)
    field = page.locator("#message-input").bounding_box()
    assert field and field["width"] >= 300, f"the input is {field}"
    for button in ("#send-btn", "#clear-btn"):
        expect(page.locator(button)).to_be_in_viewport(ratio=1)
    height = page.evaluate(
        """() => [...document.styleSheets].flatMap(s => { try { return [...s.cssRules]; } catch { return []; } })
            .filter(r => r.selectorText === "body").map(r => r.style.height)"""
    )
    assert "100dvh" in height, f"body height: {height}"
    send(page, f"[[slow]] {nonce()}")
    expect(page.locator("#stop-btn")).to_be_in_viewport(ratio=1)
    field = page.locator("#message-input").bounding_box()
    assert field and field["width"] >= 300, f"with Stop shown the input is {field}"
    expect(replies(page).first.locator(".content")).to_contain_text("tok1")
    page.locator("#stop-btn").click()
    wait_reply(page, 1)


def test_a_stopped_reply_says_it_was_stopped(page_server: ChatServer, new_page: OpenPage) -> None:
    page = open_chat(new_page, page_server)
    send(page, f"[[slow]] {nonce()}")
    reply = replies(page).first
    expect(reply.locator(".content")).to_contain_text("tok2")
    page.locator("#stop-btn").click()
    expect(reply).to_have_attribute("aria-busy", "false")
    expect(reply).to_have_class(re.compile(r"\bstopped\b"))
    expect(reply.locator(".message-state")).to_have_text("Stopped")
    chat(page, "a reply that ends by itself")
    expect(replies(page).nth(1).locator(".message-state")).to_have_count(0)


def test_reconnecting_counts_down_and_retry_now_connects_at_once(page_server: ChatServer, new_page: OpenPage) -> None:
    page, errors = new_page(page_server.base + "/")
    errors.allow(*SERVER_DOWN)
    expect(page.locator("#status")).to_have_text("Connected")
    expect(page.locator("#reconnect")).to_be_hidden()
    page_server.stop()
    try:
        expect(page.locator("#status")).to_have_text("Reconnecting")
        countdown = page.locator("#reconnect-countdown")
        # the attempts after 0 s and 2 s fail; the next waits 5 s, then 10 s
        expect(countdown).to_have_text(re.compile(r"^Next try in (9|10) s$"), timeout=30_000)
    finally:
        page_server.start()
    page.get_by_role("button", name="Retry now").click()
    # well before the countdown's own attempt
    expect(page.locator("#status")).to_have_text("Connected", timeout=5_000)
    expect(page.locator("#reconnect")).to_be_hidden()
    expect(page.locator(".message.notice")).to_have_text("Reconnected. The conversation was reset.")
    assert chat(page, "after retry now").startswith("Echo: after retry now")


# -- conversations, and replies that survive a reload ----------------------------------------


@pytest.mark.parametrize("transport", ["WebSockets", "ServerSentEvents", "LongPolling"])
def test_a_reload_mid_reply_shows_the_whole_reply_once(
    page_server: ChatServer, fake_ai: FakeAI, new_page: OpenPage, transport: str
) -> None:
    page = open_chat(new_page, page_server, f"?transport={transport}")
    tag = nonce()
    send(page, f"[[tokens:600]] {tag}")
    expect(replies(page).first.locator(".content")).to_contain_text("t40")
    page.reload()
    expect(page.locator("#status")).to_have_text("Connected")
    assert wait_reply(page, 1) == full(600)
    expect(page.locator(".message.user")).to_have_text(f"[[tokens:600]] {tag}")
    expect(replies(page)).to_have_count(1)
    [record] = fake_ai.requests_with(tag)
    assert record["outcome"] == "completed", "the reload did not stop the reply"
    page.reload()  # and once it is stored, the conversation shows it the same way
    expect(page.locator("#status")).to_have_text("Connected")
    assert wait_reply(page, 1) == full(600)
    expect(page.locator(".message.user")).to_have_count(1)


def test_a_dropped_socket_resumes_the_reply_where_it_was(
    page_server: ChatServer, fake_ai: FakeAI, new_page: OpenPage
) -> None:
    page, errors = new_page("about:blank")
    errors.allow(*SERVER_DOWN, "WebSocket closed with status code")
    sockets: list[Any] = []

    def route(ws: Any) -> None:
        ws.connect_to_server()
        sockets.append(ws)

    page.route_web_socket(re.compile(r"/chatHub"), route)
    page.goto(page_server.base + "/?transport=WebSockets")
    expect(page.locator("#status")).to_have_text("Connected")
    tag = nonce()
    send(page, f"[[tokens:600]] {tag}")
    expect(replies(page).first.locator(".content")).to_contain_text("t40")
    sockets[0].close()  # the network drops the socket; the server keeps generating
    expect(page.locator(".message.notice")).to_have_text("Reconnected.")
    assert wait_reply(page, 1) == full(600)
    expect(replies(page)).to_have_count(1)
    assert fake_ai.requests_with(tag)[0]["outcome"] == "completed"


def test_nobody_came_back_so_the_reply_is_aborted_after_the_grace_period(
    page_server: ChatServer, fake_ai: FakeAI, new_page: OpenPage
) -> None:
    page = open_chat(new_page, page_server)
    tag = nonce()
    send(page, f"[[slow]] {tag}")
    expect(replies(page).first.locator(".content")).to_contain_text("tok2")
    page.close()
    closed = time.monotonic()
    deadline = closed + 15
    while fake_ai.requests_with(tag)[0]["outcome"] == "streaming" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake_ai.requests_with(tag)[0]["outcome"] == "aborted"
    assert time.monotonic() - closed >= 1.5, "not before the 2 s grace period"


def test_conversations_new_open_rename_delete_and_kept_across_a_reload(
    page_server: ChatServer, new_page: OpenPage
) -> None:
    page = open_chat(new_page, page_server)
    page.on("dialog", lambda dialog: dialog.accept("Renamed chat") if dialog.type == "prompt" else dialog.accept())
    expect(page.locator("#chat-container")).to_be_empty()
    chat(page, "First topic, about doors")
    expect(page.locator(".conversation-open")).to_have_text(["First topic, about doors"])
    page.get_by_role("button", name="New chat").click()
    expect(page.locator(".message")).to_have_count(0)
    chat(page, "Second topic, about windows")
    titles = ["Second topic, about windows", "First topic, about doors"]
    expect(page.locator(".conversation-open")).to_have_text(titles)  # newest first
    expect(page.locator(".conversation-open[aria-current=true]")).to_have_text(titles[0])

    page.get_by_role("button", name="Open “First topic, about doors”").click()
    expect(page.locator(".message.user")).to_have_text("First topic, about doors")
    page.get_by_role("button", name="Rename “First topic, about doors”").click()
    expect(page.locator(".conversation-open").nth(0)).to_have_text("Renamed chat")

    page.reload()  # the guest keeps their conversations, and the open one
    expect(page.locator("#status")).to_have_text("Connected")
    expect(page.locator(".conversation-open")).to_have_text(["Renamed chat", "Second topic, about windows"])
    expect(page.locator(".message.user")).to_have_text("First topic, about doors")

    page.get_by_role("button", name="Delete “Renamed chat”").click()
    expect(page.locator(".conversation-open")).to_have_text(["Second topic, about windows"])
    expect(page.locator(".message.user")).to_have_text("Second topic, about windows")


def test_regenerate_edit_and_continue(page_server: ChatServer, new_page: OpenPage) -> None:
    page = open_chat(new_page, page_server)
    tag = nonce()
    chat(page, f"one {tag}")
    page.get_by_role("button", name="Regenerate the reply").click()
    expect(replies(page)).to_have_count(1)
    assert wait_reply(page, 1) == f"Echo: one {tag} (history: 2 messages)"
    chat(page, f"two {tag}")

    page.get_by_role("button", name="Edit and resend").first.click()
    expect(page.locator("#message-input")).to_have_value(f"one {tag}")
    page.locator("#message-input").fill(f"uno {tag}")
    page.locator("#message-input").press("Enter")
    expect(page.locator(".message.user")).to_have_text([f"uno {tag}"])  # what followed is replaced
    assert wait_reply(page, 1) == f"Echo: uno {tag} (history: 2 messages)"

    send(page, f"[[slow]] {tag}")
    expect(replies(page).nth(1).locator(".content")).to_contain_text("tok3")
    page.locator("#stop-btn").click()
    expect(replies(page).nth(1).locator(".message-state")).to_have_text("Stopped")
    partial = str(replies(page).nth(1).locator(".content").text_content()).strip()
    page.get_by_role("button", name="Continue the reply").click()
    text = wait_reply(page, 2)
    assert text.startswith(partial) and "Echo: Continue your previous reply" in text, text
    expect(replies(page)).to_have_count(2)


# -- a reply the server never finished (issue 22) ---------------------------------------------


@pytest.fixture
def sqlite_server(fake_ai: FakeAI, tmp_path: Path) -> Iterator[ChatServer]:
    """A server of the test's own, with SQLite history, for the test to kill."""
    yield from serve_chat(fake_ai, tmp_path, **azure_settings(fake_ai, history_store="sqlite"))


@pytest.mark.parametrize(
    ("viewport", "scheme"), [(DESKTOP, "light"), (PHONE, "dark")], ids=["desktop-light", "phone-dark"]
)
def test_a_reply_the_server_never_finished_is_marked_and_continue_answers_it(
    sqlite_server: ChatServer,
    fake_ai: FakeAI,
    new_page: OpenPage,
    viewport: tuple[int, int],
    scheme: Literal["light", "dark"],
) -> None:
    user = f"page-crash-{nonce()}"
    page, errors = new_page(f"{sqlite_server.base}/#token={token_for(user)}", viewport=viewport, color_scheme=scheme)
    errors.allow(*SERVER_DOWN, *KILLED)
    expect(page.locator("#status")).to_have_text("Connected")
    tag = nonce()
    first = chat(page, f"first {tag}")
    question = f"[[tokens:1000]] {tag}"
    send(page, question)
    expect(replies(page).nth(1).locator(".content")).to_contain_text("t20")
    crash_and_start_again(sqlite_server)  # mid-reply: the question was stored, its reply never is

    # the open page reconnects and marks the question; a page opened afresh too; Continue answers it
    expect_interrupted_mark(page, replies(page), f"first {tag}", question, scheme)
    note = page.locator(".interrupted-note")
    assert wait_reply(page, 2) == full(1000)
    expect(replies(page)).to_have_count(2)
    expect(replies(page).first.locator(".content")).to_have_text(first)  # the earlier reply is untouched
    expect(note).to_have_count(0)
    expect(page.get_by_role("button", name="Regenerate the reply")).to_be_visible()
    killed, answered = fake_ai.requests_with(question)  # the model was asked the question again
    assert killed["outcome"] == "aborted" and answered["outcome"] == "completed"

    page.reload()  # the reply is stored: no mark any more
    expect(page.locator("#status")).to_have_text("Connected")
    assert wait_reply(page, 2) == full(1000)
    expect(page.locator(".message.user")).to_have_count(2)
    expect(note).to_have_count(0)


# -- honest ends (issue 23) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("viewport", "scheme"), [(DESKTOP, "light"), (PHONE, "dark")], ids=["desktop-light", "phone-dark"]
)
def test_a_reply_cut_at_the_token_limit_says_so_and_continue_finishes_it(
    page_server: ChatServer, new_page: OpenPage, viewport: tuple[int, int], scheme: Literal["light", "dark"]
) -> None:
    page = open_chat(
        new_page, page_server, f"#token={token_for(f'page-cut-{nonce()}')}", viewport=viewport, color_scheme=scheme
    )
    chat(page, f"first {nonce()}")
    expect_cut_short_and_continue(page, replies(page), "#message-input", scheme)
    expect(replies(page)).to_have_count(2)


@pytest.mark.parametrize(
    ("viewport", "scheme"), [(DESKTOP, "light"), (PHONE, "dark")], ids=["desktop-light", "phone-dark"]
)
def test_a_reply_the_content_filter_flags_late_is_taken_off_the_screen(
    page_server: ChatServer, new_page: OpenPage, viewport: tuple[int, int], scheme: Literal["light", "dark"]
) -> None:
    page = open_chat(
        new_page, page_server, f"#token={token_for(f'page-wd-{nonce()}')}", viewport=viewport, color_scheme=scheme
    )
    first = f"first {nonce()}"
    kept = chat(page, first)
    expect_withdrawn(page, replies(page), "#message-input")
    expect(replies(page).first.locator(".content")).to_have_text(kept)  # the earlier reply is untouched
    violations = serious_accessibility_violations(page)
    assert not violations, f"{scheme} theme: {violations}"


# -- finishing: themes, accessibility, keyboard --------------------------------------------


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_serious_accessibility_violation_in_either_theme(
    page_server: ChatServer, new_page: OpenPage, scheme: Literal["light", "dark"]
) -> None:
    page = open_chat(new_page, page_server, color_scheme=scheme)
    assert not serious_accessibility_violations(page), "the empty state"
    chat(page, "Some code:\n\n```python\nprint('hi')\n```\n\nand `inline` code, a [link](https://example.com).")
    send(page, f"[[slow]] {nonce()}")
    expect(replies(page).nth(1).locator(".content")).to_contain_text("tok2")
    page.locator("#stop-btn").click()
    expect(replies(page).nth(1).locator(".message-state")).to_have_text("Stopped")
    page.locator("#message-input").fill("x" * 7000)  # the counter shows
    expect(page.locator("#char-count")).to_be_visible()
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert (background == "rgb(18, 20, 24)") == (scheme == "dark"), f"{scheme}: body {background}"
    violations = serious_accessibility_violations(page)
    assert not violations, f"{scheme} theme: {violations}"


def test_the_theme_toggle_overrides_the_system_and_is_kept(page_server: ChatServer, new_page: OpenPage) -> None:
    page = open_chat(new_page, page_server, color_scheme="dark")
    toggle = page.get_by_role("button", name="Dark mode")
    expect(toggle).to_have_attribute("aria-pressed", "true")  # the system's choice
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "false")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(246, 247, 249)"
    assert not serious_accessibility_violations(page)
    page.reload()
    expect(page.locator("#status")).to_have_text("Connected")
    expect(page.get_by_role("button", name="Dark mode")).to_have_attribute("aria-pressed", "false")


def test_the_model_is_named(page_server: ChatServer, new_page: OpenPage) -> None:
    page = open_chat(new_page, page_server)
    expect(page.locator("#model")).to_have_text("azure · chat-deployment")


def test_every_control_works_from_the_keyboard(page_server: ChatServer, new_page: OpenPage) -> None:
    page = open_chat(new_page, page_server, viewport=PHONE)
    expect(page.locator("#message-input")).to_be_focused()
    page.keyboard.type(f"by keyboard {nonce()}")
    page.keyboard.press("Enter")
    wait_reply(page, 1)
    expect(page.locator("#message-input")).to_be_focused()

    def tab_to(name: str) -> None:
        target = page.get_by_role("button", name=name, exact=True)
        for _ in range(40):
            if target.evaluate("e => e === document.activeElement"):
                return
            page.keyboard.press("Tab")
        raise AssertionError(f"Tab never reached {name!r}")

    tab_to("Regenerate the reply")
    page.keyboard.press("Enter")
    wait_reply(page, 1)
    tab_to("Chats")  # the phone's conversation list
    page.keyboard.press("Enter")
    expect(page.locator("#sidebar")).to_be_visible()
    tab_to("New chat")
    page.keyboard.press("Enter")
    expect(page.locator(".message")).to_have_count(0)
    expect(page.locator("#sidebar")).to_be_hidden()
    page.locator("#message-input").focus()
    page.keyboard.type("[[slow]] stop me")
    page.keyboard.press("Enter")
    expect(replies(page).first.locator(".content")).to_contain_text("tok1")
    expect(page.locator("#stop-btn")).to_be_focused()
    page.keyboard.press("Enter")
    expect(replies(page).first.locator(".message-state")).to_have_text("Stopped")
    tab_to("Dark mode")
    page.keyboard.press("Space")
    expect(page.get_by_role("button", name="Dark mode")).to_have_attribute("aria-pressed", "true")


def test_a_cleared_conversation_can_be_restored(page_server: ChatServer, new_page: OpenPage) -> None:
    page = open_chat(new_page, page_server)
    tag = nonce()
    chat(page, f"keep this {tag}")
    page.locator("#clear-btn").click()
    expect(page.locator(".message.notice")).to_have_text("Conversation cleared.")
    undo = page.get_by_role("button", name="Undo the clear")
    expect(undo).to_be_focused()
    undo.press("Enter")
    expect(page.locator(".message.user")).to_have_text(f"keep this {tag}")
    expect(replies(page)).to_have_count(1)
    assert chat(page, "and then").endswith("(history: 4 messages)"), "the model sees the restored history"


def test_a_reply_shows_the_tokens_it_cost(page_server: ChatServer, new_page: OpenPage) -> None:
    page = open_chat(new_page, page_server)
    chat(page, "[[tokens:7]] count")
    expect(replies(page).first.locator(".reply-usage")).to_have_text(re.compile(r"^\d+ tokens \(\d+ in, 7 out\)$"))


def test_screenshot_of_a_real_looking_conversation(chat_server: ChatServer, new_page: OpenPage, tmp_path: Path) -> None:
    """docs/screenshot-page.png with UPDATE_SCREENSHOTS=1 (`make screenshots`): the fake's canned
    answers, a file attached to a question, and the model picker (the server offers two models)."""
    page = open_chat(new_page, chat_server)
    chat(page, "Plan a weekend in Lisbon")
    page.get_by_role("button", name="New chat").click()
    expect(page.locator(".message")).to_have_count(0)
    chat(page, "How do I read a JSON file in Python?")
    settings = b'{\n  "theme": "dark",\n  "language": "pt-PT"\n}\n'
    page.locator("#attach-input").set_input_files(
        [{"name": "settings.json", "mimeType": "application/json", "buffer": settings}]
    )
    expect(page.locator(".chosen-file .chosen-name")).to_have_text(["settings.json"])
    text = chat(page, "And how do I write it back, nicely formatted?")
    assert text.startswith("Pass indent to json.dump")
    expect(page.locator(".message.user .file-chip")).to_have_text([f"settings.json · {len(settings)} bytes"])
    expect(page.locator("#model-picker")).to_be_visible()
    expect(page.locator(".conversation-open")).to_have_count(2)
    page.locator("#message-input").focus()
    page.locator("#chat-container").evaluate("c => { c.scrollTop = c.scrollHeight; }")
    save_screenshot(page, "screenshot-page.png", tmp_path)


# -- search, export and "delete all my data" (issue 23) -------------------------------------------


def test_search_finds_only_ones_own_conversations_and_opens_one(page_server: ChatServer, new_page: OpenPage) -> None:
    tag = nonce()
    someone = open_chat(new_page, page_server)  # another guest, with the very words searched for
    chat(someone, f"About giraffes {tag}, someone else's")
    page = open_chat(new_page, page_server)
    chat(page, f"About giraffes {tag}")
    page.get_by_role("button", name="New chat").click()
    expect(page.locator(".message")).to_have_count(0)
    chat(page, f"About zebras {tag}")

    results = search_for(page, f"GIRAFFES {tag.upper()}")
    expect(results).to_have_count(1)
    expect(results.locator(".search-result-title")).to_have_text(f"About giraffes {tag}")
    expect(results.locator("mark")).to_have_text(f"giraffes {tag}")
    expect(page.locator("#search-status")).to_have_text("1 conversation found.")
    expect(page.locator("#conversation-list")).to_be_hidden()
    violations = serious_accessibility_violations(page)
    assert not violations, violations
    results.first.click()
    expect(page.locator(".message.user")).to_have_text(f"About giraffes {tag}")

    expect(search_for(page, f"nowhere {tag}")).to_have_count(0)
    expect(page.locator("#search-status")).to_have_text("No conversation matches.")
    search_for(page, "")
    expect(page.locator("#conversation-list")).to_be_visible()
    expect(page.locator(".conversation-open")).to_have_count(2)


def test_export_downloads_the_conversation_as_markdown_and_json(page_server: ChatServer, new_page: OpenPage) -> None:
    page = open_chat(new_page, page_server)
    tag = nonce()
    answer = chat(page, f"Export me {tag}")
    expect_exports(page, f"Export me {tag}", f"export-me-{tag}", f"Export me {tag}", answer)


def test_delete_all_my_data_asks_first_and_leaves_the_others_alone(page_server: ChatServer, new_page: OpenPage) -> None:
    tag = nonce()
    user = f"page-user-{tag}"
    other, _ = new_page(f"{page_server.base}/#token={token_for(f'other-{user}')}")
    expect(other.locator("#status")).to_have_text("Connected")
    chat(other, f"kept {tag}")
    page, _ = new_page(f"{page_server.base}/#token={token_for(user)}")
    expect(page.locator("#status")).to_have_text("Connected")
    chat(page, f"first {tag}")
    page.get_by_role("button", name="New chat").click()
    expect(page.locator(".message")).to_have_count(0)
    chat(page, f"second {tag}")

    delete_all(page, accept=False)  # changed their mind: nothing happens
    page.reload()
    expect(page.locator("#status")).to_have_text("Connected")
    expect(page.locator(".conversation-open")).to_have_count(2)
    expect(page.locator(".message.user")).to_have_text(f"second {tag}")

    delete_all(page, accept=True)
    expect(page.locator(".message.notice")).to_have_text(DELETED)
    expect(page.locator(".message.user")).to_have_count(0)
    expect(page.locator(".conversation-open")).to_have_text(["New chat"])
    page.reload()
    expect(page.locator("#status")).to_have_text("Connected")
    expect(page.locator(".message.user")).to_have_count(0)
    expect(page.locator(".conversation-open")).to_have_text(["New chat"])
    other.reload()
    expect(other.locator("#status")).to_have_text("Connected")
    expect(other.locator(".message.user")).to_have_text(f"kept {tag}")


def test_on_a_phone_a_guest_deletes_all_their_data_from_the_panel(page_server: ChatServer, new_page: OpenPage) -> None:
    page = open_chat(new_page, page_server, viewport=PHONE)
    tag = nonce()
    chat(page, f"a guest's {tag}")
    guest = page.evaluate("localStorage.getItem('chat-guest')")
    page.get_by_role("button", name="Chats").click()
    delete_all(page, accept=True)
    expect(page.locator(".message.notice")).to_have_text(DELETED)
    expect(page.locator(".message.user")).to_have_count(0)
    assert page.evaluate("localStorage.getItem('chat-guest')") not in (guest, None), "a new guest"
    chat(page, f"a fresh start {tag}")  # the page goes on, as a new guest
    page.reload()
    expect(page.locator("#status")).to_have_text("Connected")
    expect(page.locator(".message.user")).to_have_text(f"a fresh start {tag}")


@pytest.mark.parametrize(("viewport", "scheme"), [(DESKTOP, "light"), (PHONE, "dark")], ids=["desktop", "phone-dark"])
def test_a_conversation_picks_its_model_and_instructions(
    chat_server: ChatServer,
    fake_ai: FakeAI,
    new_page: OpenPage,
    viewport: tuple[int, int],
    scheme: Literal["light", "dark"],
) -> None:
    """The session's main server offers two deployments (AI_MODELS); see check_models_and_instructions."""
    page = open_chat(new_page, chat_server, viewport=viewport, color_scheme=scheme)
    check_models_and_instructions(page, fake_ai, "#message-input")


def test_one_model_shows_no_picker_and_no_labels(page_server: ChatServer, new_page: OpenPage) -> None:
    page = open_chat(new_page, page_server)
    chat(page, f"single {nonce()}")
    expect(page.locator("#model-picker")).to_be_hidden()
    expect(page.locator(".model-label")).to_have_count(0)
    expect(page.locator("#instructions-btn")).to_be_visible()


# -- attachments (issue 23): the same checks as the Angular client's (tests/support/page.py) ------
def open_sized(new_page: OpenPage, server: ChatServer, viewport: tuple[int, int], scheme: str) -> Page:
    page, _ = new_page(f"{server.base}/", viewport=viewport, color_scheme=scheme)
    expect(page.locator("#status")).to_have_text("Connected")
    return page


@pytest.mark.parametrize(("viewport", "scheme"), [(DESKTOP, "light"), (PHONE, "dark")], ids=["desktop", "phone-dark"])
def test_files_attached_by_picker_paste_and_drop_reach_the_model_as_parts(
    chat_server: ChatServer, fake_ai: FakeAI, new_page: OpenPage, viewport: tuple[int, int], scheme: str
) -> None:
    """The main test server's default deployment reads images: an image by the picker, a code file
    pasted, text files dropped, one removed; the fake Azure OpenAI gets them as parts; the message
    shows them, again after a reload."""
    page = open_sized(new_page, chat_server, viewport, scheme)
    choose_files(page, "#message-input", scheme)
    expect_files_reach_the_model(page, fake_ai, "#message-input", scheme)


def test_chips_are_removed_by_keyboard(chat_server: ChatServer, new_page: OpenPage) -> None:
    expect_chips_removed_by_keyboard(open_sized(new_page, chat_server, DESKTOP, "light"), "#message-input")


def test_an_image_pasted_alone_is_sent_without_text(chat_server: ChatServer, new_page: OpenPage) -> None:
    """A screenshot pasted into the input, and Send with no text: the message is the image alone."""
    page = open_sized(new_page, chat_server, DESKTOP, "light")
    page.evaluate(
        """(bytes) => {
        const data = new DataTransfer();
        data.items.add(new File([new Uint8Array(bytes)], "screenshot.png", { type: "image/png" }));
        document.querySelector("#message-input").dispatchEvent(
            new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }));
    }""",
        list(PNG),
    )
    expect(page.locator(".chosen-file .chosen-name")).to_have_text(["screenshot.png"])
    page.locator("#send-btn").click()
    expect(replies(page).first).to_contain_text(f"Received: image image/png {len(PNG)} bytes.", timeout=30_000)
    expect(page.locator(".message.user img.message-image")).to_have_attribute("alt", "screenshot.png")


def test_files_too_long_together_come_back_as_chips_to_send_fewer(chat_server: ChatServer, new_page: OpenPage) -> None:
    page = open_sized(new_page, chat_server, DESKTOP, "light")
    expect_files_too_long_together_come_back(page, "#message-input", "#send-btn")


def test_a_reload_mid_reply_shows_the_question_with_its_image(chat_server: ChatServer, new_page: OpenPage) -> None:
    page = open_sized(new_page, chat_server, DESKTOP, "light")
    expect_the_image_after_a_reload_mid_reply(page, "#message-input")


@pytest.mark.parametrize(("viewport", "scheme"), [(DESKTOP, "light"), (PHONE, "dark")], ids=["desktop", "phone-dark"])
def test_a_refused_file_is_said_next_to_the_composer_and_the_text_is_kept(
    chat_server: ChatServer, new_page: OpenPage, viewport: tuple[int, int], scheme: str
) -> None:
    page = open_sized(new_page, chat_server, viewport, scheme)
    expect_refusals_keep_the_text(page, "#message-input", "#send-btn", scheme)


def test_the_built_in_model_takes_text_files_and_refuses_images_before_uploading(
    local_chat_server: ChatServer, new_page: OpenPage
) -> None:
    """The built-in offline model reads no images: known from GetChatInfo before any upload."""
    page = open_sized(new_page, local_chat_server, DESKTOP, "light")
    sent: list[str] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda frame: sent.append(str(frame))))
    expect(page.locator("#attach-hint")).to_have_text("Text files only: this model takes no images")
    typed = "describe it"
    page.locator("#message-input").fill(typed)
    page.locator("#attach-input").set_input_files([CAT])
    model = page.evaluate("document.getElementById('model').textContent.split(' · ')[0]")
    expect(page.locator("#attach-error")).to_have_text(
        f"The model {model} cannot read images. Attach text files only, or choose a model that reads images."
    )
    expect(page.locator(".chosen-file")).to_have_count(0)
    expect(page.locator("#message-input")).to_have_value(typed)
    page.locator("#attach-input").set_input_files([{"name": "hello.py", "mimeType": "", "buffer": b"print(1)\n"}])
    expect(page.locator(".chosen-file .chosen-name")).to_have_text(["hello.py"])
    assert not [frame for frame in sent if "UploadAttachment" in frame], "nothing was uploaded"
