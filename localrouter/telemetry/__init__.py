"""Tracing (`telemetry:`, the optional extra localrouter[otel]): one span per client request
and a child per upstream attempt, named and attributed per OpenTelemetry's GenAI semantic
conventions, exported over OTLP/HTTP in batches off the event loop."""
