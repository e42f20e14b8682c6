"""The workflow registry: names to functions, checked when registered."""

from __future__ import annotations

import inspect
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import (
    DuplicateWorkflowError,
    InvalidInputsError,
    UnknownWorkflowError,
    WorkflowRegistrationError,
)
from .settings import number
from .telemetry import contract as c

WorkflowFn = Callable[[Any], Any]
"""A workflow: called with the inputs mapping (sync or ``async def``)."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")


@dataclass(slots=True)
class Workflow:
    """A registered workflow, with its span name and metric attributes built once."""

    name: str
    fn: WorkflowFn
    description: str = ""
    is_async: bool = False
    span_name: str = ""
    active_attributes: dict[str, str] = field(default_factory=dict)
    stuck_after: float | None = None
    """Seconds after which an execution is reported stuck (None: the app's default; 0: never)."""

    def metric_attributes(self, channel: str, status: str) -> dict[str, str]:
        """``{workflow, channel, status}`` (the executor keeps the series they bind)."""
        return {c.M_WORKFLOW: self.name, c.M_CHANNEL: channel, c.M_STATUS: status}


class WorkflowRegistry:
    """Thread-safe map of workflow names to :class:`Workflow`."""

    def __init__(self) -> None:
        self._workflows: dict[str, Workflow] = {}
        self._lock = threading.Lock()

    def register(self, name: str, fn: Any, *, replace: bool = False, stuck_after: float | None = None) -> Workflow:
        """Register ``fn`` under ``name``; ``stuck_after`` seconds (0: never; None: the app's default) after
        which an execution of it is reported stuck."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise WorkflowRegistrationError(
                str(name), "a workflow name is 1 to 128 letters, digits, or _ . : - "
                "(starting with a letter or digit)",
            )
        if isinstance(fn, type) or not callable(fn):
            raise WorkflowRegistrationError(name, f"expected a function taking the inputs dict, got {fn!r}")
        if stuck_after is not None:
            stuck_after = float(number(f"stuck_after (workflow {name!r})", stuck_after, minimum=0))
        doc = inspect.getdoc(fn) or ""
        workflow = Workflow(
            name=name, fn=fn, description=doc.splitlines()[0] if doc else "",
            is_async=inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
                getattr(fn, "__call__", None)  # noqa: B004 - an object's async __call__, not a callable check
            ),
            span_name=c.WORKFLOW_SPAN.format(workflow=name),
            active_attributes={c.M_WORKFLOW: name},
            stuck_after=stuck_after,
        )
        with self._lock:
            if name in self._workflows and not replace:
                raise DuplicateWorkflowError(name, "already registered (pass replace=True to replace it)")
            self._workflows[name] = workflow
        return workflow

    def get(self, name: str) -> Workflow:
        try:
            return self._workflows[name]
        except (KeyError, TypeError):
            known = ", ".join(sorted(self._workflows)) or "none"
            raise UnknownWorkflowError(str(name), f"not registered (registered: {known})") from None

    def names(self) -> list[str]:
        return sorted(self._workflows)

    def __contains__(self, name: object) -> bool:
        return name in self._workflows

    def __iter__(self) -> Iterator[Workflow]:
        return iter(list(self._workflows.values()))

    def __len__(self) -> int:
        return len(self._workflows)


def check_inputs(workflow: str, inputs: Any) -> Mapping[str, Any]:
    """``None`` means no inputs; anything else must be a mapping."""
    if inputs is None:
        return {}
    if not isinstance(inputs, Mapping):
        raise InvalidInputsError(workflow, f"inputs must be a dict, got {type(inputs).__name__}")
    return inputs
