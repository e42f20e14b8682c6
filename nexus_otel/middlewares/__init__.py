"""Execution middleware building blocks: they run inside the workflow span, around the function."""

from .cache import CacheMiddleware

__all__ = ["CacheMiddleware"]
