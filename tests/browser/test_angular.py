"""The Angular client (angular, built by `make angular` into wwwroot/angular/) in headless
Chromium, talking to /chat with AskAi against a chat server and the fake Azure OpenAI."""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import DESKTOP, PHONE, OpenPage, save_screenshot, serious_accessibility_violations
from tests.support.chat_fixtures import ChatServer, FakeAI, azure_settings, serve_chat
from tests.support.page import (
    BUSY,
    DELETED,
    KILLED,
    MARKDOWN,
    SERVER_DOWN,
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
    nonce,
    search_for,
)
from tests.support.paths import ROOT
from tests.support.redis_server import RedisServer

BUILD = ROOT / "wwwroot" / "angular" / "index.html"


# Records each distinct text of the newest reply as it renders, with the typing indicator's state.
RECORD_RENDERS = """
window.__renders = [];
new MutationObserver(() => {
    const replies = document.querySelectorAll(".message.assistant");
    const reply = replies[replies.length - 1];
    if (!reply) return;
    const last = window.__renders[window.__renders.length - 1];
    if (last && last.text === reply.textContent) return;
    window.__renders.push({
        text: reply.textContent,
        done: reply.classList.contains("done"),
        typing: document.querySelector(".typing") !== null,
    });
}).observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
"""


@pytest.fixture(scope="module")
def angular_server(fake_ai: FakeAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    if not BUILD.is_file():
        pytest.fail(f"{BUILD} is missing: `make angular` builds the Angular client (make test does)")
    yield from serve_chat(fake_ai, tmp_path_factory.mktemp("angular"), **azure_settings(fake_ai))


def open_app(new_page: OpenPage, server: ChatServer) -> Page:
    page, _ = new_page(f"{server.base}/angular/", init_script=RECORD_RENDERS)
    expect(page.locator("#status")).to_have_text("Connected")
    return page


def ask(page: Page, prompt: str) -> Any:
    """Sends a prompt with Enter; returns the locator of the reply it starts."""
    count = page.locator(".message.assistant").count()
    page.locator("#prompt").fill(prompt)
    page.locator("#prompt").press("Enter")
    return page.locator(".message.assistant").nth(count)


def test_ask_ai_streams_and_completes(angular_server: ChatServer, fake_ai: FakeAI, new_page: OpenPage) -> None:
    page = open_app(new_page, angular_server)
    tag = uuid.uuid4().hex[:8]
    reply = ask(page, f"[[tokens:40]] {tag}")
    expect(page.locator(".message.user")).to_have_text(f"[[tokens:40]] {tag}")
    expect(reply).to_have_class("message assistant done", timeout=30_000)
    expected = " ".join(f"t{i}" for i in range(40))
    expect(reply).to_have_text(expected)
    expect(page.locator(".typing")).to_have_count(0)
    expect(page.locator("#stop-btn")).to_have_count(0)

    renders: list[dict[str, Any]] = page.evaluate("window.__renders")
    streaming = [r for r in renders if not r["done"] and r["text"] not in ("", expected)]
    assert len(streaming) >= 2, f"intermediate renders before completed: {renders}"
    assert any(r["typing"] for r in streaming), "typing(id, true) shows the indicator while tokens arrive"

    [record] = fake_ai.requests_with(tag)
    assert record["outcome"] == "completed"
    message_id = reply.get_attribute("data-message-id")
    assert message_id, "the reply is keyed by the id the events carry"

    next_reply = ask(page, f"second {tag}")
    expect(next_reply).to_have_class("message assistant done")
    expect(next_reply).to_have_text(f"Echo: second {tag} (history: 4 messages)")
    assert next_reply.get_attribute("data-message-id") != message_id


def test_stop_ends_the_reply_with_completed(angular_server: ChatServer, new_page: OpenPage) -> None:
    page = open_app(new_page, angular_server)
    reply = ask(page, f"[[slow]] {uuid.uuid4().hex[:8]}")
    expect(reply).to_contain_text("tok2")
    page.locator("#stop-btn").click()
    expect(reply).to_have_class("message assistant done")
    text = str(reply.text_content())
    assert text.startswith("tok0 tok1 tok2") and "tok399" not in text
    expect(page.locator("#stop-btn")).to_have_count(0)


def test_upstream_error_is_shown_and_the_next_question_works(angular_server: ChatServer, new_page: OpenPage) -> None:
    page = open_app(new_page, angular_server)
    page.locator("#prompt").fill(f"[[429]] {uuid.uuid4().hex[:8]}")
    page.locator("#ask-btn").click()
    expect(page.locator(".message.error")).to_have_text(BUSY)
    reply = ask(page, "still there?")
    expect(reply).to_have_class("message assistant done")
    expect(reply).to_contain_text("Echo: still there?")


def test_clear_empties_the_conversation(angular_server: ChatServer, new_page: OpenPage) -> None:
    page = open_app(new_page, angular_server)
    expect(ask(page, "one")).to_have_class("message assistant done")
    page.locator("#clear-btn").click()
    expect(page.locator(".message.user")).to_have_count(0)
    reply = ask(page, "two")
    expect(reply).to_have_text("Echo: two (history: 2 messages)")


# -- the defects of issue 13 ---------------------------------------------------------------


def done(reply: Any) -> None:
    expect(reply).to_have_class(re.compile(r"\bdone\b"), timeout=30_000)


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_replies_never_overlap_once_the_log_overflows(
    angular_server: ChatServer, new_page: OpenPage, viewport: tuple[int, int]
) -> None:
    page, _ = new_page(f"{angular_server.base}/angular/", viewport=viewport)
    expect(page.locator("#status")).to_have_text("Connected")
    for count in (300, 40, 200, 10, 120):
        done(ask(page, f"[[tokens:{count}]] {nonce()}"))
    boxes = page.evaluate(
        """() => [...document.querySelectorAll("#messages > *")].map(e => {
            const r = e.getBoundingClientRect();
            const bubble = e.matches(".message") ? e : e.querySelector(".message") ?? e;
            return { top: r.top, bottom: r.bottom, overflow: bubble.scrollHeight - bubble.clientHeight };
        })"""
    )
    assert len(boxes) == 15, "5 questions with their Edit buttons, 5 replies"
    assert all(b["overflow"] <= 1 for b in boxes), f"a bubble smaller than its text: {boxes}"
    for above, below in itertools.pairwise(boxes):
        assert above["bottom"] <= below["top"], f"overlapping messages: {above} {below}"


def test_markdown_renders_as_on_the_page_and_html_from_the_model_never_runs(
    angular_server: ChatServer, new_page: OpenPage
) -> None:
    page, _ = new_page(f"{angular_server.base}/angular/", permissions=("clipboard-read", "clipboard-write"))
    expect(page.locator("#status")).to_have_text("Connected")
    reply = ask(page, MARKDOWN)
    done(reply)
    expect(reply.locator("pre code")).to_have_text('print("hi")\n')
    expect(reply.locator("pre code .hljs-built_in, pre code [class^=hljs-]").first).to_be_visible()  # highlighted
    expect(reply.locator("strong")).to_have_text("bold")
    text = str(reply.text_content())
    assert "```" not in text, "code fences are rendered, not shown"
    assert "<script>window.__xss = 1</script>" in text, "the model's HTML is shown as text"
    expect(page.locator("#messages script, #messages img, #messages [onerror]")).to_have_count(0)
    link = reply.locator("a", has_text="click me")
    assert not (link.get_attribute("href") or "").lower().startswith("javascript")
    link.click()
    assert page.evaluate("window.__xss") is None
    reply.locator(".code-block .copy-btn").click()
    assert page.evaluate("navigator.clipboard.readText()") == 'print("hi")\n'
    page.get_by_role("button", name="Copy reply").click()
    assert page.evaluate("navigator.clipboard.readText()").startswith("Echo: Here is code:\n\n```python")


def test_a_reader_who_scrolled_up_stays_there_and_can_jump_to_latest(
    angular_server: ChatServer, new_page: OpenPage
) -> None:
    page = open_app(new_page, angular_server)
    done(ask(page, f"[[tokens:500]] {nonce()}"))
    reply = ask(page, f"[[slow]] {nonce()}")
    expect(reply).to_contain_text("tok2")
    messages = page.locator("#messages")
    messages.evaluate("m => { m.scrollTop = 0; }")
    expect(reply).to_contain_text("tok30")
    assert messages.evaluate("m => m.scrollTop") == 0, "the reader is not dragged back to the bottom"
    jump = page.get_by_role("button", name="Jump to latest")
    expect(jump).to_be_visible()
    jump.click()
    expect(jump).to_be_hidden()
    expect(reply).to_contain_text("tok40")
    assert messages.evaluate("m => m.scrollHeight - m.clientHeight - m.scrollTop") < 40
    page.locator("#stop-btn").click()
    done(reply)


def test_a_stopped_reply_says_it_was_stopped(angular_server: ChatServer, new_page: OpenPage) -> None:
    page = open_app(new_page, angular_server)
    reply = ask(page, f"[[slow]] {nonce()}")
    expect(reply).to_contain_text("tok2")
    page.locator("#stop-btn").click()
    done(reply)
    expect(page.locator(".reply.stopped .message-state")).to_have_text("Stopped")
    done(ask(page, "ends by itself"))
    expect(page.locator(".reply .message-state")).to_have_count(1)


def test_a_message_that_got_no_reply_is_marked_and_given_back(angular_server: ChatServer, new_page: OpenPage) -> None:
    page = open_app(new_page, angular_server)
    text = f"[[429]] {nonce()}"
    ask(page, text)
    expect(page.locator(".message.error")).to_have_text(BUSY)
    expect(page.locator(".message.user")).to_have_class(re.compile(r"\bnot-sent\b"))
    expect(page.locator(".message.user .message-state")).to_have_text("Not sent")
    expect(page.locator("#prompt")).to_have_value(text)


def test_on_a_phone_the_composer_gives_the_input_the_width(angular_server: ChatServer, new_page: OpenPage) -> None:
    page, _ = new_page(f"{angular_server.base}/angular/", viewport=PHONE)
    expect(page.locator("#status")).to_have_text("Connected")
    reply = ask(page, f"[[slow]] {nonce()}")
    expect(page.locator("#stop-btn")).to_be_in_viewport(ratio=1)
    field = page.locator("#prompt").bounding_box()
    assert field and field["width"] >= 300, f"the input is {field}"
    expect(reply).to_contain_text("tok1")  # a reply to stop, not one stopped before its first word
    page.locator("#stop-btn").click()
    done(reply)


def test_reconnecting_counts_down_and_retry_now_connects_at_once(
    angular_server: ChatServer, new_page: OpenPage
) -> None:
    page, errors = new_page(f"{angular_server.base}/angular/")
    errors.allow(*SERVER_DOWN)
    expect(page.locator("#status")).to_have_text("Connected")
    angular_server.stop()
    try:
        expect(page.locator("#status")).to_have_text("Reconnecting")
        expect(page.locator("#reconnect-countdown")).to_have_text(re.compile(r"^Next try in (9|10) s$"), timeout=30_000)
    finally:
        angular_server.start()
    page.get_by_role("button", name="Retry now").click()
    expect(page.locator("#status")).to_have_text("Connected", timeout=5_000)
    expect(page.locator("#reconnect")).to_have_count(0)
    done(ask(page, "after retry now"))


# -- replies that survive a reload -------------------------------------------------------------


@pytest.mark.parametrize("transport", ["WebSockets", "ServerSentEvents", "LongPolling"])
def test_a_reload_mid_reply_shows_the_whole_reply_once(
    angular_server: ChatServer, fake_ai: FakeAI, new_page: OpenPage, transport: str
) -> None:
    page, _ = new_page(f"{angular_server.base}/angular/?transport={transport}")
    expect(page.locator("#status")).to_have_text("Connected")
    tag = nonce()
    reply = ask(page, f"[[tokens:600]] {tag}")
    expect(reply).to_contain_text("t40")
    page.reload()
    expect(page.locator("#status")).to_have_text("Connected")
    reply = page.locator(".message.assistant")
    expect(reply).to_have_count(1)
    done(reply)
    expect(reply).to_have_text(" ".join(f"t{i}" for i in range(600)))
    expect(page.locator(".message.user")).to_have_text([f"[[tokens:600]] {tag}"])
    [record] = fake_ai.requests_with(tag)
    assert record["outcome"] == "completed", "the reload did not stop the reply"


def test_a_dropped_socket_resumes_the_reply(angular_server: ChatServer, new_page: OpenPage) -> None:
    page, errors = new_page("about:blank")
    errors.allow(*SERVER_DOWN, "WebSocket closed with status code")
    sockets: list[Any] = []

    def route(ws: Any) -> None:
        ws.connect_to_server()
        sockets.append(ws)

    page.route_web_socket(re.compile(r"/chat\b"), route)
    page.goto(f"{angular_server.base}/angular/?transport=WebSockets")
    expect(page.locator("#status")).to_have_text("Connected")
    reply = ask(page, f"[[tokens:600]] {nonce()}")
    expect(reply).to_contain_text("t40")
    sockets[0].close()
    expect(page.locator(".message.notice")).to_have_text("Reconnected.")
    reply = page.locator(".message.assistant")
    expect(reply).to_have_count(1)
    done(reply)
    expect(reply).to_have_text(" ".join(f"t{i}" for i in range(600)))


# -- a reply the server never finished (issue 22) ---------------------------------------------


@pytest.fixture
def redis_history_server(fake_ai: FakeAI, redis_server: RedisServer, tmp_path: Path) -> Iterator[ChatServer]:
    """A server of the test's own, for the test to kill, with its history in Redis: the app is a
    guest, and a guest's conversations outlive the process only there (otherwise in memory)."""
    settings = azure_settings(fake_ai, history_store="redis", redis_url=redis_server.url)
    yield from serve_chat(fake_ai, tmp_path, **settings)


@pytest.mark.parametrize(
    ("viewport", "scheme"), [(DESKTOP, "light"), (PHONE, "dark")], ids=["desktop-light", "phone-dark"]
)
def test_a_reply_the_server_never_finished_is_marked_and_continue_answers_it(
    redis_history_server: ChatServer,
    fake_ai: FakeAI,
    new_page: OpenPage,
    viewport: tuple[int, int],
    scheme: Literal["light", "dark"],
) -> None:
    page, errors = new_page(f"{redis_history_server.base}/angular/", viewport=viewport, color_scheme=scheme)
    errors.allow(*SERVER_DOWN, *KILLED)
    expect(page.locator("#status")).to_have_text("Connected")
    tag = nonce()
    replies = page.locator(".message.assistant")
    done(ask(page, f"first {tag}"))
    first = str(replies.first.text_content())
    question = f"[[tokens:1000]] {tag}"
    expect(ask(page, question)).to_contain_text("t20")
    crash_and_start_again(redis_history_server)  # mid-reply: the question was stored, its reply never is

    # the open app reconnects and marks the question; an app opened afresh too; Continue answers it
    reply = expect_interrupted_mark(page, replies, f"first {tag}", question, scheme)
    note = page.locator(".interrupted-note")
    done(reply)
    expect(reply).to_have_text(" ".join(f"t{i}" for i in range(1000)))
    expect(replies).to_have_count(2)
    expect(replies.first).to_have_text(first)  # the earlier reply is untouched
    expect(note).to_have_count(0)
    expect(page.get_by_role("button", name="Regenerate the reply")).to_be_visible()
    killed, answered = fake_ai.requests_with(question)  # the model was asked the question again
    assert killed["outcome"] == "aborted" and answered["outcome"] == "completed"

    page.reload()  # the reply is stored: no mark any more
    expect(page.locator("#status")).to_have_text("Connected")
    done(replies.nth(1))
    expect(replies.nth(1)).to_have_text(" ".join(f"t{i}" for i in range(1000)))
    expect(page.locator(".message.user")).to_have_count(2)
    expect(note).to_have_count(0)


# -- honest ends (issue 23) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("viewport", "scheme"), [(DESKTOP, "light"), (PHONE, "dark")], ids=["desktop-light", "phone-dark"]
)
def test_a_reply_cut_at_the_token_limit_says_so_and_continue_finishes_it(
    angular_server: ChatServer, new_page: OpenPage, viewport: tuple[int, int], scheme: Literal["light", "dark"]
) -> None:
    page, _ = new_page(f"{angular_server.base}/angular/", viewport=viewport, color_scheme=scheme)
    expect(page.locator("#status")).to_have_text("Connected")
    replies = page.locator(".message.assistant")
    done(ask(page, f"first {nonce()}"))
    expect_cut_short_and_continue(page, replies, "#prompt", scheme)
    expect(replies).to_have_count(2)


@pytest.mark.parametrize(
    ("viewport", "scheme"), [(DESKTOP, "light"), (PHONE, "dark")], ids=["desktop-light", "phone-dark"]
)
def test_a_reply_the_content_filter_flags_late_is_taken_off_the_screen(
    angular_server: ChatServer, new_page: OpenPage, viewport: tuple[int, int], scheme: Literal["light", "dark"]
) -> None:
    page, _ = new_page(f"{angular_server.base}/angular/", viewport=viewport, color_scheme=scheme)
    expect(page.locator("#status")).to_have_text("Connected")
    replies = page.locator(".message.assistant")
    done(ask(page, f"first {nonce()}"))
    first = str(replies.first.text_content())
    expect_withdrawn(page, replies, "#prompt")
    expect(replies.first).to_have_text(first)  # the earlier reply is untouched
    violations = serious_accessibility_violations(page)
    assert not violations, f"{scheme} theme: {violations}"


# -- finishing: themes, accessibility, keyboard --------------------------------------------


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_serious_accessibility_violation_in_either_theme(
    angular_server: ChatServer, new_page: OpenPage, scheme: Literal["light", "dark"]
) -> None:
    page, _ = new_page(f"{angular_server.base}/angular/", color_scheme=scheme)
    expect(page.locator("#status")).to_have_text("Connected")
    assert not serious_accessibility_violations(page), "the empty state"
    done(ask(page, "Some code:\n\n```python\nprint('hi')\n```\n\nand `inline` code."))
    reply = ask(page, f"[[slow]] {nonce()}")
    expect(reply).to_contain_text("tok2")
    page.locator("#stop-btn").click()
    done(reply)
    page.locator("#prompt").fill("x" * 7000)
    expect(page.locator("#char-count")).to_be_visible()
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert (background == "rgb(18, 20, 24)") == (scheme == "dark"), f"{scheme}: body {background}"
    violations = serious_accessibility_violations(page)
    assert not violations, f"{scheme} theme: {violations}"


def test_the_theme_toggle_and_the_model(angular_server: ChatServer, new_page: OpenPage) -> None:
    page = open_app(new_page, angular_server)
    expect(page.locator("#model")).to_have_text("azure · chat-deployment")
    toggle = page.get_by_role("button", name="Dark mode")
    expect(toggle).to_have_attribute("aria-pressed", "false")
    toggle.press("Enter")  # from the keyboard
    expect(toggle).to_have_attribute("aria-pressed", "true")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(18, 20, 24)"
    page.reload()
    expect(page.get_by_role("button", name="Dark mode")).to_have_attribute("aria-pressed", "true")


def test_conversations_and_undoing_a_clear(angular_server: ChatServer, new_page: OpenPage) -> None:
    page = open_app(new_page, angular_server)
    page.on("dialog", lambda dialog: dialog.accept("Renamed") if dialog.type == "prompt" else dialog.accept())
    tag = nonce()
    done(ask(page, f"About doors {tag}"))
    expect(page.locator(".conversation-open")).to_have_text([f"About doors {tag}"])
    page.get_by_role("button", name="New chat").click()
    expect(page.locator(".message")).to_have_count(0)
    done(ask(page, f"About windows {tag}"))
    expect(page.locator(".conversation-open")).to_have_text([f"About windows {tag}", f"About doors {tag}"])
    page.get_by_role("button", name=f"Open “About doors {tag}”").click()
    expect(page.locator(".message.user")).to_have_text([f"About doors {tag}"])
    page.get_by_role("button", name=f"Rename “About doors {tag}”").click()
    expect(page.locator(".conversation-open").first).to_have_text("Renamed")

    page.locator("#clear-btn").click()
    expect(page.locator(".message.user")).to_have_count(0)
    page.get_by_role("button", name="Undo the clear").click()
    expect(page.locator(".message.user")).to_have_text([f"About doors {tag}"])
    reply = ask(page, "and then")
    expect(reply).to_have_text("Echo: and then (history: 4 messages)")

    page.reload()  # the guest keeps the conversations and the open one
    expect(page.locator("#status")).to_have_text("Connected")
    expect(page.locator(".message.user")).to_have_text([f"About doors {tag}", "and then"])
    page.get_by_role("button", name="Delete “Renamed”").click()
    expect(page.locator(".conversation-open")).to_have_text([f"About windows {tag}"])
    expect(page.locator(".message.user")).to_have_text([f"About windows {tag}"])


def test_on_a_phone_the_conversation_list_is_a_panel(angular_server: ChatServer, new_page: OpenPage) -> None:
    page, _ = new_page(f"{angular_server.base}/angular/", viewport=PHONE)
    expect(page.locator("#status")).to_have_text("Connected")
    expect(page.locator("#sidebar")).to_be_hidden()
    chats = page.get_by_role("button", name="Chats")
    chats.click()
    expect(chats).to_have_attribute("aria-expanded", "true")
    expect(page.locator("#sidebar")).to_be_visible()
    page.get_by_role("button", name="New chat").click()
    expect(page.locator("#sidebar")).to_be_hidden()


def test_a_reply_shows_the_tokens_it_cost(angular_server: ChatServer, new_page: OpenPage) -> None:
    page = open_app(new_page, angular_server)
    done(ask(page, "[[tokens:7]] count"))
    expect(page.locator(".reply-usage")).to_have_text(re.compile(r"^\d+ tokens \(\d+ in, 7 out\)$"))


def test_screenshot_of_a_real_looking_conversation(chat_server: ChatServer, new_page: OpenPage, tmp_path: Path) -> None:
    """docs/screenshot-angular.png with UPDATE_SCREENSHOTS=1 (`make screenshots`), in the dark theme,
    with a file attached to a question and the model picker (the server offers two models)."""
    page, _ = new_page(f"{chat_server.base}/angular/", color_scheme="dark")
    expect(page.locator("#status")).to_have_text("Connected")
    done(ask(page, "Plan a weekend in Lisbon"))
    page.get_by_role("button", name="New chat").click()
    expect(page.locator(".message")).to_have_count(0)
    done(ask(page, "How do I read a JSON file in Python?"))
    settings = b'{\n  "theme": "dark",\n  "language": "pt-PT"\n}\n'
    page.locator("#attach-input").set_input_files(
        [{"name": "settings.json", "mimeType": "application/json", "buffer": settings}]
    )
    reply = ask(page, "And how do I write it back, nicely formatted?")
    expect(page.locator(".message.user .file-chip")).to_have_text([f"settings.json · {len(settings)} bytes"])
    done(reply)
    expect(reply).to_contain_text("ensure_ascii=False keeps characters")
    expect(page.locator("#model-select")).to_be_visible()
    expect(page.locator(".conversation-open")).to_have_count(2)
    save_screenshot(page, "screenshot-angular.png", tmp_path)


def test_regenerate_edit_and_continue(angular_server: ChatServer, new_page: OpenPage) -> None:
    page = open_app(new_page, angular_server)
    tag = nonce()
    done(ask(page, f"one {tag}"))
    page.get_by_role("button", name="Regenerate the reply").click()
    replies = page.locator(".message.assistant")
    expect(replies).to_have_count(1)
    done(replies.first)
    expect(replies.first).to_have_text(f"Echo: one {tag} (history: 2 messages)")
    done(ask(page, f"two {tag}"))

    page.get_by_role("button", name="Edit and resend").first.click()
    expect(page.locator("#prompt")).to_have_value(f"one {tag}")
    page.locator("#prompt").fill(f"uno {tag}")
    page.locator("#prompt").press("Enter")
    expect(page.locator(".message.user")).to_have_text([f"uno {tag}"])  # what followed is replaced
    done(replies.first)
    expect(replies.first).to_have_text(f"Echo: uno {tag} (history: 2 messages)")

    reply = ask(page, f"[[slow]] {tag}")
    expect(reply).to_contain_text("tok3")
    page.locator("#stop-btn").click()
    done(reply)
    partial = str(reply.text_content()).strip()
    page.get_by_role("button", name="Continue the reply").click()
    expect(replies).to_have_count(2)
    expect(replies.nth(1)).to_contain_text("Echo: Continue your previous reply", timeout=30_000)
    done(replies.nth(1))
    assert str(replies.nth(1).text_content()).startswith(partial)


# -- search, export and "delete all my data" (issue 23), as on the page -----------------------------


def test_search_finds_only_ones_own_conversations_and_opens_one(angular_server: ChatServer, new_page: OpenPage) -> None:
    tag = nonce()
    someone = open_app(new_page, angular_server)  # another guest, with the very words searched for
    done(ask(someone, f"About giraffes {tag}, someone else's"))
    page, _ = new_page(f"{angular_server.base}/angular/", color_scheme="dark")
    expect(page.locator("#status")).to_have_text("Connected")
    done(ask(page, f"About giraffes {tag}"))
    page.get_by_role("button", name="New chat").click()
    expect(page.locator(".message")).to_have_count(0)
    done(ask(page, f"About zebras {tag}"))

    results = search_for(page, f"GIRAFFES {tag.upper()}")
    expect(results).to_have_count(1)
    expect(results.locator(".search-result-title")).to_have_text(f"About giraffes {tag}")
    expect(results.locator("mark")).to_have_text(f"giraffes {tag}")
    expect(page.locator("#search-status")).to_have_text("1 conversation found.")
    expect(page.locator("#conversation-list")).to_be_hidden()
    violations = serious_accessibility_violations(page)
    assert not violations, f"dark theme: {violations}"
    results.first.click()
    expect(page.locator(".message.user")).to_have_text([f"About giraffes {tag}"])

    expect(search_for(page, f"nowhere {tag}")).to_have_count(0)
    expect(page.locator("#search-status")).to_have_text("No conversation matches.")
    search_for(page, "")
    expect(page.locator("#conversation-list")).to_be_visible()
    expect(page.locator(".conversation-open")).to_have_count(2)


def test_export_downloads_the_conversation_as_markdown_and_json(angular_server: ChatServer, new_page: OpenPage) -> None:
    page = open_app(new_page, angular_server)
    tag = nonce()
    reply = ask(page, f"Export me {tag}")
    done(reply)
    answer = str(reply.text_content()).strip()
    assert answer.startswith(f"Echo: Export me {tag}"), answer
    expect_exports(page, f"Export me {tag}", f"export-me-{tag}", f"Export me {tag}", answer)


def test_on_a_phone_a_guest_deletes_all_their_data_and_others_keep_theirs(
    angular_server: ChatServer, new_page: OpenPage
) -> None:
    tag = nonce()
    other = open_app(new_page, angular_server)
    done(ask(other, f"kept {tag}"))
    page, _ = new_page(f"{angular_server.base}/angular/", viewport=PHONE)
    expect(page.locator("#status")).to_have_text("Connected")
    done(ask(page, f"a guest's {tag}"))
    guest = page.evaluate("localStorage.getItem('chat-guest')")
    page.get_by_role("button", name="Chats").click()
    delete_all(page, accept=False)  # changed their mind: nothing happens
    page.reload()
    expect(page.locator("#status")).to_have_text("Connected")
    expect(page.locator(".message.user")).to_have_text([f"a guest's {tag}"])
    page.get_by_role("button", name="Chats").click()

    delete_all(page, accept=True)
    expect(page.locator(".message.notice")).to_have_text(DELETED)
    expect(page.locator(".message.user")).to_have_count(0)
    assert page.evaluate("localStorage.getItem('chat-guest')") not in (guest, None), "a new guest"
    expect(page.locator("#sidebar")).to_be_hidden()
    page.reload()
    expect(page.locator("#status")).to_have_text("Connected")
    expect(page.locator(".message.user")).to_have_count(0)
    other.reload()
    expect(other.locator("#status")).to_have_text("Connected")
    expect(other.locator(".message.user")).to_have_text([f"kept {tag}"])


@pytest.mark.parametrize(("viewport", "scheme"), [(DESKTOP, "light"), (PHONE, "dark")], ids=["desktop", "phone-dark"])
def test_a_conversation_picks_its_model_and_instructions(
    chat_server: ChatServer,
    fake_ai: FakeAI,
    new_page: OpenPage,
    viewport: tuple[int, int],
    scheme: Literal["light", "dark"],
) -> None:
    """As on the page (check_models_and_instructions), in the Angular client."""
    if not BUILD.is_file():
        pytest.fail(f"{BUILD} is missing: `make angular` builds the Angular client (make test does)")
    page, _ = new_page(f"{chat_server.base}/angular/", viewport=viewport, color_scheme=scheme)
    expect(page.locator("#status")).to_have_text("Connected")
    check_models_and_instructions(page, fake_ai, "#prompt")


def test_one_model_shows_no_picker_and_no_labels(angular_server: ChatServer, new_page: OpenPage) -> None:
    page = open_app(new_page, angular_server)
    expect(ask(page, f"single {nonce()}")).to_have_class("message assistant done", timeout=30_000)
    expect(page.locator("#model-select")).to_have_count(0)
    expect(page.locator(".model-label")).to_have_count(0)
    expect(page.locator("#instructions-btn")).to_be_visible()


# -- attachments (issue 23): the same checks as the page's (tests/support/page.py) ---------------
def open_chat(new_page: OpenPage, server: ChatServer, viewport: tuple[int, int], scheme: str) -> Page:
    if not BUILD.is_file():
        pytest.fail(f"{BUILD} is missing: `make angular` builds the Angular client (make test does)")
    page, _ = new_page(f"{server.base}/angular/", viewport=viewport, color_scheme=scheme)
    expect(page.locator("#status")).to_have_text("Connected")
    return page


@pytest.mark.parametrize(("viewport", "scheme"), [(DESKTOP, "light"), (PHONE, "dark")], ids=["desktop", "phone-dark"])
def test_files_attached_by_picker_paste_and_drop_reach_the_model_as_parts(
    chat_server: ChatServer, fake_ai: FakeAI, new_page: OpenPage, viewport: tuple[int, int], scheme: str
) -> None:
    """The main test server's default deployment reads images: an image by the picker, a code file
    pasted, text files dropped, one removed; the fake Azure OpenAI gets them as parts; the message
    shows them, again after a reload."""
    page = open_chat(new_page, chat_server, viewport, scheme)
    choose_files(page, "#prompt", scheme)
    expect_files_reach_the_model(page, fake_ai, "#prompt", scheme)


def test_chips_are_removed_by_keyboard(chat_server: ChatServer, new_page: OpenPage) -> None:
    expect_chips_removed_by_keyboard(open_chat(new_page, chat_server, DESKTOP, "light"), "#prompt")


def test_files_too_long_together_come_back_as_chips_to_send_fewer(chat_server: ChatServer, new_page: OpenPage) -> None:
    page = open_chat(new_page, chat_server, DESKTOP, "light")
    expect_files_too_long_together_come_back(page, "#prompt", "#ask-btn")


def test_a_reload_mid_reply_shows_the_question_with_its_image(chat_server: ChatServer, new_page: OpenPage) -> None:
    page = open_chat(new_page, chat_server, DESKTOP, "light")
    expect_the_image_after_a_reload_mid_reply(page, "#prompt")


@pytest.mark.parametrize(("viewport", "scheme"), [(DESKTOP, "light"), (PHONE, "dark")], ids=["desktop", "phone-dark"])
def test_a_refused_file_is_said_next_to_the_composer_and_the_text_is_kept(
    chat_server: ChatServer, new_page: OpenPage, viewport: tuple[int, int], scheme: str
) -> None:
    page = open_chat(new_page, chat_server, viewport, scheme)
    expect_refusals_keep_the_text(page, "#prompt", "#ask-btn", scheme)
