"""`/metrics`: the OpenTelemetry metrics in the Prometheus text format, for a scraper.

Off by default (METRICS_ENABLED), on a path of its own beside the hubs, and behind a
bearer token when METRICS_TOKEN is set. prometheus-client writes the format; the
OpenTelemetry Prometheus reader (which the app sets up) feeds its registry.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from .errors import ConfigurationError

METRICS_PATH = "/metrics"


def add_metrics_route(app: web.Application, token: str | None) -> None:
    """`/metrics`, answered only to `Authorization: Bearer <token>` when a token is given."""
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
    except ImportError:
        raise ConfigurationError(
            "METRICS_ENABLED needs the OpenTelemetry extra: pip install 'signalr-chat[otel]'"
        ) from None
    expected = None if token is None else f"Bearer {token}".encode()

    async def scrape(request: web.Request) -> web.Response:
        if expected is not None:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return web.Response(status=401, headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get(METRICS_PATH, scrape)
