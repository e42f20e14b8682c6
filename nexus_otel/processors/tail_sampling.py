"""In-process tail sampling: keep whole traces that failed, were slow, or were asked for; a ratio of the rest.

A head sampler decides when a trace starts, before anyone knows whether it
will fail or be slow. :class:`TailSamplingProcessor` sits behind redaction and
in front of the trace exporters. It buffers each trace's ended spans and
decides when the trace's *local root* ends (a span whose parent is None or
remote), before any span of it reaches an exporter, so nothing of a dropped
trace is ever encoded. Reasons, first match wins:

1. ``error``: any buffered span of the trace has status ERROR;
2. ``slow``: the local root took at least ``slow_ms``;
3. ``parent``: the root's remote parent (a caller's ``traceparent``) had the
   sampled flag and the head sampler sampled: distributed traces stay whole;
4. ``ratio``: a trace the head sampler sampled, with no remote parent, is
   kept when its trace id passes ``ratio``, tested exactly as the SDK's
   ``TraceIdRatioBased`` does (the low 64 bits), so a trace id always gets the
   same answer and a head ratio and a tail ratio nest instead of multiplying.

Everything else (a caller's ``traceparent`` without the sampled flag, a trace
the head sampler dropped, a trace that lost the ratio) is dropped unless it
failed or was slow. To make that possible the head sampler is wrapped in
:class:`RecordingSampler`, which turns DROP into RECORD_ONLY; kept spans of
such traces are passed on as copies with the sampled flag set, since the SDK's
span processors ignore unsampled spans.

A kept trace's local root is passed on as a copy carrying
``nexus.sampling.reason``. Spans that end after their trace was decided (a
child ending after its root, a second local root of the same trace) follow
the recorded decision. Every span is counted once in
``nexus.telemetry.spans{exporter="tail_sampling"}`` with outcome ``kept``,
``sampled_out``, ``overflow`` (dropped by the memory bound) or ``unfinished``
(still buffered at shutdown).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, SpanContext, SpanKind, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from ..errors import ConfigurationError
from ..settings import number
from ..telemetry.contract import WORKFLOW_NAME
from .children import WrappingSpanProcessor

SAMPLING_REASON = "nexus.sampling.reason"
"""Span attribute on a kept trace's local root: ``error``, ``slow``, ``parent`` or ``ratio``."""

ERROR, SLOW, PARENT, RATIO = "error", "slow", "parent", "ratio"
REASONS = (ERROR, SLOW, PARENT, RATIO)
# Outcomes in nexus.telemetry.spans{exporter="tail_sampling"}.
KEPT, SAMPLED_OUT, OVERFLOW, UNFINISHED = "kept", "sampled_out", "overflow", "unfinished"
EXPORTER_NAME = "tail_sampling"

_LOW_64 = TraceIdRatioBased.TRACE_ID_LIMIT
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


@dataclass(frozen=True, slots=True)
class TailSampling:
    """What the tail sampler keeps.

    ``ratio``: the share (0 to 1) of traces kept when nothing else keeps them.
    ``slow_ms``: a local root at least this long is always kept (None: no threshold).
    ``per_workflow``: a workflow name to the ``TailSampling`` whose ``ratio`` and
    ``slow_ms`` apply to its traces instead (their own ``max_buffered_spans`` is not used).
    ``max_buffered_spans``: how many ended spans may wait for their trace's decision.
    """

    ratio: float = 1.0
    slow_ms: float | None = None
    per_workflow: Mapping[str, TailSampling] = field(default_factory=dict)
    max_buffered_spans: int = 20_000

    def __post_init__(self) -> None:
        self._check("TailSampling")
        number("TailSampling.max_buffered_spans", self.max_buffered_spans, minimum=1, integer=True)
        if not isinstance(self.per_workflow, Mapping):
            raise ConfigurationError("TailSampling.per_workflow", self.per_workflow,
                                     "a mapping of workflow names to TailSampling")
        for name, override in self.per_workflow.items():
            setting = f"TailSampling.per_workflow[{name!r}]"
            if not isinstance(name, str) or not name:
                raise ConfigurationError("TailSampling.per_workflow", name,
                                         "workflow names (non-empty strings) as keys")
            if not isinstance(override, TailSampling):
                raise ConfigurationError(setting, override, "a TailSampling (ratio and slow_ms for this workflow)")
            if override.per_workflow:
                raise ConfigurationError(f"{setting}.per_workflow", dict(override.per_workflow),
                                         "an empty mapping (overrides do not nest)")
        # A read-only copy: changing the caller's dict later must not change a running policy.
        object.__setattr__(self, "per_workflow", MappingProxyType(dict(self.per_workflow)))

    def _check(self, prefix: str) -> None:
        number(f"{prefix}.ratio", self.ratio, minimum=0, maximum=1)
        slow = self.slow_ms
        if slow is not None and (
            isinstance(slow, bool) or not isinstance(slow, (int, float)) or not 0 <= slow < float("inf")
        ):
            raise ConfigurationError(f"{prefix}.slow_ms", slow, "None (no threshold) or a number of at least 0")

    def for_workflow(self, workflow: str | None) -> TailSampling:
        """The policy whose ratio and slow_ms apply to a trace of ``workflow``."""
        if workflow is None:
            return self
        return self.per_workflow.get(workflow, self)


class RecordingSampler(Sampler):
    """The configured head sampler, except that its DROP becomes RECORD_ONLY.

    Spans of head-dropped traces are then recorded (unsampled) and reach the
    tail sampler, which can still keep them when they fail or are slow. The
    SDK's samplers return no attributes with DROP, so the span's own start
    attributes are put back: a kept span must not lose them.
    """

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler

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
        result = self.sampler.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)
        if result.decision is not Decision.DROP:
            return result
        merged = dict(attributes) if attributes else {}
        merged.update(result.attributes)
        return SamplingResult(Decision.RECORD_ONLY, merged, result.trace_state)

    def get_description(self) -> str:
        return f"RecordingSampler{{{self.sampler.get_description()}}}"


class _Rule:
    """One policy, precomputed for the hot path: the ratio bound and the threshold in nanoseconds."""

    __slots__ = ("bound", "slow_ns")

    def __init__(self, policy: TailSampling) -> None:
        self.bound = TraceIdRatioBased.get_bound_for_rate(float(policy.ratio))
        self.slow_ns = None if policy.slow_ms is None else int(policy.slow_ms * 1_000_000)

    def ratio_keeps(self, trace_id: int) -> bool:
        return trace_id & _LOW_64 < self.bound


class _Trace:
    """The ended spans of one undecided trace."""

    __slots__ = ("spans", "error", "workflow")

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []
        self.error = False
        self.workflow: str | None = None


class TailSamplingProcessor(WrappingSpanProcessor):
    """Buffers each trace's spans until its local root ends, then passes the whole trace on, or none of it.

    ``TailSamplingProcessor(TailSampling(ratio=0.1), counter, [BatchSpanProcessor(exporter)])``.
    ``counter`` is the ``nexus.telemetry.spans`` counter (None: nothing counted).

    Memory: at most ``max_buffered_spans`` ended spans wait for a decision.
    When one more arrives, the *oldest buffered traces* are dropped whole (they
    are the likeliest never to finish: a root that never ends, or spans whose
    decision was forgotten) and their spans counted as ``overflow``; their
    later spans are dropped too. Decisions are remembered for the ``remember``
    most recently decided traces; a span of a trace decided longer ago is
    buffered as a new trace.
    """

    def __init__(self, policy: TailSampling, counter: Any = None, children: Iterable[SpanProcessor] = (),
                 *, remember: int = 10_000) -> None:
        if not isinstance(policy, TailSampling):
            raise ConfigurationError("tail_sampling", policy, "a TailSampling")
        number("TailSamplingProcessor.remember", remember, minimum=1, integer=True)
        super().__init__(children)
        self.policy = policy
        self._default_rule = _Rule(policy)
        self._rules = {name: _Rule(p) for name, p in policy.per_workflow.items()}
        self._max_buffered = policy.max_buffered_spans
        self._remember = remember
        self._lock = threading.Lock()
        self._traces: OrderedDict[int, _Trace] = OrderedDict()  # first seen first: eviction order
        self._buffered = 0
        self._decided: OrderedDict[int, str] = OrderedDict()  # trace id -> reason or outcome (LRU)
        self._unsampled_callers: OrderedDict[int, None] = OrderedDict()
        self._shutdown = False
        self._counter = counter
        self._outcomes = {o: {"exporter": EXPORTER_NAME, "outcome": o}
                          for o in (KEPT, SAMPLED_OUT, OVERFLOW, UNFINISHED)}
        if counter is not None:
            for attributes in self._outcomes.values():  # series exist from the start, at 0
                counter.add(0, attributes)

    # -- spans ---------------------------------------------------------------
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        parent = span.parent
        if parent is not None and parent.is_remote and not parent.trace_flags.sampled:
            context = span.context
            if context is not None and context.trace_flags.sampled:
                # A head sampler that ignores the caller: only keeps_exemplar needs to know.
                with self._lock:
                    self._unsampled_callers[context.trace_id] = None
                    if len(self._unsampled_callers) > self._remember:
                        self._unsampled_callers.popitem(last=False)
        self.start_children(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None:
            return
        trace_id = context.trace_id
        parent = span.parent
        is_root = parent is None or parent.is_remote
        failed = span.status.status_code is StatusCode.ERROR
        workflow = (span.attributes or {}).get(WORKFLOW_NAME)
        forward: list[ReadableSpan] | None = None
        reason: str | None = None
        dropped_as = ""
        dropped = 0
        overflow = 0
        with self._lock:
            if self._shutdown:
                return
            decided = self._decided.get(trace_id)
            if decided is not None:  # ended after its trace was decided: follow the decision
                self._decided.move_to_end(trace_id)
                if decided in REASONS:
                    forward, reason = [span], decided
                else:
                    dropped_as, dropped = decided, 1
            else:
                trace = self._traces.get(trace_id)
                if trace is None:
                    trace = self._traces[trace_id] = _Trace()
                trace.spans.append(span)
                self._buffered += 1
                if failed:
                    trace.error = True
                if trace.workflow is None and workflow is not None:
                    trace.workflow = str(workflow)
                if is_root:
                    del self._traces[trace_id]
                    self._buffered -= len(trace.spans)
                    decision = self._decide(trace_id, trace, span)
                    self._remember_decision(trace_id, decision)
                    if decision in REASONS:
                        forward, reason = trace.spans, decision
                    else:
                        dropped_as, dropped = decision, len(trace.spans)
                if self._buffered > self._max_buffered:
                    overflow = self._evict()
        counter = self._counter
        if forward:
            children = self._children.items
            kept = [_kept_copy(s, reason) for s in forward]
            for s in kept:
                self.end_children(s, children)
            if counter is not None:
                counter.add(len(kept), self._outcomes[KEPT])
        if counter is not None:
            if dropped:
                counter.add(dropped, self._outcomes[dropped_as])
            if overflow:
                counter.add(overflow, self._outcomes[OVERFLOW])

    def _rule(self, workflow: str | None) -> _Rule:
        if workflow is None:
            return self._default_rule
        return self._rules.get(workflow, self._default_rule)

    def _decide(self, trace_id: int, trace: _Trace, root: ReadableSpan) -> str:
        """The reason to keep the trace, or ``sampled_out``. Called under the lock."""
        if trace.error:
            return ERROR
        rule = self._rule(trace.workflow)
        if rule.slow_ns is not None and (root.end_time or 0) - (root.start_time or 0) >= rule.slow_ns:
            return SLOW
        if not root.context.trace_flags.sampled:  # the head sampler dropped it
            return SAMPLED_OUT
        parent = root.parent
        if parent is not None:  # a caller's traceparent decides, so its trace stays whole
            return PARENT if parent.trace_flags.sampled else SAMPLED_OUT
        return RATIO if rule.ratio_keeps(trace_id) else SAMPLED_OUT

    def _remember_decision(self, trace_id: int, decision: str) -> None:
        self._decided[trace_id] = decision
        if len(self._decided) > self._remember:
            self._decided.popitem(last=False)

    def _evict(self) -> int:
        """Drop the oldest buffered traces until the bound holds; the number of spans dropped."""
        dropped = 0
        while self._buffered > self._max_buffered and self._traces:
            trace_id, trace = self._traces.popitem(last=False)
            self._buffered -= len(trace.spans)
            dropped += len(trace.spans)
            self._remember_decision(trace_id, OVERFLOW)
        return dropped

    # -- exemplars -----------------------------------------------------------
    def was_kept(self, trace_id: int) -> bool:
        """True if the trace was decided and kept (decisions are remembered for the last traces only)."""
        with self._lock:
            return self._decided.get(trace_id) in REASONS

    def keeps_exemplar(self, trace_id: int, workflow: str, failed: bool, duration_s: float) -> bool:
        """Whether a metric exemplar may point at this trace: true only if it is (or will be) kept.

        Called right after a workflow execution's span ended. When that span
        was the local root the trace is decided and the answer is exact.
        Otherwise (an enclosing HTTP server span is still open) it is true
        only when the buffered spans already failed, the workflow alone was at
        least ``slow_ms`` (the root encloses it), or the trace was head-sampled
        without an unsampled caller and its id passes the ratio. ``failed`` is
        not trusted on its own: only an ERROR span makes a trace certain to be
        kept. The memory bound can still drop an undecided trace later.
        """
        with self._lock:
            decided = self._decided.get(trace_id)
            if decided is not None:
                return decided in REASONS
            trace = self._traces.get(trace_id)
            if trace is None:  # nothing of it reached us, so nothing of it will be exported
                return False
            if trace.error:
                return True
            head_sampled = all(s.context.trace_flags.sampled for s in trace.spans)
            unsampled_caller = trace_id in self._unsampled_callers
            rule = self._rule(trace.workflow or workflow)
        if rule.slow_ns is not None and duration_s * 1e9 >= rule.slow_ns:
            return True
        return head_sampled and not unsampled_caller and rule.ratio_keeps(trace_id)

    # -- lifecycle -----------------------------------------------------------
    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush the children within ``timeout_millis`` in all; undecided traces stay buffered."""
        return self._children.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Pass nothing more on; count still-undecided spans as ``unfinished``; shut the children down."""
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
            unfinished = self._buffered
            self._traces.clear()
            self._buffered = 0
            self._decided.clear()
            self._unsampled_callers.clear()
        if unfinished and self._counter is not None:
            self._counter.add(unfinished, self._outcomes[UNFINISHED])
        self._children.shutdown()


def _kept_copy(span: ReadableSpan, reason: str | None) -> ReadableSpan:
    """The span as exporters see it: sampled flag set, and the reason on a local root.

    An ended span cannot change, so this is a new ``ReadableSpan`` with the
    same fields (the same object when nothing needs to change).
    """
    context = span.context
    parent = span.parent
    is_root = parent is None or parent.is_remote
    sampled = context.trace_flags.sampled
    if sampled and not is_root:
        return span
    if not sampled:
        context = SpanContext(
            context.trace_id, context.span_id, context.is_remote,
            TraceFlags(context.trace_flags | _SAMPLED), context.trace_state,
        )
    attributes: Any = span.attributes  # already cleaned by the SDK: copied, never validated again
    if is_root and reason is not None:
        attributes = {**attributes, SAMPLING_REASON: reason}
    if span.dropped_attributes:  # only a BoundedAttributes carries the count exporters report
        attributes = BoundedAttributes(attributes=attributes, immutable=True, max_value_len=None)
        attributes.dropped = span.dropped_attributes
    return ReadableSpan(
        name=span.name, context=context, parent=parent, resource=span.resource,
        attributes=attributes, events=_with_dropped(span.events, span.dropped_events),
        links=_with_dropped(span.links, span.dropped_links), kind=span.kind, status=span.status,
        start_time=span.start_time, end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _with_dropped(items: Sequence[Any], dropped: int) -> Sequence[Any]:
    """Events or links that keep their dropped count (exporters report it)."""
    if not dropped:
        return items
    bounded: BoundedList = BoundedList(None)
    bounded.extend(items)
    bounded.dropped = dropped
    return bounded
