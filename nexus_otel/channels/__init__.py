"""Channels: the ways a workflow is called (HTTP, command line), each setting ``nexus.channel``."""

DEFAULT_THREADS = 32
"""Threads that run sync workflows (and other blocking calls) per server process: see ``benchmarks/RESULTS.md``."""
