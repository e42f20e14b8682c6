"""nexus-otel: a Nexus-style plugin host where every workflow and hook is an OpenTelemetry span."""

__version__ = "0.1.0"

from .app import Nexus  # noqa: E402
from .caller import Caller, Principal  # noqa: E402
from .errors import NexusOtelError  # noqa: E402
from .events import WorkflowEvent  # noqa: E402
from .middleware import Middleware, WorkflowCall  # noqa: E402
from .plugin import NexusPlugin, PluginManager  # noqa: E402
from .processors.tail_sampling import TailSampling  # noqa: E402
from .records import ExecutionRecord, RecordProcessor  # noqa: E402

__all__ = [
    "Caller",
    "ExecutionRecord",
    "Middleware",
    "Nexus",
    "NexusOtelError",
    "NexusPlugin",
    "PluginManager",
    "Principal",
    "RecordProcessor",
    "TailSampling",
    "WorkflowCall",
    "WorkflowEvent",
    "__version__",
]
