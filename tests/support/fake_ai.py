"""A fake Azure OpenAI service on 127.0.0.1, so the real `openai` SDK and `azure-identity` can be tested offline.

It serves the Azure classic route (`/openai/deployments/{deployment}/chat/completions?api-version=...`), the Azure
v1 route (`/openai/v1/chat/completions`), a plain OpenAI-compatible route (`/v1/chat/completions`) and a fake App
Service managed-identity token endpoint (`/msi/token`, what `ManagedIdentityCredential` calls when
IDENTITY_ENDPOINT and IDENTITY_HEADER are set). Every chat request is recorded, with how it ended, so tests can
prove retries, auth headers and that a client disconnect cancels the upstream stream.

Behaviour is scripted by markers in the last user message; `MARKERS` lists them, `plan` applies them.
A last user message of content parts (attachments) is checked part by part (`describe_parts`: an
image's data URL must hold an image of the type it names, else 400 as Azure answers), and the echo
ends with a line naming each part received.
A question in `DEMO_REPLIES` gets a canned, real-looking answer instead of the echo: the docs'
screenshots ask those.

Run as a process: `python -m tests.support.fake_ai --port N [--api-key KEY] [--bearer-token TOKEN]
[--identity-header SECRET]`; it prints `listening on http://127.0.0.1:PORT` when ready (port 0 picks a free one).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import re
import secrets
import signal
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web

DEFAULT_API_KEY = "test-azure-key"
# Shaped like an Entra ID access token (a JWT), as azure-identity decodes its claims for logging.
DEFAULT_BEARER_TOKEN = jwt.encode(
    {
        "aud": "https://cognitiveservices.azure.com",
        "iss": "https://sts.windows.net/fake-tenant/",
        "appid": "fake-app",
        "tid": "fake-tenant",
        "oid": "fake-object",
    },
    "fake-signing-key-of-the-fake-token-service",
    algorithm="HS256",
)
DEFAULT_IDENTITY_HEADER = "fake-identity-header"
DEFAULT_TOKEN_DELAY = 0.005
SLOW_TOKEN_DELAY = 0.05
SLOW_TOKEN_COUNT = 400
MSI_API_VERSION = "2019-08-01"
SYSTEM_FINGERPRINT = "fp_fake0ai"

MARKERS = (
    "[[429]]",
    "[[429-once]]",
    "[[401]]",
    "[[403]]",
    "[[500]]",
    "[[filter]]",
    "[[filter-finish]]",
    # Azure's asynchronous filter: text, annotations, then a late violation / nothing filtered
    "[[async-filter]]",
    "[[async-filter-pass]]",
    # the reply stops at the token limit: finish_reason "length"
    "[[length]]",
    "[[slow]]",
    "[[tokens:N]]",
    "[[drop]]",
    "[[empty]]",
    # misbehaving upstreams
    "[[content:int]]",
    "[[content:list]]",
    "[[runaway]]",
    "[[keepalive-only]]",
    "[[hang]]",
    "[[truncated]]",
    "[[multiline]]",
)
#: [[runaway]] ignores max_tokens: tokens of this many characters, until the client leaves.
RUNAWAY_TOKEN = "r" * 1000
#: [[keepalive-only]] sends this comment, and nothing else, until the client leaves.
KEEPALIVE_COMMENT = b": keep-alive\n\n"
#: [[truncated]] sends this many tokens, then ends the response cleanly: no finish chunk, no [DONE].
TRUNCATED_TOKENS = 3
#: [[length]] sends this many tokens, then `finish_reason: "length"`.
LENGTH_TOKENS = 3
#: [[async-filter]] / [[async-filter-pass]]: this many tokens, an annotation after every
#: ASYNC_FILTER_EVERY of them (covering the text since the last one).
ASYNC_FILTER_TOKENS = 6
ASYNC_FILTER_EVERY = 2
#: [[async-filter]]'s verdict comes this long after the text it covers: late, as the filter's
#: name says, and long enough for a client to have shown the text (and a follower to attach).
ASYNC_FILTER_VERDICT_DELAY = 1.0

AUTH_FAILED_MESSAGE = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an "
    "active subscription and use a correct regional API endpoint for your resource."
)
RATE_LIMIT_MESSAGE = (
    "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token "
    "rate limit of your current OpenAI S0 pricing tier. Please retry after 1 second."
)
PROMPT_FILTERED_MESSAGE = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify "
    "your prompt and retry."
)

SAFE_FILTER_RESULTS: dict[str, Any] = {
    "hate": {"filtered": False, "severity": "safe"},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": False, "severity": "safe"},
}
PROMPT_FILTER_RESULTS: list[dict[str, Any]] = [
    {
        "prompt_index": 0,
        "content_filter_results": {
            **SAFE_FILTER_RESULTS,
            "jailbreak": {"filtered": False, "detected": False},
        },
    }
]
COMPLETION_FILTERED_RESULTS: dict[str, Any] = {**SAFE_FILTER_RESULTS, "hate": {"filtered": True, "severity": "high"}}
#: The asynchronous filter's late verdict in Azure's sample: protected material, filtered.
PROTECTED_MATERIAL_FILTERED: dict[str, Any] = {"protected_material_text": {"detected": True, "filtered": True}}

#: Canned answers for the docs' screenshots (`make screenshots`), so they show a conversation
#: as a user would see one rather than the echo.
DEMO_REPLIES: dict[str, str] = {
    "Plan a weekend in Lisbon": (
        "Here is a relaxed two-day plan:\n\n"
        "1. **Saturday**: Alfama in the morning, lunch at Time Out Market, sunset at Miradouro da Senhora do Monte.\n"
        "2. **Sunday**: tram 28 to Belém, pastéis de Belém, then the MAAT by the river.\n\n"
        "Buy a Viva Viagem card for trams and the metro."
    ),
    "How do I read a JSON file in Python?": (
        "Use the standard library's `json` module:\n\n"
        "```python\nimport json\n\n"
        'with open("settings.json", encoding="utf-8") as f:\n'
        "    settings = json.load(f)\n\n"
        'print(settings["theme"])\n```\n\n'
        "`json.load` reads from an open file, `json.loads` parses a string. Invalid JSON raises "
        "`json.JSONDecodeError`, so catch it if the file may be edited by hand."
    ),
    "And how do I write it back, nicely formatted?": (
        "Pass `indent` to `json.dump`:\n\n"
        "```python\n"
        'with open("settings.json", "w", encoding="utf-8") as f:\n'
        "    json.dump(settings, f, indent=2, ensure_ascii=False)\n```\n\n"
        "- `indent=2` puts each key on its own line.\n"
        "- `ensure_ascii=False` keeps characters like `é` readable.\n"
        "- `sort_keys=True` gives stable diffs in version control."
    ),
}

_TOKENS_MARKER = re.compile(r"\[\[tokens:(\d+)\]\]")
_WORDS = re.compile(r"\s*\S+")


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


ERROR_BODIES: dict[int, dict[str, Any]] = {
    401: _error_body("401", AUTH_FAILED_MESSAGE),
    403: _error_body("403", "Principal does not have access to API/Operation."),
    404: _error_body("404", "Resource not found"),
    429: _error_body("429", RATE_LIMIT_MESSAGE),
    500: _error_body("InternalServerError", "The server had an error while processing your request."),
}
CONTENT_FILTER_ERROR_BODY: dict[str, Any] = {
    "error": {
        "message": PROMPT_FILTERED_MESSAGE,
        "type": None,
        "param": "prompt",
        "code": "content_filter",
        "status": 400,
        "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": COMPLETION_FILTERED_RESULTS},
    }
}
#: Azure's answer to an image part whose data is not an image of the type it names.
INVALID_IMAGE_BODY: dict[str, Any] = _error_body("BadRequest", "Invalid image data.")
RATE_LIMIT_HEADERS = {"retry-after-ms": "10", "retry-after": "0"}


@dataclass
class Script:
    """What the fake will answer for one request, decided from the last user message."""

    status: int = 200
    error_body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    tokens: list[str] = field(default_factory=list)
    delay: float = DEFAULT_TOKEN_DELAY
    finish_reason: str = "stop"
    drop: bool = False
    #: Misbehaviour: a delta `content` that is not a string, sent after the tokens.
    bad_content: Any = None
    runaway: bool = False
    keepalive_only: bool = False
    hang: bool = False
    #: The stream ends cleanly after the tokens, without the finish chunk and [DONE].
    truncated: bool = False
    #: Every event's JSON spread over several `data:` lines.
    multiline: bool = False
    #: Azure's asynchronous filter: "violation" (annotations, then a late content_filter
    #: finish for the text already sent) or "pass" (annotations only, one after the finish).
    async_filter: str | None = None


@dataclass
class FakeState:
    """Everything the control API exposes; one per app, kept in memory in arrival order."""

    api_key: str
    bearer_token: str
    identity_header: str
    token_delay: float = DEFAULT_TOKEN_DELAY
    requests: list[dict[str, Any]] = field(default_factory=list)
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    rate_limited_once: set[str] = field(default_factory=set)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def reset(self) -> None:
        self.requests.clear()
        self.token_requests.clear()
        self.rate_limited_once.clear()
        self.ids = itertools.count(1)


STATE_KEY = web.AppKey("fake_ai_state", FakeState)


def message_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def request_messages(body: dict[str, Any]) -> list[Any]:
    messages = body.get("messages")
    return messages if isinstance(messages, list) else []


def last_user_text(messages: Sequence[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message_text(message.get("content"))
    return ""


def last_user_content(messages: Sequence[Any]) -> Any:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message.get("content")
    return None


#: What a data URL of an image part must look like, and the magic bytes of each image type.
_DATA_URL = re.compile(r"data:(image/[a-z]+);base64,([A-Za-z0-9+/=]*)\Z")
_IMAGE_MAGIC = {
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/jpeg": b"\xff\xd8\xff",
    "image/gif": b"GIF8",
    "image/webp": b"RIFF",
}


def describe_parts(content: list[Any]) -> str | None:
    """A line naming each content part received, in order, as the chat's tests check it: "text",
    "image image/png 68 bytes", "file notes.py 12 chars". None when a part is not what OpenAI's
    chat API takes (the fake then answers 400, as Azure does for bad image data)."""
    named: list[str] = []
    for part in content:
        if not isinstance(part, dict):
            return None
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            text = part["text"]
            header, _, rest = text.partition("\n")
            if header.startswith("File: ") and rest.startswith("```"):
                named.append(f"file {header[6:]} {len(rest.strip('`').strip(chr(10)))} chars")
            else:
                named.append("text")
        elif part.get("type") == "image_url" and isinstance(part.get("image_url"), dict):
            found = _DATA_URL.match(str(part["image_url"].get("url", "")))
            if found is None:
                return None
            media, encoded = found.groups()
            try:
                data = base64.b64decode(encoded, validate=True)
            except ValueError:
                return None
            if not data.startswith(_IMAGE_MAGIC.get(media, b"?")):
                return None
            named.append(f"image {media} {len(data)} bytes")
        else:
            return None
    return "; ".join(named)


def word_tokens(text: str) -> list[str]:
    """Split into the way a model streams words: "Echo:", " hello", " world"."""
    return _WORDS.findall(text)


def numbered_tokens(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i}" if i == 0 else f" {prefix}{i}" for i in range(count)]


def plan(state: FakeState, body: dict[str, Any]) -> Script:
    """Choose the scripted behaviour from markers in the last user message."""
    messages = request_messages(body)
    text = last_user_text(messages)
    delay = state.token_delay
    content = last_user_content(messages)
    received = describe_parts(content) if isinstance(content, list) else None
    if isinstance(content, list) and received is None:
        return Script(status=400, error_body=INVALID_IMAGE_BODY)
    if "[[429-once]]" in text:
        if text not in state.rate_limited_once:
            state.rate_limited_once.add(text)
            return Script(status=429, error_body=ERROR_BODIES[429], headers=dict(RATE_LIMIT_HEADERS))
    elif "[[429]]" in text:
        return Script(status=429, error_body=ERROR_BODIES[429], headers=dict(RATE_LIMIT_HEADERS))
    for status in (401, 403, 500):
        if f"[[{status}]]" in text:
            return Script(status=status, error_body=ERROR_BODIES[status])
    if "[[filter]]" in text:
        return Script(status=400, error_body=CONTENT_FILTER_ERROR_BODY)
    if "[[filter-finish]]" in text:
        return Script(tokens=numbered_tokens("t", 3), delay=delay, finish_reason="content_filter")
    if "[[async-filter]]" in text:
        return Script(tokens=numbered_tokens("t", ASYNC_FILTER_TOKENS), delay=delay, async_filter="violation")
    if "[[async-filter-pass]]" in text:
        return Script(tokens=numbered_tokens("t", ASYNC_FILTER_TOKENS), delay=delay, async_filter="pass")
    if "[[length]]" in text:
        return Script(tokens=numbered_tokens("t", LENGTH_TOKENS), delay=delay, finish_reason="length")
    if "[[slow]]" in text:
        return Script(tokens=numbered_tokens("tok", SLOW_TOKEN_COUNT), delay=SLOW_TOKEN_DELAY)
    if match := _TOKENS_MARKER.search(text):
        return Script(tokens=numbered_tokens("t", int(match.group(1))), delay=delay)
    if "[[drop]]" in text:
        return Script(tokens=numbered_tokens("t", 2), delay=delay, drop=True)
    if "[[empty]]" in text:
        return Script(tokens=[], delay=delay)
    if "[[content:int]]" in text:
        return Script(tokens=numbered_tokens("t", 2), delay=delay, bad_content=123)
    if "[[content:list]]" in text:
        return Script(tokens=[], delay=delay, bad_content=[{"type": "text", "text": "x"}])
    if "[[runaway]]" in text:
        return Script(runaway=True, delay=0)
    if "[[keepalive-only]]" in text:
        return Script(keepalive_only=True)
    if "[[hang]]" in text:
        return Script(hang=True)
    if "[[truncated]]" in text:
        return Script(tokens=numbered_tokens("t", TRUNCATED_TOKENS), delay=delay, truncated=True)
    if "[[multiline]]" in text:
        reply = f"Echo: {text} (history: {len(messages)} messages)"
        return Script(tokens=word_tokens(reply), delay=delay, multiline=True)
    said = text
    if received is not None:  # content parts: the message's own text (a file's part names its file)
        first = next((p["text"] for p in content if p.get("type") == "text" and p["text"] != ""), "")
        said = "" if first.startswith("File: ") else first
    if said in DEMO_REPLIES:
        return Script(tokens=word_tokens(DEMO_REPLIES[said]), delay=delay)
    if received is not None:  # then what arrived
        reply = f"Echo: {said} (history: {len(messages)} messages) Received: {received}."
        return Script(tokens=word_tokens(reply), delay=delay)
    reply = f"Echo: {text} (history: {len(messages)} messages)"
    return Script(tokens=word_tokens(reply), delay=delay)


def authorized(state: FakeState, request: web.Request) -> bool:
    """Azure accepts `api-key: KEY`, or `Authorization: Bearer X` where X is an Entra token (or, here, the key)."""
    if request.headers.get("api-key") == state.api_key:
        return True
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and credential.strip() in (state.bearer_token, state.api_key)


class Completion:
    """Builds chunks and bodies that look like Azure OpenAI's for one response."""

    def __init__(self, model: str) -> None:
        self.id = "chatcmpl-" + secrets.token_urlsafe(21).replace("-", "A").replace("_", "B")[:29]
        self.created = int(time.time())
        self.model = model

    def chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "choices": choices,
            "created": self.created,
            "id": self.id,
            "model": self.model,
            "object": "chat.completion.chunk",
            "system_fingerprint": SYSTEM_FINGERPRINT,
            **extra,
        }

    @staticmethod
    def prompt_filter_chunk() -> dict[str, Any]:
        """Azure's first event: no choices, only the prompt filter verdict (id and model empty)."""
        return {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": PROMPT_FILTER_RESULTS,
        }

    def role_chunk(self) -> dict[str, Any]:
        delta = {"content": "", "refusal": None, "role": "assistant"}
        return self.chunk([{"content_filter_results": {}, "delta": delta, "finish_reason": None, "index": 0}])

    def token_chunk(self, token: str) -> dict[str, Any]:
        choice = {
            "content_filter_results": SAFE_FILTER_RESULTS,
            "delta": {"content": token},
            "finish_reason": None,
            "index": 0,
            "logprobs": None,
        }
        return self.chunk([choice])

    def finish_chunk(self, finish_reason: str) -> dict[str, Any]:
        results = COMPLETION_FILTERED_RESULTS if finish_reason == "content_filter" else {}
        choice = {
            "content_filter_results": results,
            "delta": {},
            "finish_reason": finish_reason,
            "index": 0,
            "logprobs": None,
        }
        return self.chunk([choice])

    def async_token_chunk(self, token: str) -> dict[str, Any]:
        """With the asynchronous filter a token is sent at once, with no filter results."""
        return self.chunk([{"index": 0, "finish_reason": None, "delta": {"content": token}}], usage=None)

    @staticmethod
    def annotation_chunk(
        offsets: dict[str, int], results: dict[str, Any], finish_reason: str | None = None
    ) -> dict[str, Any]:
        """The asynchronous filter's verdict on text already sent: no delta, the offsets it covers
        (id, model and object empty, as in Azure's samples); a late violation is one with
        `finish_reason: "content_filter"` and the category marked filtered."""
        choice = {
            "index": 0,
            "finish_reason": finish_reason,
            "content_filter_results": results,
            "content_filter_offsets": offsets,
        }
        return {"id": "", "object": "", "created": 0, "model": "", "choices": [choice], "usage": None}

    def usage_chunk(self, usage: dict[str, int]) -> dict[str, Any]:
        return self.chunk([], usage=usage)

    def completion(self, text: str, finish_reason: str, usage: dict[str, int]) -> dict[str, Any]:
        results = COMPLETION_FILTERED_RESULTS if finish_reason == "content_filter" else SAFE_FILTER_RESULTS
        choice = {
            "content_filter_results": results,
            "finish_reason": finish_reason,
            "index": 0,
            "logprobs": None,
            "message": {"content": text, "refusal": None, "role": "assistant"},
        }
        return {
            "choices": [choice],
            "created": self.created,
            "id": self.id,
            "model": self.model,
            "object": "chat.completion",
            "prompt_filter_results": PROMPT_FILTER_RESULTS,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "usage": usage,
        }


def sse(data: dict[str, Any] | str, multiline: bool = False) -> bytes:
    if multiline and not isinstance(data, str):
        # pretty-printed: one `data:` line per line of JSON, as the SSE standard allows
        lines = json.dumps(data, indent=1).split("\n")
        return "".join(f"data: {line}\n" for line in lines).encode() + b"\n"
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


def usage_for(body: dict[str, Any], tokens: Sequence[str]) -> dict[str, int]:
    messages = request_messages(body)
    prompt = sum(len(word_tokens(message_text(m.get("content")))) + 4 for m in messages if isinstance(m, dict))
    return {"completion_tokens": len(tokens), "prompt_tokens": prompt, "total_tokens": prompt + len(tokens)}


def json_error(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """All three chat routes: check the route's rules and auth, record, then answer as scripted."""
    state = request.app[STATE_KEY]
    path = request.path
    raw = await request.read()
    try:
        body: Any = json.loads(raw) if raw else None
    except ValueError:
        body = None
    record: dict[str, Any] = {
        "id": next(state.ids),
        "path": path,
        "query": dict(request.query),
        "api_key": request.headers.get("api-key"),
        "authorization": request.headers.get("Authorization"),
        "deployment": request.match_info.get("deployment") or (body.get("model") if isinstance(body, dict) else None),
        "body": body,
        "status": 0,
        "outcome": "streaming",
        "tokens_sent": 0,
    }
    state.requests.append(record)

    def fail(status: int, error: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
        record["status"] = status
        record["outcome"] = "error"
        return json_error(status, error, headers)

    if "deployment" in request.match_info and "api-version" not in request.query:
        return fail(404, ERROR_BODIES[404])
    if not authorized(state, request):
        return fail(401, ERROR_BODIES[401])
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        error = {"code": "BadRequest", "message": "'messages' is a required property", "param": "messages"}
        return fail(400, {"error": {**error, "type": "invalid_request_error"}})
    script = plan(state, body)
    if script.error_body is not None:
        return fail(script.status, script.error_body, script.headers)

    model = str(request.match_info.get("deployment") or body.get("model") or "gpt-4o")
    completion = Completion(model)
    record["status"] = 200
    try:
        if body.get("stream"):
            return await stream_completion(request, record, script, completion)
        return await whole_completion(request, record, script, completion)
    except asyncio.CancelledError:
        # handler_cancellation: the client went away while we were still producing
        if record["outcome"] == "streaming":
            record["outcome"] = "aborted"
        raise


async def paced(script: Script) -> AsyncIterator[str]:
    for index, token in enumerate(script.tokens):
        if index and script.delay:
            await asyncio.sleep(script.delay)
        yield token


async def stream_completion(
    request: web.Request, record: dict[str, Any], script: Script, completion: Completion
) -> web.StreamResponse:
    """SSE the way Azure does: filter-only chunk, role chunk, one chunk per token, finish chunk, [DONE]."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "x-request-id": secrets.token_hex(16),
            "apim-request-id": secrets.token_hex(16),
        }
    )
    if script.hang:
        await asyncio.Event().wait()  # no status line, no headers, ever
    response.enable_chunked_encoding()
    await response.prepare(request)
    multiline = script.multiline
    try:
        if script.keepalive_only:
            while True:
                await response.write(KEEPALIVE_COMMENT)
                await asyncio.sleep(0.1)
        await response.write(sse(completion.prompt_filter_chunk(), multiline))
        await response.write(sse(completion.role_chunk(), multiline))
        if script.async_filter is not None:
            await stream_async_filtered(response, record, script, completion)
            record["outcome"] = "completed"
            return response
        async for token in paced(script):
            await response.write(sse(completion.token_chunk(token), multiline))
            record["tokens_sent"] += 1
        while script.runaway:
            await response.write(sse(completion.token_chunk(RUNAWAY_TOKEN)))
            record["tokens_sent"] += 1
            await asyncio.sleep(0)  # a reader that keeps up never makes write() wait
        if script.bad_content is not None:
            chunk = completion.token_chunk("")
            chunk["choices"][0]["delta"]["content"] = script.bad_content
            await response.write(sse(chunk))
        if script.truncated:
            await response.write_eof()  # a clean end of the body, mid-reply
            record["outcome"] = "truncated"
            return response
        if script.drop:
            # a transport failure mid-stream: no finish chunk, no [DONE], no chunked terminator
            record["outcome"] = "error"
            if request.transport is not None:
                request.transport.close()
            return response  # aiohttp finds the transport closed and skips the terminator
        await response.write(sse(completion.finish_chunk(script.finish_reason), multiline))
        stream_options = request_body(record).get("stream_options")
        if isinstance(stream_options, dict) and stream_options.get("include_usage"):
            await response.write(sse(completion.usage_chunk(usage_for(request_body(record), script.tokens))))
        await response.write(sse("[DONE]"))
        await response.write_eof()
    except ConnectionResetError:
        # served without handler_cancellation, a disconnect shows up as a failed write instead
        record["outcome"] = "aborted"
        return response
    record["outcome"] = "completed"
    return response


async def stream_async_filtered(
    response: web.StreamResponse, record: dict[str, Any], script: Script, completion: Completion
) -> None:
    """The tokens as Azure's asynchronous filter streams them: at once, each without filter
    results; after every ASYNC_FILTER_EVERY tokens an annotation of the text since the last one
    (offsets count characters from the start of the prompt). With "violation" the verdict on the
    last stretch comes late, as a content_filter finish, and the stream ends; with "pass" the
    reply finishes and the last annotation follows the finish, as in Azure's sample."""
    prompt = sum(
        len(message_text(m.get("content"))) for m in request_messages(request_body(record)) if isinstance(m, dict)
    )
    checked = sent = prompt
    pending = 0
    async for token in paced(script):
        await response.write(sse(completion.async_token_chunk(token)))
        record["tokens_sent"] += 1
        sent += len(token)
        pending += 1
        last = record["tokens_sent"] == len(script.tokens)
        if pending == ASYNC_FILTER_EVERY and not last:
            offsets = {"check_offset": sent, "start_offset": checked, "end_offset": sent}
            await response.write(sse(completion.annotation_chunk(offsets, SAFE_FILTER_RESULTS)))
            checked, pending = sent, 0
    offsets = {"check_offset": checked, "start_offset": checked, "end_offset": sent}
    if script.async_filter == "violation":
        await response.write(sse(completion.annotation_chunk(offsets, SAFE_FILTER_RESULTS)))
        await asyncio.sleep(ASYNC_FILTER_VERDICT_DELAY)
        await response.write(sse(completion.annotation_chunk(offsets, PROTECTED_MATERIAL_FILTERED, "content_filter")))
    else:
        await response.write(sse(completion.chunk([{"index": 0, "finish_reason": "stop", "delta": {}}], usage=None)))
        offsets["check_offset"] = sent
        await response.write(sse(completion.annotation_chunk(offsets, SAFE_FILTER_RESULTS)))
        stream_options = request_body(record).get("stream_options")
        if isinstance(stream_options, dict) and stream_options.get("include_usage"):
            await response.write(sse(completion.usage_chunk(usage_for(request_body(record), script.tokens))))
    await response.write(sse("[DONE]"))
    await response.write_eof()


async def whole_completion(
    request: web.Request, record: dict[str, Any], script: Script, completion: Completion
) -> web.StreamResponse:
    """A non-streaming `chat.completion`; produced at the same pace so a disconnect still cancels it."""
    tokens = [token async for token in paced(script)]
    record["tokens_sent"] = len(tokens)
    if script.drop:
        # the connection dies before any response bytes
        record["outcome"] = "error"
        if request.transport is not None:
            request.transport.close()
        return web.Response()
    body = completion.completion("".join(tokens), script.finish_reason, usage_for(request_body(record), tokens))
    response = web.json_response(body, headers={"x-request-id": secrets.token_hex(16)})
    record["outcome"] = "completed"
    return response


def request_body(record: dict[str, Any]) -> dict[str, Any]:
    body = record["body"]
    return body if isinstance(body, dict) else {}


async def msi_token(request: web.Request) -> web.Response:
    """App Service managed identity (api-version 2019-08-01): GET ?api-version=&resource=, X-IDENTITY-HEADER."""
    state = request.app[STATE_KEY]
    record: dict[str, Any] = {
        "id": len(state.token_requests) + 1,
        "query": dict(request.query),
        "headers": {
            name.lower(): request.headers[name]
            for name in ("X-IDENTITY-HEADER", "Metadata", "User-Agent")
            if name in request.headers
        },
        "status": 200,
    }
    state.token_requests.append(record)
    if request.headers.get("X-IDENTITY-HEADER") != state.identity_header:
        record["status"] = 401
        return web.json_response(
            {"statusCode": 401, "message": "Unauthorized request: missing or wrong X-IDENTITY-HEADER."}, status=401
        )
    resource = request.query.get("resource")
    if request.query.get("api-version") != MSI_API_VERSION or not resource:
        record["status"] = 400
        return web.json_response(
            {"error": "invalid_request", "error_description": "api-version=2019-08-01 and resource are required."},
            status=400,
        )
    return web.json_response(
        {
            "access_token": state.bearer_token,
            "expires_on": str(int(time.time()) + 3600),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": "00000000-0000-0000-0000-000000000000",
        }
    )


async def list_requests(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE_KEY].requests)


async def list_token_requests(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE_KEY].token_requests)


async def reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset()
    return web.json_response({"ok": True})


def create_fake_app(
    api_key: str = DEFAULT_API_KEY,
    bearer_token: str = DEFAULT_BEARER_TOKEN,
    identity_header: str = DEFAULT_IDENTITY_HEADER,
    token_delay: float = DEFAULT_TOKEN_DELAY,
) -> web.Application:
    """The fake as an app; serve it with `handler_cancellation=True` so disconnects are recorded as aborts."""
    app = web.Application()
    app[STATE_KEY] = FakeState(
        api_key=api_key, bearer_token=bearer_token, identity_header=identity_header, token_delay=token_delay
    )
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", chat_completions)
    app.router.add_post("/openai/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/msi/token", msi_token)
    app.router.add_get("/_fake/requests", list_requests)
    app.router.add_get("/_fake/token-requests", list_token_requests)
    app.router.add_post("/_fake/reset", reset)
    return app


def fake_state(app: web.Application) -> FakeState:
    """In-process access to the records, without going through the control API."""
    return app[STATE_KEY]


async def start_fake(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    """Serve `app` with handler cancellation on; returns the runner (to clean up) and the bound port."""
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=2, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = int(runner.addresses[0][1])
    return runner, bound


async def serve(args: argparse.Namespace) -> None:
    app = create_fake_app(
        api_key=args.api_key,
        bearer_token=args.bearer_token,
        identity_header=args.identity_header,
        token_delay=args.token_delay,
    )
    runner, port = await start_fake(app, args.host, args.port)
    print(f"listening on http://{args.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.fake_ai", description="Fake Azure OpenAI for tests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--bearer-token", default=DEFAULT_BEARER_TOKEN)
    parser.add_argument("--identity-header", default=DEFAULT_IDENTITY_HEADER)
    parser.add_argument("--token-delay", type=float, default=DEFAULT_TOKEN_DELAY, help="seconds between tokens")
    asyncio.run(serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
