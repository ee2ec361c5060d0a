"""The connection layer in process: outbox, heartbeat, SSE framing, stateful-reconnect buffer, the
HTTP connection guard."""
