"""The chat app, composed: the settings choose the backends, the model and the scale-out, and
`create_app` wires them to the chat hub at /chatHub and /chat, the health and drain, and the
page (page.py)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from aiohttp import web
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from ..ai import create_model
from ..ai.telemetry import GenAITelemetry
from ..chat import ChatHub, ChatService
from ..chat.addresses import AddressLimits
from ..chat.attachments import AttachmentPolicy
from ..chat.conversations import ConversationService
from ..chat.guests import Guests, GuestSessions
from ..chat.history import HistoryStore, InMemoryHistoryStore
from ..chat.rate_limit import InMemoryRateLimits, RateLimiter
from ..chat.replies import LocalReplies
from ..chat.scale_out import HISTORY_NEEDS_REDIS, open_redis, redis_address_limits, redis_backends
from ..chat.service import Backends, Limits
from ..chat.sqlite_history import SqliteHistoryStore
from ..hosting.client_address import client_address, forwarded_middleware
from ..hosting.health import Health
from ..hosting.jwt_auth import jwt_validator
from ..hosting.metrics_endpoint import add_metrics_route
from ..hosting.server import DRAIN
from ..signalr import HubLifetimeManager, HubOptions, InMemoryHubLifetimeManager, map_hub
from ..signalr.connections.telemetry import ConnectionTelemetry, sdk_providers
from ..signalr.hubs.telemetry import HubTelemetry
from .azure_signalr import SERVICE_HUB_NAMES, create_azure_signalr
from .azure_signalr import add_readiness_check as add_service_readiness_check
from .backplane import BACKPLANE_NEEDS_REDIS, BackplaneTelemetry, add_readiness_check, create_backplane
from .drain import GracefulDrain
from .page import serve_page
from .settings import Settings

if TYPE_CHECKING:
    from redis.asyncio import Redis


log = logging.getLogger(__name__)
CHAT_SERVICE = web.AppKey("chat_service", ConversationService)
HEALTH = web.AppKey("health", Health)

#: The two paths the seed front ends use: the wwwroot page and the Angular app.
CHAT_PATHS = ("/chatHub", "/chat")


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
        (
            HubTelemetry.create(tracer_provider, meter_provider, trace_invocations=settings.trace_hub_invocations),
            ConnectionTelemetry.create(meter_provider),
        )
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
    trusted = settings.trusted()
    # behind Azure SignalR Service the service is the proxy: the client is the rightmost hop of the
    # X-Forwarded-For it passes that is none of TRUSTED_PROXIES (proxies in front of the service)
    service = create_azure_signalr(settings, lambda hops: client_address(None, hops, trusted, via_proxy=True))
    wants_backplane = service is None and settings.redis_url is not None
    # one Redis client (one pool) for the process: the backplane's and the chat's
    redis = (
        open_redis(settings, BACKPLANE_NEEDS_REDIS if wants_backplane else HISTORY_NEEDS_REDIS)
        if wants_backplane or settings.history_store == "redis"
        else None
    )
    backplane = create_backplane(settings, redis) if service is None else None
    model = create_model(settings, genai_telemetry)
    chat = ChatService(model, Limits.from_settings(settings), settings.system_prompt)
    conversations, sqlite, backends = _conversations(settings, chat, redis)

    # behind TRUSTED_PROXIES, request.remote (and so the hub's caller address) is the client's
    app = web.Application(middlewares=[forwarded_middleware(trusted)] if trusted else [])
    app[CHAT_SERVICE] = conversations
    health = app[HEALTH] = Health()
    model_started = False
    health.add_check("model", lambda: None if model_started else f"{model.name} is starting")
    health.add_check("history", conversations.history_problem)

    async def start_model() -> None:
        nonlocal model_started
        await model.start()
        model_started = True

    # One cleanup context per resource, in the order they open: aiohttp closes them in reverse
    # order, and after a failed startup it closes exactly the ones already opened. The Redis
    # client opens first, so it closes last, after every user of it: the backends, and the
    # backplane, whose context map_hub adds below (entered last, exited first).
    if redis is not None:
        app.cleanup_ctx.append(_resource(stop=redis.aclose))
    for backend in backends:  # each once, though the two kinds of owner may share one
        opens = sqlite.open if sqlite is not None and backend is sqlite else None
        app.cleanup_ctx.append(_resource(start=opens, stop=backend.close))
    app.cleanup_ctx.append(_resource(start=start_model, stop=model.aclose))
    # the replies: they run on the model and store into the backends, so they stop before both
    app.cleanup_ctx.append(_resource(start=conversations.start_sharing, stop=conversations.close))

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
                factory=lambda: ChatHub(conversations),
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
                factory=lambda: ChatHub(conversations),
                telemetry=signalr_telemetry,
            )
            for path in CHAT_PATHS
        ]
    drain: Callable[[], Awaitable[None]] = GracefulDrain(
        health, endpoints, conversations, settings.drain_timeout_seconds, handover=service.shutdown if service else None
    )
    app[DRAIN] = drain
    health.add_routes(app)
    if settings.metrics_enabled:
        token = settings.metrics_token
        add_metrics_route(app, token.get_secret_value() if token is not None else None)
    serve_page(app)
    return app


_Step = Callable[[], Awaitable[None]]


def _resource(*, stop: _Step, start: _Step | None = None) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context: `start` at startup, `stop` at cleanup; `stop` also when `start` fails
    half way, as the resource may hold what it opened so far (a connection, a thread)."""

    async def context(_app: web.Application) -> AsyncIterator[None]:
        try:
            if start is not None:
                await start()
            yield
        finally:
            await stop()

    return context


class _Closes(Protocol):
    async def close(self) -> None: ...


def _conversations(
    settings: Settings, chat: ChatService, redis: Redis | None
) -> tuple[ConversationService, SqliteHistoryStore | None, list[_Closes]]:
    """The backends, chosen once from the settings: where signed-in users' and anonymous
    visitors' conversations live, how their messages are counted, whether their replies are
    shared with other instances; and the guests. Also the SQLite store to open, and every
    backend to close."""
    keep = settings.max_history_messages
    local_limits = InMemoryRateLimits(RateLimiter(settings.rate_limit_messages, settings.rate_limit_window_seconds))
    sqlite: SqliteHistoryStore | None = None
    signed_in_history: HistoryStore | None = None
    # without sign-in every conversation is anonymous: no file to create
    if settings.auth_jwt_secret is None:
        signed_in_history = InMemoryHistoryStore(keep)
    elif settings.history_store == "sqlite":
        signed_in_history = sqlite = SqliteHistoryStore(
            settings.history_db, keep, log_queries=settings.log_user_content
        )
    elif settings.history_store == "memory":
        signed_in_history = InMemoryHistoryStore(keep)
    guests: Guests
    if settings.history_store == "redis":
        assert redis is not None
        # guests' conversations too (they expire), so every instance serves everyone
        signed_in, anonymous, guests = redis_backends(
            settings, redis, local_limits, signed_in_history=signed_in_history
        )
    else:
        assert signed_in_history is not None
        replies = LocalReplies()
        signed_in = Backends(signed_in_history, local_limits, replies)
        anonymous = Backends(InMemoryHistoryStore(keep), local_limits, replies)
        guests = GuestSessions(settings.guest_ttl_seconds)
    new_guests, address_messages = settings.guest_new_per_address, settings.address_message_limit()
    if settings.history_store == "redis":
        assert redis is not None
        counts = redis_address_limits(settings, redis, new_guests=new_guests, messages=address_messages)
    else:
        counts = (
            InMemoryRateLimits(RateLimiter(new_guests, settings.guest_new_window_seconds)),
            InMemoryRateLimits(RateLimiter(address_messages, settings.rate_limit_window_seconds)),
        )
    addresses = AddressLimits(*counts)
    conversations = ConversationService(
        chat,
        signed_in=signed_in,
        anonymous=anonymous,
        guests=guests,
        addresses=addresses,
        attachments=AttachmentPolicy.from_settings(settings),
    )
    closes: list[_Closes] = []
    every = (*_parts(signed_in), *_parts(anonymous), guests, addresses)
    for backend in every:
        if all(backend is not other for other in closes):
            closes.append(backend)
    return conversations, sqlite, closes


def _parts(backends: Backends) -> tuple[_Closes, ...]:
    return (backends.history, backends.rate_limits, backends.replies)
