"""Finding a user's app from a ``MODULE:APP`` string, with errors that say what to fix."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from .app import Nexus
from .errors import ConfigurationError


def load_app(target: str) -> Nexus:
    """Import ``module:attribute`` and return the :class:`Nexus` it names.

    The attribute may be an app or a function returning one. The working
    directory is importable, as with ``python -m``.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError("APP", target, "MODULE:ATTRIBUTE, for example myproject.app:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigurationError("APP", target, f"an importable module ({exc})") from exc
        raise
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigurationError("APP", target, f"module {module_name!r} to have {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, Nexus) and callable(obj):
        obj = obj()
    if not isinstance(obj, Nexus):
        raise ConfigurationError("APP", target, f"a Nexus app (or a function returning one), got {type(obj).__name__}")
    return obj
