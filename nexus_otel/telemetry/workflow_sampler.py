"""Per-workflow head sampling: a new trace of a listed workflow is kept at that workflow's ratio.

``NEXUS_OTEL_WORKFLOW_SAMPLING="checkout=0.1,health=0"`` (or ``Nexus(workflow_sampling={...})``) gives
some workflows a head sampling ratio of their own; every other trace is decided by the configured head
sampler (``OTEL_TRACES_SAMPLER``) as before. A health check polled every second stops filling the
trace store, and a busy checkout keeps a tenth of its traces, while their records and metrics stay exact
(records are never sampled).

:class:`WorkflowSampler` decides at a trace's root, so it must know the workflow there:

- on the Python API the workflow span is the root, and its start attributes carry ``nexus.workflow.name``;
- over HTTP the root is the SERVER span, started before routing: the HTTP middleware puts the workflow
  the request path names (:func:`workflow_in_path`) into the context it starts that span in
  (:func:`with_workflow`), and the sampler reads it there.

A span with a parent is not a new trace. A local parent's decision is followed, so a trace's spans are
kept or dropped together (the workflow span of a kept SERVER span is kept). A remote parent, a
caller's ``traceparent``, is left to the configured head sampler: with the default parent-based
samplers the caller's sampled flag decides, as it does without per-workflow ratios, so a distributed
trace stays whole.

Decisions look at the trace id as ``TraceIdRatioBased`` does: the same trace always gets the same
answer, and a tail sampling ratio of the same trace nests inside the head one instead of multiplying.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from . import contract as c

log = logging.getLogger("nexus_otel.telemetry")

SETTING = "NEXUS_OTEL_WORKFLOW_SAMPLING"
_WORKFLOW_KEY = context_api.create_key("nexus_otel.sampled_workflow")
# POST /workflows/{name} (the HTTP channel) and POST /workflows/{name}/execute (Kailash Nexus), under any mount.
_WORKFLOW_PATH = re.compile(r"/workflows/([^/]+)(?:/execute)?/?$")


def workflow_in_path(path: str) -> str | None:
    """The workflow a request path names, or None: ``/workflows/{name}`` and ``/workflows/{name}/execute``."""
    match = _WORKFLOW_PATH.search(path)
    return match.group(1) if match else None


def with_workflow(context: Context, path: str) -> Context:
    """``context`` telling the sampler which workflow the request at ``path`` runs (unchanged if none)."""
    name = workflow_in_path(path)
    return context if name is None else context_api.set_value(_WORKFLOW_KEY, name, context)


class WorkflowSampler(Sampler):
    """The head sampler of a new trace: ``TraceIdRatioBased(ratio)`` for a listed workflow, ``head`` otherwise.

    ``WorkflowSampler({"checkout": 0.1}, head)``; see the module's docstring for parents.
    """

    def __init__(self, ratios: Mapping[str, float], head: Sampler) -> None:
        self.head = head
        self.ratios = dict(ratios)
        self._by_workflow: dict[str, Sampler] = {name: TraceIdRatioBased(r) for name, r in self.ratios.items()}

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = trace_api.get_current_span(parent_context).get_span_context()
        sampler: Sampler | None
        if parent.is_valid:
            # A local parent was decided at the root: follow it. A caller's is the head sampler's to judge.
            sampler = self.head if parent.is_remote else (ALWAYS_ON if parent.trace_flags.sampled else ALWAYS_OFF)
        else:
            workflow: object = attributes.get(c.WORKFLOW_NAME) if attributes else None
            if workflow is None:
                workflow = context_api.get_value(_WORKFLOW_KEY, parent_context)
            sampler = self._by_workflow.get(workflow) if isinstance(workflow, str) else None
            if sampler is None:
                sampler = self.head
        return sampler.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        ratios = ",".join(f"{name}={ratio}" for name, ratio in self.ratios.items())
        return f"WorkflowSampler{{{ratios};{self.head.get_description()}}}"


def warn_unregistered(ratios: Iterable[tuple[str, float]], registered: Iterable[str]) -> list[str]:
    """Log one warning naming the listed workflows no app registered (a typo samples nothing); returns them."""
    known = set(registered)
    missing = [name for name, _ in ratios if name not in known]
    if missing:
        log.warning("%s lists workflows that are not registered: %s (their ratio applies to nothing)",
                    SETTING, ", ".join(missing))
    return missing
