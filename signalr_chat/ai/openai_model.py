"""Azure OpenAI and OpenAI-compatible servers, through the official `openai` SDK.

The SDK does the HTTP, the retries (honouring retry-after) and the Entra ID token
refresh; this module relays deltas, checks that the stream is what a chat completion
stream holds (text deltas, a finish_reason or [DONE] at the end), and classifies failures.

How a reply ends besides "stop" is told by raising after the text: `AiCutShort` when the
provider stopped at its token limit (`finish_reason: "length"`), `AiContentFiltered` when the
content filter stopped it, and `AiContentWithdrawn` when Azure's asynchronous filter flagged
text it had already streamed. That filter's annotation chunks (a choice with
`content_filter_offsets` and no delta, or no choices at all) carry no text and are skipped;
its late violation is a `finish_reason: "content_filter"` with offsets: the offending text
was sent, so the reply is withdrawn. Without offsets (the default, synchronous filter) the
text sent before the signal had passed the filter and is kept.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from urllib.parse import urlsplit

import openai
import orjson

from .attachments import for_provider
from .errors import (
    AiContentFiltered,
    AiContentWithdrawn,
    AiCutShort,
    AiError,
    AiInterrupted,
    UnexpectedUpstream,
    classify,
)
from .model import ChatMessage, estimate_tokens
from .sse_events import ServerSentEvents
from .telemetry import GenAITelemetry, ModelCall

log = logging.getLogger(__name__)
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


class OpenAIChatModel:
    """A `ChatModel` over an `openai.AsyncOpenAI` (or `AsyncAzureOpenAI`) client."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        models: str | Sequence[str],
        *,
        provider: str,
        context_tokens: int,
        max_output_tokens: int,
        temperature: float | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
        telemetry: GenAITelemetry | None = None,
    ) -> None:
        #: Each one a deployment (Azure OpenAI) or a model of the server: the `model` of the
        #: request, which the Azure client puts in the path (/openai/deployments/{model}/...).
        self.models: tuple[str, ...] = (models,) if isinstance(models, str) else tuple(models)
        if not self.models:
            raise ValueError("at least one model")
        self.name = f"{provider}:{self.models[0]}"
        self.context_tokens = context_tokens
        self.max_output_tokens = max_output_tokens
        self._client = client
        self._model = self.models[0]
        self._provider = provider
        self._temperature = temperature
        self._on_close = on_close
        self._telemetry = telemetry
        address = urlsplit(str(client.base_url))
        self._server = (address.hostname, address.port)

    async def start(self) -> None:
        log.info("chat model: %s via %s", self.name, self._client.base_url)

    async def aclose(self) -> None:
        await self._client.close()
        if self._on_close is not None:
            await self._on_close()

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    async def stream(
        self, messages: Sequence[ChatMessage], usage: dict[str, int] | None = None, model: str | None = None
    ) -> AsyncGenerator[str, None]:
        # The raw streaming response: the SDK still builds the request, retries and
        # authenticates, but its per-chunk pydantic models (a fifth of the server's time
        # when relaying hundreds of chats) are skipped for one orjson parse per event.
        # The messages travel in `extra_body`: they are plain {"role", "content"} strings
        # already, and the SDK's typed transform walks each one (~0.14 ms a message, 7 ms
        # for a 50-message history before the request even starts). A message with attachments
        # becomes content parts (ai/attachments.py); the others go as they are.
        model = model or self._model
        if model not in self.models:
            raise ValueError(f"{model!r} is not one of {self.models}")
        call = None if self._telemetry is None else self._start_call(messages, model)
        request = self._client.chat.completions.with_streaming_response.create(
            model=model,
            messages=(),
            extra_body={"messages": [for_provider(m) if "attachments" in m else m for m in messages]},
            stream=True,
            # a last chunk with the token counts (no choices), when the caller or telemetry wants them
            stream_options=openai.omit if usage is None and call is None else {"include_usage": True},
            max_tokens=self.max_output_tokens,
            temperature=openai.omit if self._temperature is None else self._temperature,
        )
        finished = cut = False
        try:
            # leaving the block closes the response: the HTTP request is aborted when we stop early
            async with request as response:
                events = ServerSentEvents()
                async for line in response.iter_lines():
                    data = events.feed(line)
                    if data is None:
                        continue
                    if data == "[DONE]":
                        finished = True
                        break
                    # read on after a finish_reason: the usage chunk, and annotations, may follow
                    texts, finish = self._deltas(data, call, usage)
                    finished = finished or finish is not None
                    cut = cut or finish == "length"
                    for text in texts:
                        yield text
            if not finished:
                log.warning("%s: the stream ended without a finish_reason or [DONE]", self._provider)
                raise AiInterrupted
            if cut:
                log.info("%s: the reply stopped at the token limit (finish_reason: length)", self._provider)
                raise AiCutShort
        except AiCutShort:
            raise  # an end, not a failure of the call
        except AiError as exc:
            if call is not None:
                call.failed(exc)
            raise
        except Exception as exc:
            if call is not None:
                call.failed(exc)
            raise classify(exc, self._provider) from exc
        finally:
            if call is not None:
                call.end()

    def _start_call(self, messages: Sequence[ChatMessage], model: str) -> ModelCall:
        assert self._telemetry is not None
        return self._telemetry.chat(
            self._provider,
            model,
            messages,
            server_address=self._server[0],
            server_port=self._server[1],
            max_tokens=self.max_output_tokens,
            temperature=self._temperature,
        )

    def _deltas(
        self, data: str, call: ModelCall | None = None, usage: dict[str, int] | None = None
    ) -> tuple[list[str], str | None]:
        """The text deltas of one event (most carry one; Azure's annotations none), and the
        finish_reason that ends the reply, if it holds one. Anything a chat completion chunk
        never holds is an error."""
        chunk = orjson.loads(data)
        if type(chunk) is not dict:
            raise UnexpectedUpstream(f"an event that is not an object: {type(chunk).__name__}")
        if chunk.get("error"):
            raise RuntimeError(f"error event in the stream: {chunk['error']}")
        if usage is not None and isinstance(chunk.get("usage"), dict):
            counts = chunk["usage"]
            usage.update({k: counts[k] for k in USAGE_KEYS if isinstance(counts.get(k), int)})
        choices = chunk.get("choices") or []
        if type(choices) is not list:
            raise UnexpectedUpstream(f"'choices' is a {type(choices).__name__}")
        deltas = []
        finish: str | None = None
        for choice in choices:
            if type(choice) is not dict:
                raise UnexpectedUpstream(f"a choice that is a {type(choice).__name__}")
            delta = choice.get("delta") or {}
            if type(delta) is not dict:
                raise UnexpectedUpstream(f"a delta that is a {type(delta).__name__}")
            content = delta.get("content")
            if content is not None and type(content) is not str:
                raise UnexpectedUpstream(f"delta content that is a {type(content).__name__}")
            if content:
                deltas.append(content)
            finish_reason = choice.get("finish_reason")
            if finish_reason == "content_filter":
                if choice.get("content_filter_offsets") is not None:
                    # the asynchronous filter: the text it covers was streamed already
                    log.warning("%s: reply withdrawn by the asynchronous content filter", self._provider)
                    raise AiContentWithdrawn
                log.warning("%s: reply stopped by the content filter", self._provider)
                raise AiContentFiltered
            if finish_reason is not None:
                finish = str(finish_reason)
        if call is not None:  # a chunk checked above: telemetry reads its id, model, usage, finish
            call.chunk(chunk)
        return deltas, finish
