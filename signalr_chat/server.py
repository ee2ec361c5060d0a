"""`signalr_chat.server.run(app, host, port)`, as the README's small hub runs: the server
lives in `signalr_chat.hosting` now, and this path stays for the README's readers."""

from __future__ import annotations

from .hosting.server import run

__all__ = ["run"]
