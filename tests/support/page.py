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


# -- attachments (issue 23): the same checks on both front ends ----------------------------------
#: A PNG as far as its magic bytes go: all the server and the fake Azure OpenAI check.
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(56))
CAT = {"name": "cat.png", "mimeType": "image/png", "buffer": PNG}

# A file handed to a front end as a paste into its input, or a drop onto its composer, as a browser makes them.
PASTE_OR_DROP = """([target, name, type, text]) => {
    const data = new DataTransfer();
    data.items.add(new File([text], name, { type }));
    const event = target === "#composer"
        ? new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true })
        : new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true });
    document.querySelector(target).dispatchEvent(event);
}"""


def paste_file(page: Page, composer: str, name: str, text: str, type_: str = "") -> None:
    page.evaluate(PASTE_OR_DROP, [composer, name, type_, text])


def drop_file(page: Page, name: str, text: str, type_: str = "") -> None:
    page.evaluate(PASTE_OR_DROP, ["#composer", name, type_, text])


def expect_above_the_input(page: Page, above: str, composer: str) -> None:
    """`above` is a row of the composer over its input, from the same left edge (a phone's composer
    is a column: it must not wrap into a second column beside the input)."""
    row, field = page.locator(above).bounding_box(), page.locator(composer).bounding_box()
    assert row is not None and field is not None
    assert row["y"] + row["height"] <= field["y"] + 1, (row, field)
    assert abs(row["x"] - field["x"]) <= 1, (row, field)


def choose_files(page: Page, composer: str, scheme: str) -> Locator:
    """An image by the picker, a code file pasted, a text file dropped, and a spare one removed:
    chips with names, sizes and the image's thumbnail; axe clean with them on screen."""
    expect(page.locator("#attach-hint")).to_have_text("Images or text files")
    page.locator("#attach-input").set_input_files([CAT])
    paste_file(page, composer, "hello.py", "print(1)\n")
    drop_file(page, "notes.md", "# Notes\n")
    drop_file(page, "spare.txt", "spare", "text/plain")
    chips = page.locator(".chosen-file")
    expect(chips).to_have_count(4)
    expect(chips.locator(".chosen-name")).to_have_text(["cat.png", "hello.py", "notes.md", "spare.txt"])
    expect(chips.locator(".chosen-size")).to_have_text([f"{len(PNG)} bytes", "9 bytes", "8 bytes", "5 bytes"])
    expect(chips.first.locator("img.chip-thumb")).to_have_count(1)
    expect_above_the_input(page, "#chosen-files", composer)
    page.get_by_role("button", name="Remove spare.txt").click()
    expect(chips).to_have_count(3)
    violations = serious_accessibility_violations(page)
    assert not violations, f"{scheme}, the chosen files: {violations}"
    return chips


def expect_chips_removed_by_keyboard(page: Page, composer: str) -> None:
    """Each chip's Remove is a button in the tab order; the focus moves to the chip that takes its
    place (the one before it when it was the last), then to the input when none is left."""
    for name in ("a.txt", "b.txt", "c.txt"):
        drop_file(page, name, name, "text/plain")
    expect(page.locator(".chosen-file")).to_have_count(3)
    page.get_by_role("button", name="Remove b.txt").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Remove c.txt")).to_be_focused()
    page.keyboard.press("Space")
    expect(page.get_by_role("button", name="Remove a.txt")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator(".chosen-file")).to_have_count(0)
    expect(page.locator(composer)).to_be_focused()


def expect_files_reach_the_model(page: Page, fake: FakeAI, composer: str, scheme: str) -> None:
    """The files chosen by `choose_files` sent with a message: the fake Azure OpenAI names the parts
    it received (the image as an `image_url` data URL); the message shows the thumbnail and the
    chips, again after a reload (the image from GetAttachment); axe clean."""
    tag = nonce()
    page.locator(composer).fill(f"What are these? {tag}")
    page.locator(composer).press("Enter")
    reply = page.locator(".message.assistant").first
    expect(reply).to_have_attribute("aria-busy", "false", timeout=30_000)
    expect(reply).to_contain_text(
        f"Received: text; image image/png {len(PNG)} bytes; file hello.py 8 chars; file notes.md 7 chars."
    )
    expect(page.locator(".chosen-file")).to_have_count(0)
    [record] = fake.requests_with(tag)
    image = record["body"]["messages"][-1]["content"][1]
    assert image["image_url"]["url"].startswith("data:image/png;base64,")

    def shown() -> None:
        user = page.locator(".message.user").first
        expect(user.locator("img.message-image")).to_have_attribute("alt", "cat.png")
        expect(user.locator(".file-chip")).to_have_text(["hello.py · 9 bytes", "notes.md · 8 bytes"])

    shown()
    page.reload()
    expect(page.locator("#status")).to_have_text("Connected")
    shown()
    src = str(page.locator(".message.user img.message-image").get_attribute("src"))
    assert src.startswith("data:image/png;base64,"), "the image from GetAttachment"
    violations = serious_accessibility_violations(page)
    assert not violations, f"{scheme}, an attachment in the log: {violations}"


def expect_files_too_long_together_come_back(page: Page, composer: str, send_button: str) -> None:
    """Each file fits the model's context window (16,384 tokens on the test server), the two
    together do not: the server refuses the message while the files still wait, and the front end
    gives them back as chips beside the refusal, the text kept; one removed, the other goes."""
    page.locator("#attach-input").set_input_files(
        [
            {"name": "one.txt", "mimeType": "text/plain", "buffer": b"a" * 30_000},
            {"name": "two.txt", "mimeType": "text/plain", "buffer": b"b" * 30_000},
        ]
    )
    typed = f"both files {nonce()}"
    page.locator(composer).fill(typed)
    page.locator(send_button).click()
    expect(page.locator("#attach-error")).to_have_text(
        "Message and its files are too long for the model's context window. Attach fewer or shorter files."
    )
    expect(page.locator(composer)).to_have_value(typed)
    expect(page.locator(".chosen-file")).to_have_count(2)
    page.get_by_role("button", name="Remove two.txt").click()
    page.locator(send_button).click()
    expect(page.locator(".message.assistant").last).to_contain_text(
        "Received: text; file one.txt 30000 chars.", timeout=30_000
    )


def expect_the_image_after_a_reload_mid_reply(page: Page, composer: str) -> None:
    """A reply still running after a reload shows its question's image (reply.userAttachments)."""
    page.locator("#attach-input").set_input_files([CAT])
    page.locator(composer).fill(f"[[slow]] {nonce()}")
    page.locator(composer).press("Enter")
    reply = page.locator(".message.assistant").first
    expect(reply).to_contain_text("tok2")
    page.reload()
    expect(page.locator("#status")).to_have_text("Connected")
    expect(page.locator(".message.user img.message-image")).to_have_attribute("alt", "cat.png")
    expect(reply).to_contain_text("tok5")
    page.locator("#stop-btn").click()
    expect(reply).to_have_attribute("aria-busy", "false")


def expect_refusals_keep_the_text(page: Page, composer: str, send_button: str, scheme: str) -> None:
    """Refused before any upload (too large, a type no model takes) and by the server (a "PNG" that
    is text): said next to the composer (role=alert), the typed text kept, nothing sent; then a
    model that takes no images: the picker says so and offers text files only, an image is refused
    before uploading, and the text alone goes."""
    prompt, error = page.locator(composer), page.locator("#attach-error")
    typed = f"keep this text {nonce()}"
    prompt.fill(typed)
    page.locator("#attach-input").set_input_files(
        [{"name": "big.txt", "mimeType": "text/plain", "buffer": b"a" * (5 * 1024 * 1024 + 1)}]
    )
    expect(error).to_have_text("The file is too large. The limit is 5 MB.")
    expect(error).to_have_attribute("role", "alert")
    expect_above_the_input(page, "#attach-error", composer)
    page.locator("#attach-input").set_input_files([{"name": "a.zip", "mimeType": "application/zip", "buffer": b"PK"}])
    expect(error).to_have_text(
        "This type of file cannot be attached: a.zip. Attach images (PNG, JPEG, GIF, WebP) or text and code files."
    )
    expect(page.locator(".chosen-file")).to_have_count(0)
    page.locator("#attach-input").set_input_files(
        [{"name": "fake.png", "mimeType": "image/png", "buffer": b"not an image"}]
    )
    expect(page.locator(".chosen-file")).to_have_count(1)
    expect(error).to_be_hidden()
    page.locator(send_button).click()
    expect(error).to_have_text(
        "This type of file cannot be attached: fake.png. Attach images (PNG, JPEG, GIF, WebP) or text and code "
        "files. Its content is not a PNG image."
    )
    expect(prompt).to_have_value(typed)
    expect(page.locator(".chosen-file")).to_have_count(0)
    expect(page.locator(".message.user")).to_have_count(0)
    violations = serious_accessibility_violations(page)
    assert not violations, f"{scheme}, a refusal shown: {violations}"

    page.locator("#model-select").select_option(DEPLOYMENT_MINI)
    expect(page.locator("#attach-hint")).to_have_text("Text files only: this model takes no images")
    accept = str(page.locator("#attach-input").get_attribute("accept"))
    assert accept.startswith(".txt,.md,") and accept.endswith(",text/*,application/json"), accept
    page.locator("#attach-input").set_input_files([CAT])
    expect(error).to_have_text(
        f"The model {DEPLOYMENT_MINI} cannot read images. Attach text files only, or choose a model that reads images."
    )
    expect(page.locator(".chosen-file")).to_have_count(0)
    expect(prompt).to_have_value(typed)
    prompt.press("Enter")  # the text alone goes
    expect(page.locator(".message.assistant").first).to_contain_text(f"Echo: {typed}", timeout=30_000)
    expect(error).to_be_hidden()
