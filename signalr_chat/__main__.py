"""`python -m signalr_chat [--options]` serves the chat; `--help` lists every setting."""

from __future__ import annotations

import sys

from dotenv import load_dotenv
from pydantic import ValidationError

from .command_line import parse_settings
from .json_logging import configure_logging


def main() -> None:
    # .env into the environment too (never over it): azure-identity and the openai SDK
    # read their own variables (AZURE_CLIENT_ID, AZURE_TOKEN_CREDENTIALS, ...) from there
    load_dotenv(override=False)
    try:
        settings = parse_settings()
    except ValidationError as exc:
        sys.exit(f"error: invalid settings\n{exc}")
    configure_logging(settings.log_level, settings.log_format)

    from .ai import ConfigurationError
    from .app import create_app
    from .server import run
    from .telemetry_setup import configure

    try:
        telemetry = configure(settings)
        try:
            run(create_app(settings), settings.host, settings.port)
        finally:
            if telemetry is not None:
                telemetry.shutdown()  # the last spans and metrics leave before the process does
    except ConfigurationError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
