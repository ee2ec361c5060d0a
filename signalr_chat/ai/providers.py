"""Pick and build the model provider from the settings."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import httpx2  # the openai SDK's HTTP client
import openai

from ..hosting.errors import ConfigurationError
from .model import ChatModel
from .openai_model import OpenAIChatModel
from .telemetry import GenAITelemetry

if TYPE_CHECKING:
    from .settings import ModelSettings

log = logging.getLogger(__name__)

#: The Entra ID scope of Azure OpenAI (Cognitive Services).
COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"


def _entra_token_provider() -> tuple[Callable[[], Awaitable[str]], Callable[[], Awaitable[None]]]:
    """A bearer-token callable from DefaultAzureCredential, and how to close the credential."""
    from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider

    credential = DefaultAzureCredential()
    return get_bearer_token_provider(credential, COGNITIVE_SERVICES_SCOPE), credential.close


def _azure(settings: ModelSettings, telemetry: GenAITelemetry | None) -> ChatModel:
    if not settings.azure_openai_endpoint:
        raise ConfigurationError("AZURE_OPENAI_ENDPOINT is required for the Azure OpenAI provider")
    deployments = settings.chat_models()
    if not deployments:
        raise ConfigurationError(
            "AZURE_OPENAI_DEPLOYMENT (or AZURE_OPENAI_CHAT_DEPLOYMENT_NAME, AZURE_OPENAI_DEPLOYMENT_NAME) "
            "or AI_MODELS is required"
        )
    endpoint = settings.azure_openai_endpoint.rstrip("/")
    key = settings.azure_openai_api_key.get_secret_value() if settings.azure_openai_api_key else None
    on_close = None
    token_provider = None
    if key is None:
        token_provider, on_close = _entra_token_provider()
    retries, timeout = settings.ai_max_retries, settings.ai_timeout_seconds
    client: openai.AsyncOpenAI
    if settings.azure_openai_v1:
        # the v1 API is plain OpenAI: the key or the Entra token travels as a bearer token
        client = openai.AsyncOpenAI(
            base_url=f"{endpoint}/openai/v1/",
            api_key=key or token_provider,
            max_retries=retries,
            timeout=timeout,
            http_client=_http_client(settings),
        )
    else:
        # no azure_deployment: the SDK then puts each request's `model` in the path
        # (/openai/deployments/{model}/chat/completions), so one client serves every deployment
        client = openai.AsyncAzureOpenAI(
            azure_endpoint=endpoint,
            api_version=settings.openai_api_version,
            api_key=key,
            azure_ad_token_provider=token_provider,
            max_retries=retries,
            timeout=timeout,
            http_client=_http_client(settings),
        )
    log.info(
        "Azure OpenAI: %s, deployment%s %s, %s",
        endpoint,
        "s" if len(deployments) > 1 else "",
        ", ".join(deployments),
        "API key" if key else "Entra ID",
    )
    return OpenAIChatModel(
        client,
        deployments,
        provider="azure",
        context_tokens=settings.ai_context_tokens,
        max_output_tokens=settings.ai_max_output_tokens,
        temperature=settings.ai_temperature,
        on_close=on_close,
        telemetry=telemetry,
    )


def _http_client(settings: ModelSettings) -> httpx2.AsyncClient:
    """The SDK's aiohttp transport, with room for every streaming reply.

    aiohttp reads a stream for a fraction of httpx2's default transport's cost per read
    (httpcore2 and anyio open a cancel scope for every read), and that per-read cost
    bounds how many chats one core relays.
    Each reply holds a connection for its whole length: past the SDK's default limit of
    1,000 the next chat would wait for one.
    """
    limits = httpx2.Limits(max_connections=settings.ai_max_connections, max_keepalive_connections=100)
    return openai.DefaultAioHttpClient(limits=limits)


def _openai_compatible(settings: ModelSettings, telemetry: GenAITelemetry | None) -> ChatModel:
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    client = openai.AsyncOpenAI(
        base_url=settings.openai_base_url,
        # local servers (Ollama, llama.cpp) take any key, but the SDK insists on one
        api_key=key or "unused",
        max_retries=settings.ai_max_retries,
        timeout=settings.ai_timeout_seconds,
        http_client=_http_client(settings),
    )
    return OpenAIChatModel(
        client,
        settings.chat_models(),
        provider="openai",
        context_tokens=settings.ai_context_tokens,
        max_output_tokens=settings.ai_max_output_tokens,
        temperature=settings.ai_temperature,
        telemetry=telemetry,
    )


def create_model(settings: ModelSettings, telemetry: GenAITelemetry | None = None) -> ChatModel:
    """The configured provider's model; `telemetry` traces and measures its calls."""
    provider = settings.provider()
    if provider == "azure":
        return _azure(settings, telemetry)
    if provider == "openai":
        return _openai_compatible(settings, telemetry)
    from .local_model import LocalChatModel

    if settings.ai_models.strip():
        log.warning("AI_MODELS is ignored: the built-in local model is one model (LOCAL_MODEL_PATH)")
    return LocalChatModel(settings, telemetry)
