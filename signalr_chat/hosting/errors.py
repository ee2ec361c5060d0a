"""The error a startup reports in one line: the settings ask for something the process cannot do."""

from __future__ import annotations


class ConfigurationError(ValueError):
    """The settings name a feature (a provider, a backplane, an exporter) but leave out something
    it needs, or its extra is not installed; `python -m signalr_chat` prints it and exits 1."""
