"""Azure OpenAI and OpenAI-compatible servers, through the official `openai` SDK.

The SDK does the HTTP, the retries (honouring retry-after) and the Entra ID token
refresh; this module only relays deltas and classifies failures.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence

import openai
import orjson

from .errors import AiContentFiltered, AiError, classify
from .model import ChatMessage, estimate_tokens

log = logging.getLogger(__name__)
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


class OpenAIChatModel:
    """A `ChatModel` over an `openai.AsyncOpenAI` (or `AsyncAzureOpenAI`) client."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        model: str,
        *,
        provider: str,
        context_tokens: int,
        max_output_tokens: int,
        temperature: float | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.name = f"{provider}:{model}"
        self.context_tokens = context_tokens
        self.max_output_tokens = max_output_tokens
        self._client = client
        self._model = model
        self._provider = provider
        self._temperature = temperature
        self._on_close = on_close

    async def start(self) -> None:
        log.info("chat model: %s via %s", self.name, self._client.base_url)

    async def aclose(self) -> None:
        await self._client.close()
        if self._on_close is not None:
            await self._on_close()

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    async def stream(
        self, messages: Sequence[ChatMessage], usage: dict[str, int] | None = None
    ) -> AsyncGenerator[str, None]:
        # The raw streaming response: the SDK still builds the request, retries and
        # authenticates, but its per-chunk pydantic models (a fifth of the server's time
        # when relaying hundreds of chats) are skipped for one orjson parse per event.
        # The messages travel in `extra_body`: they are plain {"role", "content"} strings
        # already, and the SDK's typed transform walks each one (~0.14 ms a message, 7 ms
        # for a 50-message history before the request even starts).
        request = self._client.chat.completions.with_streaming_response.create(
            model=self._model,
            messages=(),
            extra_body={"messages": list(messages)},
            stream=True,
            # a last chunk with the token counts (no choices), when the caller wants them
            stream_options={"include_usage": True} if usage is not None else openai.omit,
            max_tokens=self.max_output_tokens,
            temperature=openai.omit if self._temperature is None else self._temperature,
        )
        try:
            # leaving the block closes the response: the HTTP request is aborted when we stop early
            async with request as response:
                async for line in response.iter_lines():
                    for text in self._deltas(line, usage):
                        yield text
        except AiError:
            raise
        except Exception as exc:
            raise classify(exc, self._provider) from exc

    def _deltas(self, line: str, usage: dict[str, int] | None = None) -> list[str]:
        """The text deltas of one server-sent event line (most carry one; Azure's first none)."""
        if not line.startswith("data:"):
            return []  # blank separators, comments, `event:` lines
        data = line[5:].strip()
        if data == "[DONE]":
            return []
        chunk = orjson.loads(data)
        if chunk.get("error"):
            raise RuntimeError(f"error event in the stream: {chunk['error']}")
        if usage is not None and isinstance(chunk.get("usage"), dict):
            counts = chunk["usage"]
            usage.update({k: counts[k] for k in USAGE_KEYS if isinstance(counts.get(k), int)})
        deltas = []
        for choice in chunk.get("choices") or ():
            content = (choice.get("delta") or {}).get("content")
            if content:
                deltas.append(content)
            if choice.get("finish_reason") == "content_filter":
                log.warning("%s: reply stopped by the content filter", self._provider)
                raise AiContentFiltered
        return deltas
