"""What the models read of the chat's settings: the fields they use, as protocols.

The chat's `Settings` (pydantic-settings, in the composition root) has every one of them;
the models name only what they read, so they never import the app that reads the
environment (import-linter checks the direction).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from pydantic import SecretStr


class LocalModelSettings(Protocol):
    """The built-in offline model's (local_model.py)."""

    local_model_path: Path | None
    local_context_tokens: int
    local_max_output_tokens: int
    local_threads: int
    local_threads_batch: int
    local_instances: int
    local_temperature: float
    local_top_p: float
    local_repeat_penalty: float


class ModelSettings(LocalModelSettings, Protocol):
    """Every provider's (providers.py): which one, and how to reach it."""

    azure_openai_endpoint: str | None
    azure_openai_deployment: str | None
    openai_api_version: str
    azure_openai_api_key: SecretStr | None
    azure_openai_v1: bool
    openai_base_url: str | None
    openai_api_key: SecretStr | None
    openai_model: str
    ai_models: str
    ai_max_retries: int
    ai_timeout_seconds: float
    ai_max_connections: int
    ai_max_output_tokens: int
    ai_context_tokens: int
    ai_temperature: float | None

    def provider(self) -> Literal["azure", "openai", "local"]: ...

    def chat_models(self) -> list[str]:
        """The deployments (Azure OpenAI) or models (OpenAI-compatible) conversations pick from,
        the default first."""
        ...
