"""Requests aiohttp cannot parse are the client's fault: logged at DEBUG, as Kestrel does.

aiohttp answers them itself (400 with the parser's reason) and then logs "Error handling
request" at ERROR with a traceback: a 100 KB header or a stray byte in the URL from anyone
on the network would fill the log with tracebacks that point at no bug. This filter, on
aiohttp's server logger, turns exactly those records (the exception is one of aiohttp's
`BadHttpMessage` parse errors) into one DEBUG line with the reason, escaped; errors of the
server's own, such as a handler that raised, stay at ERROR with their traceback.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import BadHttpMessage

from ..signalr.untrusted import Untrusted

#: The logger aiohttp's request handler writes "Error handling request" to.
AIOHTTP_SERVER_LOGGER = "aiohttp.server"


class BadRequestsAtDebug(logging.Filter):
    """Turns aiohttp's ERROR record for a request it could not parse into one DEBUG line, so a
    malformed request from anyone on the network never fills the log with tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, BadHttpMessage):
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.msg, record.args = "%s: %s", (record.getMessage(), Untrusted(error.message))
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        record.exc_info, record.exc_text = None, None
        return True


def log_bad_requests_at_debug() -> None:
    """Install the filter once (idempotent: the server may be started more than once)."""
    logger = logging.getLogger(AIOHTTP_SERVER_LOGGER)
    if not any(isinstance(f, BadRequestsAtDebug) for f in logger.filters):
        logger.addFilter(BadRequestsAtDebug())
