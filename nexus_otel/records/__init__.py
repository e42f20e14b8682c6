"""Records: one per workflow execution, for every execution, never sampled and never dropped.

Traces are sampled; audit rows, webhook payloads, request-log records and
``MetricsPlugin`` figures must not be. They are built here from the execution
itself (not from its span) and handed to :class:`RecordProcessor` s on the
workflow's thread, before ``execute_workflow`` returns. See ``docs/records.md``.
"""

from .pipeline import RecordPipeline
from .processor import RecordProcessor
from .record import ExecutionRecord

__all__ = ["ExecutionRecord", "RecordPipeline", "RecordProcessor"]
