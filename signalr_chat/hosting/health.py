"""`/healthz` and `/readyz`, the two questions a load balancer or Kubernetes asks.

Liveness: the process answers HTTP (200). Readiness: it should get new connections (200),
or not (503): while it starts, while it drains on SIGTERM, or while a named check (the
model provider, later a backplane) reports a problem. Checks are plain callables, so a
component adds its own without this module knowing it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

log = logging.getLogger(__name__)

#: None when the component is ready, otherwise why not (shown in the /readyz body).
ReadinessCheck = Callable[[], str | None]

HEALTHZ = "/healthz"
READYZ = "/readyz"
#: Health answers must never be cached by a proxy between the prober and us.
_NO_STORE = {"Cache-Control": "no-store"}


class Health:
    """What /healthz and /readyz answer: alive while the process serves HTTP, ready unless it drains or
    a component's check names a problem, so a load balancer sends new clients only where they are served."""

    def __init__(self) -> None:
        self.draining = False
        self._checks: dict[str, ReadinessCheck] = {}

    def add_check(self, name: str, check: ReadinessCheck) -> None:
        """A component's say in readiness (a backplane reports "disconnected", say)."""
        self._checks[name] = check

    def problems(self) -> dict[str, str]:
        """What keeps the server from being ready, by check name; empty when ready."""
        found = {"draining": "the server is shutting down"} if self.draining else {}
        for name, check in self._checks.items():
            try:
                problem = check()
            except Exception as exc:  # a failing check means not ready, never a failing probe
                log.warning("readiness check %s failed", name, exc_info=True)
                problem = f"check failed: {exc}"
            if problem is not None:
                found[name] = problem
        return found

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok", headers=_NO_STORE)

    async def readyz(self, request: web.Request) -> web.Response:
        problems = self.problems()
        if problems:
            body = {"status": "not ready", "problems": problems}
            return web.json_response(body, status=503, headers=_NO_STORE)
        return web.json_response({"status": "ready"}, headers=_NO_STORE)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(HEALTHZ, self.healthz)
        app.router.add_get(READYZ, self.readyz)
