"""`python -m signalr_chat [--options]` serves the chat; `--help` lists every setting."""

from __future__ import annotations

import sys

try:
    from dotenv import load_dotenv
    from pydantic import ValidationError

    from .app.command_line import parse_settings
    from .app.settings import Settings
    from .hosting.http_guard import HttpLimits
    from .hosting.json_logging import configure_logging
except ModuleNotFoundError as missing:  # a core install: the SignalR library alone
    sys.exit(f"error: the chat needs the `chat` extra ({missing.name} is missing): pip install 'signalr-chat[chat]'")


def http_limits(settings: Settings) -> HttpLimits:
    return HttpLimits(
        request_header_timeout=settings.http_request_header_timeout_seconds,
        keep_alive_timeout=settings.http_keep_alive_timeout_seconds,
        min_request_body_rate=settings.http_min_request_body_rate,
        min_request_body_grace=settings.http_min_request_body_grace_seconds,
        max_connections=settings.http_max_connections,
    )


def main() -> None:
    # .env into the environment too (never over it): azure-identity and the openai SDK
    # read their own variables (AZURE_CLIENT_ID, AZURE_TOKEN_CREDENTIALS, ...) from there
    load_dotenv(override=False)
    try:
        settings = parse_settings()
    except ValidationError as exc:
        sys.exit(f"error: invalid settings\n{exc}")
    configure_logging(settings.log_level, settings.log_format)

    from .app.application import create_app
    from .app.telemetry_setup import configure
    from .hosting.errors import ConfigurationError
    from .hosting.server import run

    try:
        telemetry = configure(settings)
        try:
            run(create_app(settings), settings.host, settings.port, http_limits(settings))
        finally:
            if telemetry is not None:
                telemetry.shutdown()  # the last spans and metrics leave before the process does
    except ConfigurationError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
