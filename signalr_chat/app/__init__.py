"""The chat's composition root: the only package that reads the settings and chooses.

`application.create_app` builds the chat app from the `settings` (pydantic-settings: the
command line, the environment, `.env`; `command_line` writes `--help`): the model, where
history lives, the Redis backplane (`backplane`) or Azure SignalR Service (`azure_signalr`),
the graceful drain (`drain`), the page (`page`); `telemetry_setup` sets up the OpenTelemetry
SDK from OTEL_*. `python -m signalr_chat` (`signalr_chat.__main__`) runs it with
`signalr_chat.hosting`.

Within the package only `__main__` imports it (import-linter checks that the chat, the models,
hosting and the SignalR library never do). Its modules are imported one by one: this file
imports none of them, so `--help` never loads the model providers' SDKs.
"""
