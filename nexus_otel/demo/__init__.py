"""The demo: an example app, and a driver that sends it traffic and reports what telemetry saw."""
