"""nexus-otel: a Nexus-style plugin host where every workflow and hook is an OpenTelemetry span."""

from ._version import __version__
from .app import Nexus
from .caller import Caller, Principal
from .errors import (
    AccessError,
    AppStateError,
    AuthenticationError,
    AuthorizationError,
    AuthUnavailableError,
    ConfigurationError,
    DuplicatePluginError,
    DuplicateWorkflowError,
    IntegrationError,
    InvalidInputsError,
    NexusOtelError,
    PluginError,
    PluginLoadError,
    PluginSetupError,
    PluginValidationError,
    RateLimitExceeded,
    RecordsUnavailableError,
    UnknownWorkflowError,
    WorkflowError,
    WorkflowRegistrationError,
)
from .events import WorkflowEvent
from .execution_middleware import Middleware, WorkflowCall
from .plugin_base import NexusPlugin, Plugin
from .plugin_manager import PluginHost, PluginManager
from .processors.tail_sampling import TailSampling
from .records import ExecutionRecord, RecordProcessor

__all__ = [
    "AccessError",
    "AppStateError",
    "AuthUnavailableError",
    "AuthenticationError",
    "AuthorizationError",
    "Caller",
    "ConfigurationError",
    "DuplicatePluginError",
    "DuplicateWorkflowError",
    "ExecutionRecord",
    "IntegrationError",
    "InvalidInputsError",
    "Middleware",
    "Nexus",
    "NexusOtelError",
    "NexusPlugin",
    "Plugin",
    "PluginError",
    "PluginHost",
    "PluginLoadError",
    "PluginManager",
    "PluginSetupError",
    "PluginValidationError",
    "Principal",
    "RateLimitExceeded",
    "RecordProcessor",
    "RecordsUnavailableError",
    "TailSampling",
    "UnknownWorkflowError",
    "WorkflowCall",
    "WorkflowError",
    "WorkflowEvent",
    "WorkflowRegistrationError",
    "__version__",
]
