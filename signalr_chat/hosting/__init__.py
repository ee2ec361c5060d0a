"""Hosting any hub app: what runs around the SignalR library, and knows nothing of the chat.

`run` serves an aiohttp app on uvloop with prompt disconnect detection, Kestrel's limits on
slow, idle and surplus connections (`http_guard`), bad requests logged at DEBUG
(`bad_requests`) and a graceful drain on SIGTERM (`DRAIN`); `Health` answers `/healthz` and
`/readyz`; `configure_logging` writes text or JSON lines (`json_logging`);
`ConfigurationError` is a startup error in one line. Those need only the core dependencies.
Imported apart, as they need more: `jwt_auth` (PyJWT) validates HS256 bearer tokens,
`metrics_endpoint` (prometheus-client) serves `/metrics`.

It imports the SignalR library and never the chat, the models or the app (import-linter
checks it).
"""

from .errors import ConfigurationError
from .health import Health
from .http_guard import HttpLimits
from .json_logging import configure_logging
from .server import DRAIN, run, serve

__all__ = ["DRAIN", "ConfigurationError", "Health", "HttpLimits", "configure_logging", "run", "serve"]
