"""The package's version: one place, read by the package, its telemetry's instrumentation scope and the build."""

__version__ = "0.1.0"
