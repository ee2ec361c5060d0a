"""Helpers for the chat page (wwwroot/) and the Angular client in headless Chromium."""

from __future__ import annotations

import uuid
from typing import Any

from playwright.sync_api import Page, expect

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
