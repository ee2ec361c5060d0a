"""The composed chat app in process: startup and its cleanup, OpenTelemetry."""
