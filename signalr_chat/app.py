"""The application: the chat hub at /chatHub and /chat, and the page from wwwroot/."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from .ai import create_model
from .ai.telemetry import GenAITelemetry
from .azure_signalr import SERVICE_HUB_NAMES, create_azure_signalr
from .azure_signalr import add_readiness_check as add_service_readiness_check
from .backplane import BackplaneTelemetry, add_readiness_check, create_backplane
from .chat import ChatHub, ChatService
from .chat.conversations import ConversationService
from .chat.history import HistoryStore, InMemoryHistoryStore
from .chat.scale_out import redis_history_store, shared_guest_sessions, shared_rate_limiter, shared_replies
from .chat.sqlite_history import SqliteHistoryStore
from .drain import GracefulDrain
from .health import Health
from .jwt_auth import jwt_validator
from .metrics_endpoint import add_metrics_route
from .server import DRAIN
from .settings import Settings
from .signalr import HubLifetimeManager, HubOptions, InMemoryHubLifetimeManager, map_hub
from .signalr.connections.telemetry import ConnectionTelemetry, sdk_providers
from .signalr.hubs.telemetry import HubTelemetry


def _wwwroot() -> Path:
    """Inside the package when installed from a wheel (see setup.py), else the checkout's top."""
    packaged = Path(__file__).resolve().parent / "wwwroot"
    return packaged if packaged.is_dir() else packaged.parent.parent / "wwwroot"


WWWROOT = _wwwroot()
#: Browser libraries, installed from npm into wwwroot/node_modules by `make`, served at /lib/.
LIBRARIES = {
    "/lib/signalr": WWWROOT / "node_modules/@microsoft/signalr/dist/browser",
    "/lib/msgpack": WWWROOT / "node_modules/@microsoft/signalr-protocol-msgpack/dist/browser",
    "/lib/marked": WWWROOT / "node_modules/marked/lib",
    "/lib/dompurify": WWWROOT / "node_modules/dompurify/dist",
    "/lib/highlight": WWWROOT / "node_modules/@highlightjs/cdn-assets",
}
log = logging.getLogger(__name__)
CHAT_SERVICE = web.AppKey("chat_service", ChatService)
HEALTH = web.AppKey("health", Health)

#: The two paths the seed front ends use: the wwwroot page and the Angular app.
CHAT_PATHS = ("/chatHub", "/chat")


#: The Angular client's production build (`make angular`, from tests/angular/), served at /angular/.
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


def create_app(
    settings: Settings | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> web.Application:
    """The chat app; telemetry goes to the given OpenTelemetry providers, else the global ones,
    and nowhere (at no cost) when no SDK backs them."""
    settings = settings or Settings()
    tracer_provider, meter_provider = sdk_providers(tracer_provider, meter_provider)
    configured = tracer_provider is not None or meter_provider is not None
    signalr_telemetry = (
        (HubTelemetry.create(tracer_provider, meter_provider), ConnectionTelemetry.create(meter_provider))
        if configured
        else (None, None)
    )
    genai_telemetry = (
        GenAITelemetry(tracer_provider, meter_provider, capture_content=settings.genai_capture_message_content)
        if configured
        else None
    )
    # with AZURE_SIGNALR_CONNECTION_STRING, the clients connect to Azure SignalR Service, which
    # carries their traffic to every instance; else, with REDIS_URL, the hub's messages reach the
    # clients of every instance through Redis. First, so that a missing extra is reported before
    # anything is opened.
    service = create_azure_signalr(settings)
    backplane = create_backplane(settings) if service is None else None
    keep = settings.max_history_messages
    user_store: HistoryStore
    # in Redis, guests' conversations too (they expire), so every instance serves everyone
    redis_history = settings.history_store == "redis"
    # without sign-in every conversation is anonymous: no file to create
    if settings.history_store == "sqlite" and settings.auth_jwt_secret is not None:
        sqlite = SqliteHistoryStore(settings.history_db, keep, log_queries=settings.log_user_content)
        user_store = sqlite
    elif redis_history and settings.auth_jwt_secret is not None:
        sqlite = None
        user_store = redis_history_store(settings)
    else:
        sqlite = None
        user_store = InMemoryHistoryStore(keep)
    model = create_model(settings, genai_telemetry)
    shared_limiter = shared_rate_limiter(settings) if redis_history else None
    anonymous_store: HistoryStore = (
        redis_history_store(settings, ttl=settings.guest_ttl_seconds) if redis_history else InMemoryHistoryStore(keep)
    )
    chat = ChatService(
        model,
        settings,
        anonymous_store=anonymous_store,
        user_store=user_store,
        shared_limiter=shared_limiter,
    )
    conversations = ConversationService(
        chat,
        settings,
        shared_replies(settings) if redis_history else None,
        shared_guest_sessions(settings) if redis_history else None,
    )

    app = web.Application()
    app[CHAT_SERVICE] = chat
    health = app[HEALTH] = Health()
    model_started = False
    health.add_check("model", lambda: None if model_started else f"{model.name} is starting")

    async def start(app: web.Application) -> None:
        nonlocal model_started
        try:
            if sqlite is not None:
                await sqlite.open()
            await conversations.start_sharing()
            await model.start()
            model_started = True
        except BaseException:
            # aiohttp runs no cleanup after a failed startup; an open store would keep the process alive
            await stop(app)
            raise

    async def stop(app: web.Application) -> None:
        await conversations.close()
        await model.aclose()
        await user_store.close()
        await chat.anonymous_store.close()
        if shared_limiter is not None:
            await shared_limiter.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)

    options = HubOptions(
        # StopGeneration and ClearHistory must run while the caller's SendMessage streams
        max_parallel_invocations=8,
        # a message at the length limit must reach the chat's friendly check, whatever its
        # characters: up to 6 bytes each once JSON-escaped
        max_message_size=max(32 * 1024, 6 * settings.max_message_length + 1024),
        websocket_compression=settings.websocket_compression,
        # a token that expires ends its connection unless the client refreshes it first
        close_on_authentication_expiration=settings.auth_token_refresh,
        enable_authentication_refresh=settings.auth_token_refresh,
    )
    secret = settings.auth_jwt_secret
    validator = (
        jwt_validator(secret.get_secret_value(), audience=settings.auth_jwt_audience, issuer=settings.auth_jwt_issuer)
        if secret is not None
        else None
    )
    lifetime: HubLifetimeManager = backplane if backplane is not None else InMemoryHubLifetimeManager()
    if backplane is not None:
        add_readiness_check(health, backplane, settings.redis_location() or "")
        if meter_provider is not None:
            BackplaneTelemetry.create(meter_provider).watch(backplane)
    if service is not None:
        add_service_readiness_check(health, service)
        endpoints = [
            service.map_hub(
                app,
                path,
                ChatHub,
                options=options,
                hub_name=SERVICE_HUB_NAMES[path],
                validator=validator,
                factory=lambda: ChatHub(chat, conversations),
                telemetry=signalr_telemetry,
            )
            for path in CHAT_PATHS
        ]
    else:
        endpoints = [
            map_hub(
                app,
                path,
                ChatHub,
                options=options,
                lifetime=lifetime,
                hub_name=settings.hub_name,
                validator=validator,
                factory=lambda: ChatHub(chat, conversations),
                telemetry=signalr_telemetry,
            )
            for path in CHAT_PATHS
        ]
    drain: Callable[[], Awaitable[None]] = GracefulDrain(
        health, endpoints, chat, settings.drain_timeout_seconds, handover=service.shutdown if service else None
    )
    app[DRAIN] = drain
    health.add_routes(app)
    if settings.metrics_enabled:
        add_metrics_route(app, settings.metrics_token)
    _serve_page(app)
    return app


def _serve_page(app: web.Application) -> None:
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
