"""`python -m signalr_chat [--options]` serves the chat; `--help` lists every setting."""

from __future__ import annotations

import logging

from .settings import Settings


def main() -> None:
    settings = Settings(_cli_parse_args=True)  # type: ignore[call-arg]
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from .app import create_app
    from .server import run

    run(create_app(settings), settings.host, settings.port)


if __name__ == "__main__":
    main()
