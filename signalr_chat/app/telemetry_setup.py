"""The OpenTelemetry SDK, set up from the standard OTEL_* variables, when asked for.

The SDK and its exporters are the `[otel]` extra; the server itself needs only the API.
Each signal turns on only when something asks for it:
- traces: OTEL_TRACES_EXPORTER (`otlp`, `console`), or an OTLP endpoint
  (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
- metrics: OTEL_METRICS_EXPORTER (`otlp`, `console`, `prometheus`), an OTLP endpoint
  (OTEL_EXPORTER_OTLP_ENDPOINT or ..._METRICS_ENDPOINT), or METRICS_ENABLED (/metrics).
The exporters read the rest themselves (OTEL_EXPORTER_OTLP_HEADERS, OTEL_METRIC_EXPORT_INTERVAL,
...), the resource reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, and
OTEL_SDK_DISABLED=true turns everything off. With nothing asked for, no provider is set and
the server's instrumentation is never built.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace

from ..hosting.errors import ConfigurationError
from .settings import Settings

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "signalr-chat"
_INSTALL = "pip install 'signalr-chat[otel]'"


def exporters(environ: Mapping[str, str], signal: str) -> list[str]:
    """OTEL_{SIGNAL}_EXPORTER as a list; unset means OTLP when an endpoint is given, else none."""
    names = environ.get(f"OTEL_{signal}_EXPORTER")
    if names is None:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
        return ["otlp"] if endpoint else []
    return [name.strip().lower() for name in names.split(",") if name.strip() and name.strip().lower() != "none"]


@dataclass(slots=True)
class ConfiguredTelemetry:
    """The providers set globally, to flush and shut down when the server stops."""

    tracer_provider: Any | None
    meter_provider: Any | None

    def shutdown(self) -> None:
        for provider in (self.tracer_provider, self.meter_provider):
            if provider is not None:
                provider.shutdown()


def configure(settings: Settings, environ: Mapping[str, str] = os.environ) -> ConfiguredTelemetry | None:
    """Set the global tracer and meter providers that the settings and OTEL_* ask for."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    span_exporters = exporters(environ, "TRACES")
    metric_exporters = exporters(environ, "METRICS")
    if settings.metrics_enabled and "prometheus" not in metric_exporters:
        metric_exporters.append("prometheus")  # /metrics reads the Prometheus reader
    if not span_exporters and not metric_exporters:
        return None
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    except ImportError:
        raise ConfigurationError(
            f"OpenTelemetry is asked for (OTEL_* or METRICS_ENABLED) but its SDK is not installed: {_INSTALL}"
        ) from None
    resource = Resource.create({} if environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: DEFAULT_SERVICE_NAME})
    configured = ConfiguredTelemetry(None, None)
    if span_exporters:
        configured.tracer_provider = _tracer_provider(resource, span_exporters)
        trace.set_tracer_provider(configured.tracer_provider)
    if metric_exporters:
        configured.meter_provider = _meter_provider(resource, metric_exporters)
        metrics.set_meter_provider(configured.meter_provider)
    log.info("OpenTelemetry: traces to %s, metrics to %s", span_exporters or "nowhere", metric_exporters or "nowhere")
    return configured


def _tracer_provider(resource: Any, names: list[str]) -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=resource)
    for name in names:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        else:
            raise ConfigurationError(f"OTEL_TRACES_EXPORTER: unknown exporter '{name}' (otlp, console, none)")
    return provider


def _meter_provider(resource: Any, names: list[str]) -> Any:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricReader, PeriodicExportingMetricReader

    readers: list[MetricReader] = []
    for name in names:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        elif name == "console":
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
        elif name == "prometheus":
            from opentelemetry.exporter.prometheus import PrometheusMetricReader

            readers.append(PrometheusMetricReader())
        else:
            raise ConfigurationError(
                f"OTEL_METRICS_EXPORTER: unknown exporter '{name}' (otlp, console, prometheus, none)"
            )
    return MeterProvider(resource=resource, metric_readers=readers)
