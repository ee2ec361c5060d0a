"""Helpers for the chat page (wwwroot/) and the Angular client in headless Chromium."""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path
from typing import Any

from playwright.sync_api import Dialog, Locator, Page, expect

from .browser import serious_accessibility_violations
from .chat_fixtures import DEPLOYMENT, DEPLOYMENT_MINI, ChatServer, FakeAI

BUSY = "The AI service is busy. Please wait a moment and try again."
# Console errors Chromium logs while the server is down; the restart tests expect them.
SERVER_DOWN = (
    "ERR_CONNECTION_REFUSED",
    # a stopping server drains: a reconnect that arrives then gets 503 "Server is shutting down"
    "status of 503 (Service Unavailable)",
    "WebSocket connection to",
    "Failed to start the connection",
    "Failed to complete negotiation",
)

MARKDOWN = """Here is code:

```python
print("hi")
```

<script>window.__xss = 1</script>
<img src="x" onerror="window.__xss = 2">

[click me](javascript:window.__xss=3) and **bold**"""


def nonce() -> str:
    return uuid.uuid4().hex[:8]


def send(page: Page, text: str) -> None:
    page.locator("#message-input").fill(text)
    page.locator("#message-input").press("Enter")


def replies(page: Page) -> Any:
    return page.locator(".message.assistant")


def wait_reply(page: Page, count: int) -> str:
    """Waits for the count-th reply to complete; returns its text (without the HTML's last newline)."""
    reply = replies(page).nth(count - 1)
    expect(reply).to_have_attribute("aria-busy", "false", timeout=30_000)
    return str(reply.locator(".content").text_content()).strip()


def chat(page: Page, text: str) -> str:
    count = replies(page).count()
    send(page, text)
    return wait_reply(page, count + 1)


def full(count: int) -> str:
    return " ".join(f"t{i}" for i in range(count))


# -- a reply the server never finished (issue 22): both front ends show it the same way ------

INTERRUPTED = "The reply to this message was interrupted."
# Console errors Chromium logs when the server dies under the page's connections.
KILLED = ("WebSocket closed with status code", "ERR_CONNECTION_RESET")


def crash_and_start_again(server: ChatServer) -> None:
    """SIGKILL, like a crash or the OOM killer: nothing runs on the way out. Then the server
    starts again on the same port, with the same history."""
    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)
    server.process = None
    server.start()


def expect_interrupted_mark(page: Page, replies: Locator, first: str, question: str, scheme: str) -> Locator:
    """After `crash_and_start_again` mid-reply to `question`: the open front end reconnects and
    marks the question; one opened afresh does too, under the question, described to assistive
    technology, with Continue and without Regenerate, and no serious axe violation. Continue is
    clicked: the mark goes and the reply streams as any other. Returns the new reply."""
    note = page.locator(".interrupted-note")
    resume = page.get_by_role("button", name="Continue the reply")
    expect(page.locator(".message.notice")).to_have_text("Reconnected.", timeout=30_000)
    expect(note).to_contain_text(INTERRUPTED)
    expect(replies).to_have_count(1)
    page.reload()  # opened afresh (GetConversation's `interrupted`)
    expect(page.locator("#status")).to_have_text("Connected")
    expect(page.locator(".message.user")).to_have_text([first, question])
    expect(replies).to_have_count(1)
    expect(note).to_contain_text(INTERRUPTED)
    expect(note).to_be_in_viewport()
    question_box, note_box = page.locator(".message.user").nth(1).bounding_box(), note.bounding_box()
    assert question_box and note_box and note_box["y"] >= question_box["y"] + question_box["height"], "under it"
    expect(page.locator(".message.user").nth(1)).to_have_accessible_description(INTERRUPTED)
    expect(resume).to_have_accessible_description(INTERRUPTED)
    expect(page.get_by_role("button", name="Regenerate the reply")).to_have_count(0)
    violations = serious_accessibility_violations(page)
    assert not violations, f"{scheme} theme: {violations}"

    resume.click()
    expect(note).to_have_count(0)
    reply = replies.nth(1)
    expect(reply).to_have_attribute("aria-busy", "true")  # streams as any other reply
    return reply


# -- search, export and "delete all my data" (issue 23): the same controls on both front ends ---

DELETED = "All your conversations were deleted."


def search_for(page: Page, query: str) -> Locator:
    """Types `query` in the search box (the search runs when typing pauses); the results."""
    page.locator("#search-input").fill(query)
    return page.locator(".search-result")


def downloaded(page: Page, button: str) -> tuple[str, str]:
    """Clicks the export button named `button`; the downloaded file's name and text."""
    with page.expect_download() as download:
        page.get_by_role("button", name=button, exact=True).click()
    path = download.value.path()
    return download.value.suggested_filename, Path(path).read_text(encoding="utf-8")


def expect_exports(page: Page, title: str, stem: str, question: str, answer: str) -> None:
    """Both downloads of the open conversation, as the server renders them (docs/chat.md),
    named `stem`.md and `stem`.json."""
    name, text = downloaded(page, "Markdown")
    assert name == f"{stem}.md", name
    assert text.startswith(f"# {title}\n"), text
    assert f"## You\n\n{question}\n\n## Assistant\n\n{answer}\n" in text, text
    name, text = downloaded(page, "JSON")
    assert name == f"{stem}.json", name
    document = json.loads(text)
    assert document["title"] == title
    assert document["messages"] == [
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer, "model": DEPLOYMENT},  # the model that wrote it
    ]


CONFIRM_DELETE_ALL = "Delete all your conversations and everything the server keeps of them? This cannot be undone."


def delete_all(page: Page, *, accept: bool) -> None:
    """Clicks "Delete all my data" and answers its confirmation, which must be asked (the
    click returns once the dialog its handler opened is answered)."""
    asked: list[str] = []

    def answer(dialog: Dialog) -> None:
        asked.append(dialog.message)
        if accept:
            dialog.accept()
        else:
            dialog.dismiss()

    page.once("dialog", answer)
    page.get_by_role("button", name="Delete all my data").click()
    assert asked == [CONFIRM_DELETE_ALL], asked


# -- honest ends (issue 23): both front ends show them the same way --------------------------

CUT_SHORT = "Cut short"
POLICY = "The content was filtered by the AI service's content policy. Please rephrase your message."
#: What [[length]] streams before the provider says `finish_reason: "length"`.
LENGTH_REPLY = "t0 t1 t2"


def expect_cut_short_and_continue(page: Page, replies: Locator, composer: str, scheme: str) -> None:
    """A reply the provider cut at its token limit says "Cut short" and offers Continue (again
    after a reload, from the stored mark), with no serious axe violation; Continue extends it
    and, once the continuation finishes, the mark and the offer go (for good: after a reload too)."""
    tag = nonce()
    page.locator(composer).fill(f"[[length]] {tag}")
    page.locator(composer).press("Enter")
    reply = replies.last
    expect(reply).to_have_attribute("aria-busy", "false", timeout=30_000)
    expect(reply).to_contain_text(LENGTH_REPLY)
    state = page.get_by_text(CUT_SHORT, exact=True)
    resume = page.get_by_role("button", name="Continue the reply")
    for opened in ("live", "reloaded"):
        expect(state).to_have_count(1)
        expect(state).to_be_visible()
        expect(resume).to_be_visible()
        expect(page.get_by_role("button", name="Regenerate the reply")).to_be_visible()
        violations = serious_accessibility_violations(page)
        assert not violations, f"{scheme} theme, {opened}: {violations}"
        if opened == "live":
            page.reload()
            expect(page.locator("#status")).to_have_text("Connected")
    count = replies.count()
    resume.click()
    expect(replies).to_have_count(count)  # the continuation extends the reply
    expect(replies.last).to_contain_text("Echo: Continue your previous reply", timeout=30_000)
    expect(replies.last).to_have_attribute("aria-busy", "false")
    assert str(replies.last.text_content()).strip().startswith(LENGTH_REPLY)
    expect(state).to_have_count(0)
    expect(resume).to_have_count(0)
    page.reload()
    expect(page.locator("#status")).to_have_text("Connected")
    expect(replies.last).to_contain_text("Echo: Continue your previous reply")
    expect(state).to_have_count(0)


def expect_withdrawn(page: Page, replies: Locator, composer: str) -> None:
    """A reply Azure's asynchronous filter flags late: its text shows, then goes from the screen,
    the policy text says why, the question is marked not sent and given back to the composer;
    after a reload nothing of the reply is there (it was never stored)."""
    count = replies.count()
    question = f"[[async-filter]] {nonce()}"
    page.locator(composer).fill(question)
    page.locator(composer).press("Enter")
    expect(replies.nth(count)).to_contain_text("t5", timeout=30_000)  # streamed before the verdict
    expect(replies).to_have_count(count, timeout=30_000)  # then taken back
    expect(page.get_by_text("t5", exact=False)).to_have_count(0)
    expect(page.locator(".message.error")).to_have_text(POLICY)
    expect(page.locator(".message.user").last).to_contain_text("Not sent")
    expect(page.locator(composer)).to_have_value(question)
    page.reload()
    expect(page.locator("#status")).to_have_text("Connected")
    expect(replies).to_have_count(count)
    expect(page.get_by_text("t5", exact=False)).to_have_count(0)
    expect(page.get_by_text(question)).to_have_count(0)  # the question was taken back too


def check_models_and_instructions(page: Page, fake: FakeAI, composer: str) -> None:
    """Issue 23 on either front end, against a server offering DEPLOYMENT and DEPLOYMENT_MINI:
    pick a model and set instructions for the open conversation; the fake Azure OpenAI gets the
    chosen deployment in the path and the instructions as a system message; the reply is labelled;
    instructions over the limit are refused with the server's text and kept in the box; a reload
    shows the same choices and labels; switching back labels the next reply only."""
    tag = nonce()
    picker = page.locator("#model-select")
    expect(picker.locator("option")).to_have_text([DEPLOYMENT, DEPLOYMENT_MINI])
    expect(picker).to_have_value(DEPLOYMENT)
    expect(page.locator("#model")).to_have_text(f"azure · {DEPLOYMENT}")
    picker.select_option(DEPLOYMENT_MINI)
    expect(page.locator("#model")).to_have_text(f"azure · {DEPLOYMENT_MINI}")  # the one that answers here
    button = page.locator("#instructions-btn")
    expect(button).to_have_attribute("aria-expanded", "false")
    button.click()
    expect(button).to_have_attribute("aria-expanded", "true")
    box = page.locator("#instructions-input")
    rules = f"Answer like a pirate {tag}."
    box.fill(rules)
    page.locator("#instructions-save").click()
    expect(page.locator("#instructions-status")).to_have_text("Saved.")
    expect(button).to_have_text("Instructions (on)")

    page.locator(composer).fill(f"ahoy {tag}")
    page.locator(composer).press("Enter")
    replies = page.locator(".message.assistant")
    expect(replies.first).to_have_attribute("aria-busy", "false", timeout=30_000)
    expect(replies.first).to_contain_text(f"Echo: ahoy {tag} (history: 3 messages)")
    expect(page.locator(".model-label")).to_have_text([DEPLOYMENT_MINI])
    [record] = fake.requests_with(f"ahoy {tag}")
    assert record["path"] == f"/openai/deployments/{DEPLOYMENT_MINI}/chat/completions"
    assert record["body"]["messages"][1] == {"role": "system", "content": rules}

    too_long = "x" * 4001
    box.fill(too_long)
    expect(page.locator("#instructions-count")).to_have_text("4,001 / 4,000")
    expect(box).to_have_attribute("aria-invalid", "true")
    page.locator("#instructions-save").click()
    expect(page.locator("#instructions-status")).to_have_text(
        "Instructions are too long. The limit is 4,000 characters."
    )
    expect(box).to_have_value(too_long)  # kept, to shorten
    violations = serious_accessibility_violations(page)
    assert not violations, f"with the picker, the instructions and a label: {violations}"

    page.reload()
    expect(page.locator("#status")).to_have_text("Connected")
    expect(picker).to_have_value(DEPLOYMENT_MINI)
    expect(page.locator(".model-label")).to_have_text([DEPLOYMENT_MINI])
    expect(button).to_have_text("Instructions (on)")
    button.click()
    expect(box).to_have_value(rules)

    picker.select_option(DEPLOYMENT)
    page.locator(composer).fill(f"plain {tag}")
    page.locator(composer).press("Enter")
    expect(replies.nth(1)).to_have_attribute("aria-busy", "false", timeout=30_000)
    expect(page.locator(".model-label")).to_have_text([DEPLOYMENT_MINI, DEPLOYMENT])
    [record] = fake.requests_with(f"plain {tag}")
    assert record["path"] == f"/openai/deployments/{DEPLOYMENT}/chat/completions"
