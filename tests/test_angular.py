"""The Angular client (tests/angular, built by `make angular` into wwwroot/angular/) in headless
Chromium, talking to /chat with AskAi against a chat server and the fake Azure OpenAI."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from .browser import OpenPage, save_screenshot
from .chat_fixtures import ChatServer, FakeAI, azure_settings, serve_chat
from .conftest import ROOT

BUILD = ROOT / "wwwroot" / "angular" / "index.html"
BUSY = "The AI service is busy. Please wait a moment and try again."

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


def test_ask_ai_streams_and_completes(
    angular_server: ChatServer, fake_ai: FakeAI, new_page: OpenPage, tmp_path: Path
) -> None:
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
    save_screenshot(page, "screenshot-angular.png", tmp_path)


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
