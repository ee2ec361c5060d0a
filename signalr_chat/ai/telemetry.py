"""OpenTelemetry for the chat's model calls, per the GenAI semantic conventions.

Per streaming call: a Client span `chat {model}` (a child of the hub invocation's span)
and the metrics `gen_ai.client.token.usage`, `gen_ai.client.operation.duration` and
`gen_ai.client.operation.time_to_first_chunk` (taken at the first chunk carrying text).
Message content is recorded only when `genai_capture_message_content` opts in.
Built only when an SDK is configured; an unconfigured model call checks one `None`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .model import ChatMessage

SCOPE = "signalr_chat.ai"
#: gen_ai.provider.name by our provider kind (Azure's value replaced the old `az.ai.openai`).
#: The conventions name no value for llama.cpp: ours is `llama_cpp`.
PROVIDER_NAMES = {"azure": "azure.ai.openai", "openai": "openai", "local": "llama_cpp"}
TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
SECONDS_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]


def error_type(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _messages_json(messages: Sequence[ChatMessage]) -> str:
    """The conventions' message format: role and text parts."""
    return orjson.dumps(
        [{"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]} for m in messages]
    ).decode()


class GenAITelemetry:
    """The GenAI instruments every provider shares, built once when an OpenTelemetry SDK is configured;
    `chat` starts the span of one streaming call."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None,
        meter_provider: metrics.MeterProvider | None,
        *,
        capture_content: bool = False,
    ) -> None:
        self.tracer = (tracer_provider or trace.NoOpTracerProvider()).get_tracer(SCOPE)
        meter = (meter_provider or metrics.NoOpMeterProvider()).get_meter(SCOPE)
        self.capture_content = capture_content
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.time_to_first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time to receive the first chunk in a streaming operation.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )

    def chat(
        self,
        provider: str,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        server_address: str | None,
        server_port: int | None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ModelCall:
        common: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": PROVIDER_NAMES.get(provider, provider),
            "gen_ai.request.model": model,
        }
        if server_address:
            common["server.address"] = server_address
        if server_port:
            common["server.port"] = server_port
        attributes = {**common, "gen_ai.request.stream": True}
        if max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = max_tokens
        if temperature is not None:
            attributes["gen_ai.request.temperature"] = temperature
        if self.capture_content:
            attributes["gen_ai.input.messages"] = _messages_json(messages)
        span = self.tracer.start_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes)
        return ModelCall(self, span, common)


class ModelCall:
    """One streaming call: fed every parsed chunk, ended once."""

    __slots__ = (
        "_common",
        "_first_at",
        "_output",
        "_started",
        "_telemetry",
        "error",
        "finish_reasons",
        "response_id",
        "response_model",
        "span",
        "usage",
    )

    def __init__(self, telemetry: GenAITelemetry, span: trace.Span, common: dict[str, Any]) -> None:
        self._telemetry = telemetry
        self._common = common
        self._started = time.perf_counter()
        self._first_at: float | None = None
        self._output: list[str] | None = [] if telemetry.capture_content else None
        self.span = span
        self.response_id: str | None = None
        self.response_model: str | None = None
        self.finish_reasons: list[str] = []
        self.usage: tuple[int, int] | None = None
        self.error: BaseException | None = None

    def chunk(self, chunk: dict[str, Any]) -> None:
        """A `chat.completion.chunk` (Azure's first, a prompt-filter verdict, has no id or model)."""
        if self.response_id is None and chunk.get("id"):
            self.response_id = chunk["id"]
        if self.response_model is None and chunk.get("model"):
            self.response_model = chunk["model"]
        usage = chunk.get("usage")
        if usage:
            self.usage = (int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
        for choice in chunk.get("choices") or ():
            content = (choice.get("delta") or {}).get("content")
            if content:
                self.text(content)
            reason = choice.get("finish_reason")
            if reason:
                self.finish_reasons.append(reason)

    def text(self, content: str) -> None:
        """A text delta (the local model hands over text, not chunks)."""
        if self._first_at is None:
            self._first_at = time.perf_counter()
        if self._output is not None:
            self._output.append(content)

    def failed(self, exc: BaseException) -> None:
        self.error = exc

    def end(self) -> None:
        span = self.span
        attributes = dict(self._common)
        if self.response_model is not None:
            attributes["gen_ai.response.model"] = self.response_model
        if self.error is not None:
            attributes["error.type"] = error_type(self.error)
            span.set_status(Status(StatusCode.ERROR, str(self.error) or None))
        if span.is_recording():
            span.set_attributes(attributes)
            if self.response_id is not None:
                span.set_attribute("gen_ai.response.id", self.response_id)
            if self.finish_reasons:
                span.set_attribute("gen_ai.response.finish_reasons", self.finish_reasons)
            if self.usage is not None:
                span.set_attribute("gen_ai.usage.input_tokens", self.usage[0])
                span.set_attribute("gen_ai.usage.output_tokens", self.usage[1])
            if self._first_at is not None:
                span.set_attribute("gen_ai.response.time_to_first_chunk", self._first_at - self._started)
            if self._output is not None:
                output = {"role": "assistant", "parts": [{"type": "text", "content": "".join(self._output)}]}
                if self.finish_reasons:
                    output["finish_reason"] = self.finish_reasons[-1]
                span.set_attribute("gen_ai.output.messages", orjson.dumps([output]).decode())
        span.end()
        telemetry = self._telemetry
        telemetry.duration.record(time.perf_counter() - self._started, attributes)
        if self._first_at is not None:
            telemetry.time_to_first_chunk.record(self._first_at - self._started, attributes)
        if self.usage is not None:
            telemetry.token_usage.record(self.usage[0], {**attributes, "gen_ai.token.type": "input"})
            telemetry.token_usage.record(self.usage[1], {**attributes, "gen_ai.token.type": "output"})
