"""What can go wrong upstream, as users should read it.

Texts never carry internals: the cause stays in the server log (`classify` logs it).
"""

from __future__ import annotations

import logging

import openai
from azure.core.exceptions import ClientAuthenticationError

log = logging.getLogger(__name__)


class AiError(Exception):
    """A failed model call as users should read it: `user_message` is safe to show, the cause stays in the log."""

    user_message = "An error occurred while generating the response. Please try again."


class AiFailed(AiError):
    """Any upstream failure users need not tell apart: the generic text, the cause logged."""

    pass


class AiBusy(AiError):
    """The provider is rate-limiting us (429): the user may try again shortly."""

    user_message = "The AI service is busy. Please wait a moment and try again."


class AiAuthFailed(AiError):
    """The provider or the identity refused our credentials: the administrator must act, not the user."""

    user_message = "AI service authentication failed. Contact the administrator."


class AiContentFiltered(AiError):
    """The provider's content policy refused the request: the user may rephrase it."""

    user_message = "The content was filtered by the AI service's content policy. Please rephrase your message."


class AiContentWithdrawn(AiContentFiltered):
    """Azure's asynchronous filter flagged text it had already streamed (the violation comes late,
    with the offsets of the text it covers): the reply is withdrawn, nothing of it kept or replayed."""


class AiTimedOut(AiFailed):
    """No first token, or no end, within the reply's deadlines: the generic text, the cause logged."""


class AiInterrupted(AiError):
    """The upstream stream ended without saying the reply was finished (no finish_reason, no [DONE])."""

    user_message = "The reply was interrupted before it was finished. Please try again."


class AiCutShort(AiError):
    """The reply stopped at a length limit (the provider reported `finish_reason: "length"`, or the
    built-in model reached its token limit): no failure of the text so far, which is kept and marked
    cut, so the user can ask for the rest (ContinueReply)."""

    user_message = "The reply was cut short because it reached the maximum length."


class AiReplyTooLong(AiCutShort):
    """The reply reached MAX_REPLY_LENGTH: what came so far is kept, the rest never asked for."""


class UnexpectedUpstream(ValueError):
    """The upstream sent something a chat completion stream never contains (logged, then AiFailed)."""


def _is_content_filter(exc: openai.APIStatusError) -> bool:
    if exc.code == "content_filter":
        return True
    body = exc.body if isinstance(exc.body, dict) else {}
    inner = body.get("innererror")
    return isinstance(inner, dict) and inner.get("code") == "ResponsibleAIPolicyViolation"


def classify(exc: Exception, provider: str) -> AiError:
    """Map an SDK or identity exception to an AiError, logging the real cause."""
    error: AiError
    if isinstance(exc, AiError):
        return exc
    if isinstance(exc, openai.RateLimitError):
        error = AiBusy()
    elif isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError | ClientAuthenticationError):
        error = AiAuthFailed()
    elif isinstance(exc, openai.BadRequestError) and _is_content_filter(exc):
        error = AiContentFiltered()
    else:
        error = AiFailed()
    status = getattr(exc, "status_code", None)
    log.warning(
        "%s request failed (%s%s): %s",
        provider,
        type(exc).__name__,
        f", HTTP {status}" if status else "",
        exc,
    )
    return error
