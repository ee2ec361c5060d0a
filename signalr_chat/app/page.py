"""The chat's page from wwwroot/ at `/`, its browser libraries at `/lib/`, and the Angular
client's build at `/angular/`."""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

log = logging.getLogger(__name__)


def _wwwroot() -> Path:
    """Inside the package when installed from a wheel (see setup.py), else the checkout's top."""
    package = Path(__file__).resolve().parent.parent
    packaged = package / "wwwroot"
    return packaged if packaged.is_dir() else package.parent / "wwwroot"


WWWROOT = _wwwroot()
#: Browser libraries, installed from npm into wwwroot/node_modules by `make`, served at /lib/.
LIBRARIES = {
    "/lib/signalr": WWWROOT / "node_modules/@microsoft/signalr/dist/browser",
    "/lib/msgpack": WWWROOT / "node_modules/@microsoft/signalr-protocol-msgpack/dist/browser",
    "/lib/marked": WWWROOT / "node_modules/marked/lib",
    "/lib/dompurify": WWWROOT / "node_modules/dompurify/dist",
    "/lib/highlight": WWWROOT / "node_modules/@highlightjs/cdn-assets",
}
#: The Angular client's production build (`make angular`, from angular/), served at /angular/.
ANGULAR = WWWROOT / "angular"


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WWWROOT / "index.html")


async def _angular_root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect("/angular/")


async def _angular(request: web.Request) -> web.StreamResponse:
    """The Angular bundle's files, and its index.html for every other path (client-side routes)."""
    if not (ANGULAR / "index.html").is_file():
        raise web.HTTPNotFound(text="The Angular client is not built: run `make angular`.")
    tail = request.match_info["tail"]
    path = (ANGULAR / tail).resolve()
    if tail and path.is_file() and path.is_relative_to(ANGULAR.resolve()):
        return web.FileResponse(path)
    return web.FileResponse(ANGULAR / "index.html", headers={"Cache-Control": "no-cache"})


def serve_page(app: web.Application) -> None:
    """Only what the page needs: node_modules and package files stay unreachable."""
    app.router.add_get("/", _index)
    app.router.add_get("/index.html", _index)
    for name in ("css", "js"):
        app.router.add_static(f"/{name}", WWWROOT / name)
    app.router.add_get("/angular", _angular_root)
    app.router.add_get("/angular/{tail:.*}", _angular)
    for prefix, folder in LIBRARIES.items():
        if folder.is_dir():
            app.router.add_static(prefix, folder)
        else:
            log.warning("%s is missing: run `make run` (or npm install in wwwroot/) for the page to work", folder)
