"""CORS for browser clients on other origins: they send credentials, so echo the origin.

Only listed origins are echoed (HubOptions refuses "*"). WebSocket upgrades are not
checked against the list: browsers apply no CORS to them, and no cookie ever
authenticates here (bearer tokens only, which another site cannot read), so a page on
another origin gains nothing by opening one. A deployment that adds cookie sign-in must
add that check.
"""

from __future__ import annotations

from collections.abc import Collection

from aiohttp import web

ALLOWED_HEADERS = "X-Requested-With, X-SignalR-User-Agent, X-SignalR-Connection-Token, Authorization, Content-Type"
ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"


def cors_headers(request: web.Request, origins: Collection[str]) -> dict[str, str]:
    origin = request.headers.get("Origin")
    if not origin or origin not in origins:
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }


def preflight(request: web.Request, origins: Collection[str]) -> web.Response:
    headers = cors_headers(request, origins)
    if headers:
        headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
        headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        headers["Access-Control-Max-Age"] = "600"
    return web.Response(status=204, headers=headers)
