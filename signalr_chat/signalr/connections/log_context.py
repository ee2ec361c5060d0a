"""Which connection, and whose, the code running now serves: for structured log lines.

Bound once per transport request (the WebSocket's handler runs the whole connection; each
long-polling or SSE POST is a request of its own), and inherited by every task started
from there, the hub method invocations among them. Nothing is set per message.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .connection import Connection

connection_id: ContextVar[str | None] = ContextVar("signalr_connection_id", default=None)
#: The user's identifier (a JWT's `sub`), never a credential.
user_id: ContextVar[str | None] = ContextVar("signalr_user_id", default=None)


def bind(connection: Connection) -> None:
    connection_id.set(connection.id)
    user_id.set(connection.user.id if connection.user is not None else None)
