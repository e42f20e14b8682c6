"""Channels: the ways a workflow is called (HTTP, command line), each setting ``nexus.channel``."""
