"""`python -m signalr_chat --help` as an operator reads it.

pydantic-settings builds the options from `Settings`; its placeholders spell the type
annotations (`{SecretStr,null}`), so they are replaced here by plain words, and the help
says where else a setting can come from, with an example to copy.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic_settings import CliSettingsSource

from .settings import Settings

PROG = "python -m signalr_chat"
DESCRIPTION = "Serve the AI chat over ASP.NET Core SignalR: the page at /, the hub at /chatHub and /chat."
EPILOG = """\
Every option is also an environment variable: its name in upper case with underscores
(--azure-openai-endpoint is AZURE_OPENAI_ENDPOINT, --port is PORT). Environment variables
may also sit in a .env file in the working directory. The command line wins over the
environment, and the environment over .env. OpenTelemetry reads its own OTEL_* variables.

example:
  export AZURE_OPENAI_ENDPOINT=https://my-resource.openai.azure.com AZURE_OPENAI_DEPLOYMENT=gpt-4o-mini
  python -m signalr_chat --host 0.0.0.0 --port 8080
"""

_PLACEHOLDERS: dict[Any, str] = {
    SecretStr: "SECRET",
    Path: "PATH",
    str: "TEXT",
    int: "INT",
    float: "NUMBER",
}


def placeholder(annotation: Any) -> str | None:
    """A word for the value an option takes; None where argparse's own is fine (flags, choices)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kept = [a for a in args if a is not type(None)]
        if len(kept) == 1:
            return placeholder(kept[0])
        return None
    if typing.get_origin(annotation) is typing.Literal:
        return "{" + ",".join(str(a) for a in args) + "}"
    return _PLACEHOLDERS.get(annotation)


def parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    """Settings from the command line (`argv`, default sys.argv), the environment and .env."""
    root = parser()
    source: CliSettingsSource[Any] = CliSettingsSource(Settings, root_parser=root)
    by_dest = {name: placeholder(field.annotation) for name, field in Settings.model_fields.items()}
    for action in root._actions:  # argparse keeps its options only there
        word = by_dest.get(action.dest)
        if word is not None and action.metavar is not None:
            action.metavar = word
        if action.help:
            action.help = action.help.replace("(default: null)", "(default: unset)").replace(
                "(default: )", "(default: empty)"
            )
    args = True if argv is None else list(argv)
    return Settings(_cli_settings_source=source(args=args))  # type: ignore[call-arg]
