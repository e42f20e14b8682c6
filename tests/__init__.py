"""nexus-otel test suite."""
