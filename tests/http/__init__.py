"""The HTTP host and its observability: raw HTTP/WebSocket conformance, log forging, JSON logs,
/metrics."""
