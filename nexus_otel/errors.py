"""The exceptions nexus-otel raises, one tree under :class:`NexusOtelError`.

Every exception names what is at fault: the setting, the plugin, the file or
the workflow, so a log line alone tells a user what to fix::

    NexusOtelError
    ├── ConfigurationError          a setting has a bad value (also ValueError)
    │   └── UnknownSettingError     a plugin's ``config`` names a setting it lacks (also TypeError)
    ├── UsageError                  an API was handed the wrong kind of object (also TypeError)
    ├── PluginError                 a plugin is at fault; ``.plugin`` names it
    │   ├── PluginValidationError   not a usable plugin object (also TypeError)
    │   ├── DuplicatePluginError    name already registered (also ValueError)
    │   ├── PluginSetupError        ``setup(app)`` raised; nothing was kept
    │   ├── PluginLoadError         a plugin file or entry point failed to load
    │   ├── PluginNotSetUpError     used before it was added to an app (also RuntimeError)
    │   └── UnknownHookEventError   a hook for an event that does not exist (also ValueError)
    ├── WorkflowError               a workflow is at fault; ``.workflow`` names it
    │   ├── UnknownWorkflowError    no workflow by that name (also LookupError)
    │   ├── WorkflowRegistrationError  bad name or not callable (also TypeError)
    │   ├── DuplicateWorkflowError  name already registered (also ValueError)
    │   └── InvalidInputsError      inputs are not a mapping (also TypeError)
    ├── AppStateError               the app cannot do that now (also RuntimeError)
    ├── SpanAlreadyOpenError        a ``start_as_current_span`` object entered twice (also RuntimeError)
    ├── ServerError                 the HTTP server did not start, or answered wrongly (also RuntimeError)
    ├── IntegrationError            a framework we instrument moved what we hook into
    ├── InvalidDataError            a file, message or URL is not well formed (also ValueError)
    │   └── UnencodableValueError   a value OTLP cannot carry (also TypeError)
    ├── AmbiguousTraceIdError       a trace id prefix matches several traces (also ValueError)
    ├── AccessError                 a caller was turned away; ``.reason`` says why
    │   ├── AuthenticationError     no or bad credentials (HTTP 401)
    │   ├── AuthorizationError      valid credentials, not allowed (HTTP 403)
    │   └── AuthUnavailableError    the identity provider cannot be reached (HTTP 503)
    ├── RateLimitExceeded           over the limit; ``.retry_after`` seconds (HTTP 429)
    └── RecordsUnavailableError     records cannot be made durable (HTTP 503); ``.path`` names the outbox

Exceptions raised by a workflow function itself are never wrapped: callers get
their own exception back, unchanged.
"""

from __future__ import annotations

from typing import Any


class NexusOtelError(Exception):
    """Base of every exception raised by nexus-otel itself."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as its class, message and attributes, rebuilt without calling the class's own __init__ (whose
        # parameters are not its args): an error crosses a process boundary whole (a process pool, multiprocessing).
        return (_rebuilt, (type(self), self.args, self.__dict__))


def _rebuilt(cls: type[NexusOtelError], args: tuple[Any, ...], state: dict[str, Any]) -> NexusOtelError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class ConfigurationError(NexusOtelError, ValueError):
    """A setting or argument has a value that cannot work: raised where it is given (the settings at start), naming
    the setting, the value and what was expected."""

    def __init__(self, setting: str, value: Any, expected: str) -> None:
        self.setting = setting
        self.value = value
        self.expected = expected
        super().__init__(f"invalid {setting}={value!r}: expected {expected}")


class UnknownSettingError(ConfigurationError, TypeError):
    """A plugin's ``config`` dict names settings the plugin does not have.

    Kailash Nexus's plugin API passes some plugins a ``config`` dict instead of keywords: a key
    that is not a setting is a TypeError too, as an unknown keyword argument would be.
    """

    def __init__(self, plugin: str, unknown: list[str], known: list[str]) -> None:
        self.plugin = plugin
        self.setting = f"{plugin} config"
        self.value = unknown
        settings = ", ".join(known) or "none"
        self.expected = f"settings among {settings}"
        NexusOtelError.__init__(self, f"{plugin}: unknown settings {unknown}; its settings are {settings}")


class UsageError(NexusOtelError, TypeError):
    """An API was handed an object of the wrong kind: a class where an instance is needed, something
    that is not callable, an object that is not an app. A programming error, raised at the call; the
    message names what was expected and what was given."""


class PluginError(NexusOtelError):
    """A plugin is at fault; ``plugin`` is its name (or its class name)."""

    def __init__(self, plugin: str, message: str) -> None:
        self.plugin = plugin
        super().__init__(f"plugin {plugin!r}: {message}")


class PluginValidationError(PluginError, TypeError):
    """The object given is not a usable plugin (no name, not an instance, ...)."""


class DuplicatePluginError(PluginError, ValueError):
    """A plugin with this name is already registered."""


class PluginSetupError(PluginError):
    """``setup(app)`` raised; the hooks it had registered were removed again."""


class PluginLoadError(PluginError):
    """A plugin file or entry point could not be loaded; ``source`` names it."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        NexusOtelError.__init__(self, f"cannot load plugins from {source}: {message}")
        self.plugin = source


class PluginNotSetUpError(PluginError, RuntimeError):
    """A plugin method that needs the plugin's app (its cache, its outbox) was called before the plugin was
    added to an app."""


class UnknownHookEventError(PluginError, ValueError):
    """A hook was registered for an event that does not exist; ``plugin`` is the plugin registering it
    (``app`` outside any plugin)."""


class WorkflowError(NexusOtelError):
    """A workflow is at fault; ``workflow`` is its name."""

    def __init__(self, workflow: str, message: str) -> None:
        self.workflow = workflow
        super().__init__(f"workflow {workflow!r}: {message}")


class UnknownWorkflowError(WorkflowError, LookupError):
    """No workflow is registered under this name."""

    def __str__(self) -> str:  # LookupError would quote the message again
        return str(self.args[0])


class WorkflowRegistrationError(WorkflowError, TypeError):
    """The workflow name or function is not usable."""


class DuplicateWorkflowError(WorkflowError, ValueError):
    """A workflow with this name is already registered."""


class InvalidInputsError(WorkflowError, TypeError):
    """Workflow inputs must be a mapping of names to values."""


class AppStateError(NexusOtelError, RuntimeError):
    """The app is in a state where this call cannot work (e.g. already stopped)."""


class SpanAlreadyOpenError(NexusOtelError, RuntimeError):
    """One ``start_as_current_span(...)`` object was entered again while open, as the OpenTelemetry API
    refuses too: its first span would end early. Call ``start_as_current_span`` again instead."""


class ServerError(NexusOtelError, RuntimeError):
    """nexus-otel's HTTP server is not serving as it must: it did not start on its address (the port is
    taken, say), or the demo's driver got an answer the server never gives."""


class IntegrationError(NexusOtelError, RuntimeError):
    """A framework nexus-otel instruments (Kailash) lacks a point it wraps: ``.point`` names it."""

    def __init__(self, point: str, message: str) -> None:
        self.point = point
        super().__init__(f"{point}: {message}")


class InvalidDataError(NexusOtelError, ValueError):
    """Data from outside is not well formed: a line of a span or log file, a counts file, a destinations
    snapshot or a worker's metrics that are not in the format nexus-otel writes, or a URL that cannot be
    requested. The message says what is wrong (never showing a URL's credentials); readers that skip
    damaged data catch it as ValueError."""


class UnencodableValueError(InvalidDataError, TypeError):
    """A telemetry value that OTLP cannot carry (an integer beyond 64 bits, a type with no OTLP field);
    a TypeError or ValueError as protobuf's own encoder raises, with protobuf's message."""


class AmbiguousTraceIdError(NexusOtelError, ValueError):
    """A trace id prefix matches more than one trace in the local stores: give more digits."""

    def __init__(self, prefix: str, matches: int) -> None:
        self.prefix = prefix
        self.matches = matches
        super().__init__(f"trace id prefix {prefix!r} matches {matches} traces; give more digits")


class AccessError(NexusOtelError, PermissionError):
    """A caller was turned away. ``reason`` is a short code (``expired``, ``bad_audience``, ...).

    Messages never contain the credentials themselves.
    """

    status = 403

    def __init__(self, reason: str, message: str, *, workflow: str | None = None) -> None:
        self.reason = reason
        self.workflow = workflow
        super().__init__(message)


class AuthenticationError(AccessError):
    """No credentials, or credentials that do not verify (HTTP 401)."""

    status = 401


class AuthorizationError(AccessError):
    """Verified credentials without the scopes the workflow requires (HTTP 403)."""

    status = 403


class AuthUnavailableError(AccessError):
    """The identity provider (its discovery document or key set) cannot be reached: not the caller's fault."""

    status = 503


class RateLimitExceeded(NexusOtelError):
    """Over the rate limit; try again in ``retry_after`` seconds (HTTP 429)."""

    def __init__(self, workflow: str, *, limit: int, remaining: int, reset: float, retry_after: int) -> None:
        self.workflow = workflow
        self.limit = limit
        self.remaining = remaining
        self.reset = reset
        self.retry_after = retry_after
        super().__init__(f"workflow {workflow!r}: rate limit of {limit} exceeded; retry in {retry_after} s")


class RecordsUnavailableError(NexusOtelError):
    """An execution's durable records (webhooks, audit rows) cannot be written: its outbox's disk is full,
    read-only or gone (HTTP 503 with ``Retry-After``).

    nexus-otel promises that an execution that returns has its records on disk, so it fails closed:
    ``ran`` is False when the execution was refused before its workflow ran (the outbox was already
    known unwritable), True when the workflow ran and only the write of its records failed (its
    effects happened; its records are lost). ``path`` names the outbox, ``reason`` what the write met,
    ``workflow`` the workflow (None for a put outside an execution); try again after ``retry_after``
    seconds. A sink set to ``on_unavailable="drop"`` never raises this (its records are dropped, counted).
    """

    status = 503

    def __init__(self, path: str, reason: str, *, workflow: str | None = None, ran: bool = False,
                 retry_after: int = 5) -> None:
        self.path = path
        self.reason = reason
        self.workflow = workflow
        self.ran = ran
        self.retry_after = retry_after
        where = f"outbox {path} is not writable ({reason})"
        if workflow is None:
            message = f"records cannot be made durable: {where}"
        elif ran:
            message = f"workflow {workflow!r} ran, but its records could not be made durable: {where}"
        else:
            message = f"workflow {workflow!r} was not run: its records cannot be made durable: {where}"
        super().__init__(message)

    def of(self, workflow: str, *, ran: bool) -> RecordsUnavailableError:
        """The same failure, told of ``workflow`` (``ran``: whether it ran before its records failed)."""
        return RecordsUnavailableError(self.path, self.reason, workflow=workflow, ran=ran,
                                       retry_after=self.retry_after)
