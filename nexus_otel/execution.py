"""Running one workflow: its span, hooks, middleware chain and metrics.

Order, for every execution::

    span "workflow <name>" (current for everything below)
      hooks workflow_started          each a child span
      middleware chain -> workflow fn timed: this is event.duration
      hooks workflow_completed | workflow_failed
    span ends
    metrics: executions, duration (with the trace as exemplar if it is kept), active
    record processors get the execution's record (audit, webhooks, ...)

The record is made from the execution, not its span, so it exists whatever
the sampler decided, and durable sinks have it stored before this returns.
Records that cannot be stored fail closed (``docs/records.md``): an execution
is refused before it starts while an outbox its records need is known
unwritable, and one whose records could not be written after it ran raises
:class:`~nexus_otel.errors.RecordsUnavailableError` instead of returning (a
workflow's own exception still comes back unchanged, with a note).
The listed W3C baggage keys the execution came with (:mod:`~nexus_otel.baggage`) go
on its span, its records and, for the metric keys, its executions and duration series;
with none listed nothing is done.
The sync and async paths share every step but how hooks and the chain are
called. With telemetry disabled the same steps run with no telemetry calls
(records still flow).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.trace import INVALID_SPAN, Span, SpanContext, SpanKind, Status, StatusCode

from ._aio import block_on
from .baggage import BaggagePicker, MetricBaggage, add_under
from .caller import Caller
from .errors import AccessError, RateLimitExceeded, RecordsUnavailableError
from .events import WorkflowEvent
from .execution_middleware import AsyncNext, Middleware, Next, WorkflowCall, build_async_chain, build_sync_chain
from .hooks import HookRegistry, HookRunner
from .records import ExecutionRecord, RecordPipeline
from .records.record import RUNNING
from .redaction import Redactor
from .running import Entry, RunningRegistry
from .telemetry import contract as c
from .telemetry.instruments import SeriesCache
from .telemetry.telemetry import Telemetry
from .workflows import Workflow


class _Run:
    __slots__ = ("workflow", "event", "span", "token", "start", "channel", "ctx", "active", "sampled",
                 "inputs_attr", "error_type", "error_text", "status", "baggage", "metric_baggage", "running")

    def __init__(self, workflow: Workflow, event: WorkflowEvent, span: Span, token: Any,
                 ctx: SpanContext | None = None, active: Any = None) -> None:
        self.workflow = workflow
        self.event = event
        self.span = span
        self.token = token
        self.start = 0.0
        self.channel = event.channel
        self.ctx = ctx  # the workflow span's context, kept as the metrics' exemplar
        self.active = active  # the bound nexus.workflow.active series
        self.sampled = False
        self.inputs_attr: str | None = None  # the redacted inputs, made once for span and record
        self.error_type: str | None = None
        self.error_text: str | None = None
        self.status: str | None = None  # set when the workflow ended; metrics are recorded then
        self.baggage: dict[str, str] | None = None  # the listed baggage keys it came with, redacted and bounded
        self.metric_baggage: tuple[str | None, ...] | None = None  # those of them its metrics carry
        self.running: Entry | None = None  # its entry among the app's running executions


def _sync_terminal(call: WorkflowCall) -> Any:
    if call.workflow.is_async:
        return block_on(call.workflow.fn(call.inputs))
    return call.workflow.fn(call.inputs)


async def _async_terminal(call: WorkflowCall) -> Any:
    if call.workflow.is_async:
        return await call.workflow.fn(call.inputs)
    # A sync workflow must not block the event loop; the context (span) goes along.
    return await asyncio.to_thread(call.workflow.fn, call.inputs)


class Executor:
    """Executes workflows for one app."""

    def __init__(
        self,
        telemetry: Telemetry,
        hooks: HookRegistry,
        runner: HookRunner,
        *,
        redactor: Redactor,
        record_inputs: bool,
        records: RecordPipeline | None = None,
        running: RunningRegistry | None = None,
    ) -> None:
        self._telemetry = telemetry
        self._running = running if running is not None else RunningRegistry()
        self._records = records if records is not None else RecordPipeline()
        self._tracer = telemetry.tracer
        self._instruments = telemetry.instruments
        self._hooks = hooks
        self._runner = runner
        self._redactor = redactor
        self._record_inputs = record_inputs
        self._gen_ai = telemetry.config.gen_ai_semconv  # the GenAI conventions' invoke_workflow span, opted in
        # Baggage keys listed (NEXUS_OTEL_BAGGAGE_KEYS): picked per execution; none listed, nothing is done.
        config = telemetry.config
        self._baggage = BaggagePicker(config.baggage_keys, redactor) if config.baggage_keys else None
        self._metric_baggage = MetricBaggage(config.baggage_metric_keys) if config.baggage_metric_keys else None
        self._sync_chain: Next = _sync_terminal
        self._async_chain: AsyncNext = _async_terminal
        # Workflow ids need to be unique, not secret: a seeded PRNG, no system call per execution.
        self._ids = random.Random()
        # Bound metric series: by workflow name, and by (workflow, channel, status).
        self._active = SeriesCache(self._instruments.workflow_active)
        self._executions = SeriesCache(self._instruments.workflow_executions)
        self._durations = SeriesCache(self._instruments.workflow_duration)

    def set_middleware(self, middlewares: Sequence[Middleware]) -> None:
        self._sync_chain = build_sync_chain(middlewares, _sync_terminal)
        self._async_chain = build_async_chain(middlewares, _async_terminal)

    # -- the two paths -----------------------------------------------------
    def execute(self, workflow: Workflow, inputs: Mapping[str, Any], session_id: str | None,
                channel: str, kind: SpanKind, caller: Caller | None = None) -> Any:
        self._records.check_available(workflow.name)
        run = self._begin(workflow, inputs, session_id, channel, kind)
        event = run.event
        try:
            self._runner.run(self._hooks.get(c.WORKFLOW_STARTED), (event,))
            run.start = time.perf_counter()
            try:
                result = self._sync_chain(WorkflowCall(workflow, event, inputs, run.span, caller or Caller()))
            except BaseException as exc:
                self._failed(run, exc)
                self._runner.run(self._hooks.get(c.WORKFLOW_FAILED), (event,))
                raise
            self._completed(run, result)
            self._runner.run(self._hooks.get(c.WORKFLOW_COMPLETED), (event,))
            return result
        finally:
            self._end(run)

    async def aexecute(self, workflow: Workflow, inputs: Mapping[str, Any], session_id: str | None,
                       channel: str, kind: SpanKind, caller: Caller | None = None) -> Any:
        self._records.check_available(workflow.name)
        run = self._begin(workflow, inputs, session_id, channel, kind)
        event = run.event
        try:
            await self._runner.arun(self._hooks.get(c.WORKFLOW_STARTED), (event,))
            run.start = time.perf_counter()
            try:
                result = await self._async_chain(WorkflowCall(workflow, event, inputs, run.span,
                                                              caller or Caller()))
            except BaseException as exc:
                self._failed(run, exc)
                await self._runner.arun(self._hooks.get(c.WORKFLOW_FAILED), (event,))
                raise
            self._completed(run, result)
            await self._runner.arun(self._hooks.get(c.WORKFLOW_COMPLETED), (event,))
            return result
        finally:
            self._end(run)

    # -- shared steps --------------------------------------------------------
    def _begin(self, workflow: Workflow, inputs: Mapping[str, Any], session_id: str | None,
               channel: str, kind: SpanKind) -> _Run:
        event = WorkflowEvent(
            workflow_name=workflow.name, workflow_id=f"{self._ids.getrandbits(128):032x}", session_id=session_id,
            channel=channel, inputs=inputs, timestamp=time.time(),
        )
        records = self._records
        baggage = self._baggage.pick() if self._baggage is not None else None
        if not self._telemetry.enabled:
            run = _Run(workflow, event, INVALID_SPAN, None)
            run.baggage = baggage
            if records.wants_start:
                run.inputs_attr = self._inputs_attr(inputs)
                records.on_start(self._start_record(run))
            run.running = self._running.add(
                workflow.name, event.workflow_id, channel, session_id, event.timestamp, None,
                inputs=run.inputs_attr, raw_inputs=inputs, stuck_after=workflow.stuck_after)
            return run
        attributes: dict[str, Any] = {
            c.WORKFLOW_NAME: workflow.name,
            c.WORKFLOW_ID: event.workflow_id,
            c.CHANNEL: channel,
        }
        if session_id is not None:
            attributes[c.SESSION_ID] = session_id
        inputs_attr = self._inputs_attr(inputs)
        if inputs_attr is not None:
            attributes[c.WORKFLOW_INPUTS] = inputs_attr
        span_name = workflow.span_name
        if self._gen_ai:
            attributes[c.GEN_AI_OPERATION_NAME] = c.GEN_AI_INVOKE_WORKFLOW
            attributes[c.GEN_AI_WORKFLOW_NAME] = workflow.name
            span_name = c.GEN_AI_WORKFLOW_SPAN.format(workflow=workflow.name)
        add_under(attributes, baggage)
        span = self._tracer.start_span(span_name, kind=kind, attributes=attributes)
        token = context_api.attach(trace_api.set_span_in_context(span))
        ctx: SpanContext | None = span.get_span_context()
        sampled = False
        if ctx is not None and ctx.is_valid:
            event.trace_id = format(ctx.trace_id, "032x")
            event.span_id = format(ctx.span_id, "016x")
            sampled = ctx.trace_flags.sampled
        else:
            ctx = None
        active = self._active.get(workflow.name, dict, workflow.active_attributes)
        active.add(1)
        run = _Run(workflow, event, span, token, ctx, active)
        run.sampled = sampled
        run.inputs_attr = inputs_attr
        if baggage:
            run.baggage = baggage
            if self._metric_baggage is not None:
                run.metric_baggage = self._metric_baggage.values(baggage)
        if records.wants_start:
            records.on_start(self._start_record(run))
        run.running = self._running.add(
            workflow.name, event.workflow_id, channel, session_id, event.timestamp, event.trace_id,
            inputs=inputs_attr, raw_inputs=inputs, span=span, stuck_after=workflow.stuck_after)
        return run

    def _inputs_attr(self, inputs: Mapping[str, Any]) -> str | None:
        return self._redactor.to_attribute(inputs) if self._record_inputs else None

    def _completed(self, run: _Run, result: Any) -> None:
        run.event.duration = time.perf_counter() - run.start
        run.event.result = result
        run.status = c.STATUS_COMPLETED

    def _failed(self, run: _Run, exc: BaseException) -> None:
        run.event.duration = time.perf_counter() - run.start
        run.event.error = exc
        run.error_type = c.error_type(exc)
        run.error_text = f"{run.error_type}: {exc}"
        rejected = isinstance(exc, (AccessError, RateLimitExceeded))
        if self._telemetry.enabled:
            span = run.span
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, run.error_text))
            span.set_attribute(c.ERROR_TYPE, run.error_type)
        run.status = c.STATUS_REJECTED if rejected else c.STATUS_FAILED

    def _record(self, run: _Run, status: str) -> None:
        workflow, channel = run.workflow, run.channel
        key = (workflow.name, channel, status)
        duration = run.event.duration or 0.0
        exemplar = run.ctx
        tail = self._telemetry.tail_sampler
        if exemplar is not None and tail is not None and not tail.keeps_exemplar(
                exemplar.trace_id, workflow.name, status != c.STATUS_COMPLETED, duration):
            exemplar = None  # an exemplar only ever names a trace that is kept
        labels = run.metric_baggage
        if labels is not None:  # its series carry the metric keys of its baggage
            labelled = (*key, labels)
            self._executions.get(labelled, self._baggage_series, workflow, channel, status, labels).add(
                1, exemplar)
            self._durations.get(labelled, self._baggage_series, workflow, channel, status, labels).record(
                duration, exemplar)
            return
        self._executions.get(key, workflow.metric_attributes, channel, status).add(1, exemplar)
        self._durations.get(key, workflow.metric_attributes, channel, status).record(duration, exemplar)

    def _baggage_series(self, workflow: Workflow, channel: str, status: str,
                        labels: tuple[str | None, ...]) -> dict[str, str]:
        """A series' attributes with the metric keys' values; the contract's attributes win over a key."""
        assert self._metric_baggage is not None
        return {**self._metric_baggage.attributes(labels), **workflow.metric_attributes(channel, status)}

    def _end(self, run: _Run) -> None:
        if run.running is not None:
            self._running.remove(run.running)
        if run.token is not None:
            run.active.add(-1)
            context_api.detach(run.token)
            run.span.end()
            if run.status is not None:
                self._record(run, run.status)
        if self._records.processors:
            try:
                self._records.on_end(self._end_record(run))
            except RecordsUnavailableError as exc:
                error = run.event.error
                if error is None:  # the workflow returned: its caller gets this instead of the result
                    raise exc.of(run.workflow.name, ran=True) from exc.__cause__
                # The workflow's own exception comes back unchanged, telling that its records were lost too.
                error.add_note(str(exc.of(run.workflow.name, ran=True)))

    # -- records -------------------------------------------------------------
    def _start_record(self, run: _Run) -> ExecutionRecord:
        event = run.event
        return ExecutionRecord(
            event.workflow_name, event.workflow_id, RUNNING, event.channel, event.session_id, event.timestamp,
            trace_id=event.trace_id, span_id=event.span_id, trace_sampled=run.sampled, inputs=run.inputs_attr,
            baggage=run.baggage,
        )

    def _end_record(self, run: _Run) -> ExecutionRecord:
        event = run.event
        cache_hit = event.attributes.get("cache_hit") if event.attributes else None
        # No status: a started hook raised a BaseException before the workflow ran (it did not fail).
        return ExecutionRecord(
            event.workflow_name, event.workflow_id, run.status or c.STATUS_COMPLETED,
            event.channel, event.session_id, event.timestamp, time.time(), event.duration or 0.0,
            event.trace_id, event.span_id, run.sampled,
            run.error_type,
            self._redactor.scrub_text("status.description", run.error_text) if run.error_text else None,
            run.inputs_attr, None if cache_hit is None else bool(cache_hit), run.baggage,
        )
