"""The interface every model provider implements."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Literal, NotRequired, Protocol, TypedDict

#: How a stored reply was cut short: at a length limit (the model's, or MAX_REPLY_LENGTH).
Cut = Literal["length"]


class Attachment(TypedDict):
    """A file a user attached to a message (UploadAttachment): kept whole with the message, so
    every later turn can send it to the model again."""

    id: str
    name: str
    #: The media type, checked: an image's from its bytes, a text file's "text/..." or JSON.
    type: str
    size: int
    #: The bytes, base64: a history store keeps text (JSON, SQLite TEXT, Redis strings).
    data: str


class ChatMessage(TypedDict):
    """One turn in the form every provider's chat API takes, and what a history store keeps."""

    role: Literal["system", "user", "assistant"]
    content: str
    #: A reply cut short (stored, shown, never sent to a model): ContinueReply asks for the rest.
    cut: NotRequired[Cut]
    #: A stored assistant message's label: the model (deployment) that wrote it. Kept by the
    #: history stores for the front ends; never sent to a model (the chat strips it).
    model: NotRequired[str]
    #: A user message's files, sent to the model as content parts (ai/attachments.py).
    attachments: NotRequired[list[Attachment]]


class ChatModel(Protocol):
    """What the chat asks of a model, whichever provider serves it (Azure OpenAI, OpenAI-compatible, local):
    the chat depends on this alone, so tests give it a fake."""

    #: A short name for logs ("azure:gpt-4o", "local:SmolLM2-135M-Instruct").
    name: str
    #: Tokens of prompt + reply the model accepts; history is trimmed to fit.
    context_tokens: int
    #: Tokens reserved for the reply.
    max_output_tokens: int
    #: The models a conversation may pick (Azure OpenAI deployments, an OpenAI-compatible
    #: server's models; the built-in model's one name), the default first.
    models: tuple[str, ...]

    async def start(self) -> None:
        """Get ready to serve (load weights, warm up); called once at startup."""

    async def aclose(self) -> None:
        """Release clients, credentials and threads."""

    def count_tokens(self, text: str) -> int:
        """Tokens in `text`: exact where the tokenizer is at hand, else a safe estimate."""
        ...

    def stream(
        self, messages: Sequence[ChatMessage], usage: dict[str, int] | None = None, model: str | None = None
    ) -> AsyncGenerator[str, None]:
        """Text deltas as they are generated; closing the iterator stops generation at once.

        `usage`, when given, receives `prompt_tokens`, `completion_tokens` and `total_tokens`
        where the provider reports them (or the model counts its own). `model`: one of
        `models` (None: the first), so one client serves every deployment.

        A reply that stopped at the model's token limit raises `AiCutShort` after its text;
        one a content filter flagged after its text was streamed raises `AiContentWithdrawn`.
        """
        ...


def estimate_tokens(text: str) -> int:
    """An upper-leaning estimate without a tokenizer: about 3 UTF-8 bytes per token.

    BPE tokenizers average ~4 characters of English per token and ~1 per CJK character
    (3 bytes), so bytes/3 rarely undercounts.
    """
    return len(text.encode()) // 3 + 1
