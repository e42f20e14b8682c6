"""One app's telemetry: tracer, meter and logger providers, instruments, the redacting sink pipelines, metrics hub.

Providers come from, in order: what the caller injects; an SDK provider the
process already installed globally (used, never replaced); or new SDK
providers built from the ``OTEL_*`` variables. Only providers built here are
shut down by :meth:`Telemetry.shutdown`; borrowed ones are flushed.

Every sink (OTLP, the local store, webhooks, audit) sits behind one
:class:`~nexus_otel.processors.span_redaction.RedactingSpanProcessor`, so none of
them sees a secret. With tail sampling on, the trace exporters (and processors
added with :meth:`Telemetry.add_span_processor`) sit behind a
:class:`~nexus_otel.processors.tail_sampling.TailSamplingProcessor` behind
redaction, and the head sampler of a provider built here records what it
would drop, so errors and slow traces can still be kept.

Every metrics output (``/metrics``, OTLP pushes) reads from one
:class:`~nexus_otel.telemetry.metrics_hub.MetricsHub`.

Logs are the third signal: a logger provider (injected, the process's global SDK
one, or built here when ``OTEL_LOGS_EXPORTER`` names a sink) whose sinks sit
behind one :class:`~nexus_otel.processors.log_redaction.RedactingLogRecordProcessor`,
as spans' do. While the app runs, its users' own ``logging`` records come in
through :class:`~nexus_otel.logs.capture.LogCapture` (``NEXUS_OTEL_CAPTURE_LOGS``).
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

from opentelemetry import _logs as logs_api
from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk._logs import LoggerProvider, LogRecordLimits, LogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from .._version import __version__
from ..deadline import call_within
from ..errors import ConfigurationError
from ..logs.capture import LogCapture
from ..processors.log_redaction import RedactingLogRecordProcessor
from ..processors.metered import log_records_counter, spans_counter
from ..processors.span_redaction import RedactingSpanProcessor
from ..processors.tail_sampling import RecordingSampler, TailSampling, TailSamplingProcessor
from ..redaction import Redactor
from . import contract
from .bound import BoundMetrics
from .config import TelemetryConfig, follows_local_parents
from .instruments import Instruments
from .lean_tracer import LeanTracer, SpanProcessors
from .metrics_hub import MetricsHub
from .sinks import log_processors, metric_exporters, separate_reader, span_processors
from .worker_metrics import WorkerMetrics
from .workflow_sampler import SETTING as WORKFLOW_SAMPLING
from .workflow_sampler import WorkflowSampler

log = logging.getLogger("nexus_otel.telemetry")
P = TypeVar("P")
EXIT_TIMEOUT = 5.0
"""Seconds an app that was never stopped gets to flush its telemetry when the interpreter exits."""
LOG_ATTRIBUTE_COUNT = 128
"""Attributes a log record keeps when no ``OTEL_*ATTRIBUTE_COUNT_LIMIT`` says otherwise (the SDK's default)."""


class Telemetry:
    """Tracer, meter, instruments, sinks and metrics outputs for one app.

    ``settings`` are the app's own values for settings that also have a variable (``baggage_keys``,
    ``baggage_metric_keys``, ``untraced_hooks``, ``workflow_sampling``, ``delivery_spans``): given
    (not None), they win over it (:meth:`TelemetryConfig.with_settings`).

    A tracer provider built here makes spans with the lean tracer
    (:mod:`nexus_otel.telemetry.lean_tracer`); a given one with its own tracer, unless it was built with
    ``active_span_processor=SpanProcessors()`` and that object is passed as ``span_processors``: then the
    lean tracer makes its spans too (with the configuration's span limits: build the provider with the same).

    ``enabled`` is false under ``OTEL_SDK_DISABLED=true``; the app then skips
    every telemetry call on its hot path instead of calling no-op objects.

    ``tail_sampling`` overrides the configuration's (``NEXUS_OTEL_TAIL_SAMPLING_*``);
    with neither, there is no tail sampler (``tail_sampler`` is None) and every
    span the head sampler samples is exported. With a borrowed tracer provider
    the head sampler is not wrapped: spans it drops never reach the tail
    sampler, so their errors cannot be kept.
    """

    def __init__(
        self,
        service_name: str,
        *,
        tracer_provider: trace_api.TracerProvider | None = None,
        meter_provider: metrics_api.MeterProvider | None = None,
        config: TelemetryConfig | None = None,
        environ: Mapping[str, str] | None = None,
        redactor: Redactor | None = None,
        metrics_hub: MetricsHub | None = None,
        prometheus_registry: CollectorRegistry | None = None,
        tail_sampling: TailSampling | None = None,
        logger_provider: logs_api.LoggerProvider | None = None,
        settings: Mapping[str, Any] | None = None,
        span_processors: SpanProcessors | None = None,
    ) -> None:
        config = config if config is not None else TelemetryConfig.from_env(environ)
        # Always through with_settings, also with none: checks across settings (metric baggage keys among the
        # baggage keys) run once the app's own values are in, whichever of the two gave each.
        self.config = config.with_settings(settings or {})
        """The one parsed configuration: every sink, output and plugin reads its settings here."""
        if tail_sampling is not None and not isinstance(tail_sampling, TailSampling):
            raise ConfigurationError("tail_sampling", tail_sampling, "a TailSampling or None")
        self.tail_sampling: TailSampling | None = (
            tail_sampling if tail_sampling is not None else self.config.tail_sampling)
        self.enabled = not self.config.sdk_disabled
        self.redactor = redactor or Redactor()
        self.propagator: TextMapPropagator = build_propagator(self.config.propagators)
        """What reads a request's ``traceparent`` and ``baggage`` (``OTEL_PROPAGATORS``): the app's own, built from
        its configuration, not the process's global one (which reads ``os.environ`` once, at import)."""
        self.prometheus_registry = prometheus_registry or CollectorRegistry(auto_describe=True)
        self.sinks = RedactingSpanProcessor(self.redactor)
        self.metrics_hub: MetricsHub | None = metrics_hub
        self.tail_sampler: TailSamplingProcessor | None = None
        self.workflow_sampler: WorkflowSampler | None = None
        """The head sampler with per-workflow ratios (``workflow_sampling``); None when none are set, or the
        tracer provider is borrowed (its sampler is not ours to replace)."""
        self.span_outcomes: Any = None
        self.worker_metrics: WorkerMetrics | None = None
        """With ``serve --workers``: this worker's part in answering ``/metrics`` for all workers."""
        self.log_sinks = RedactingLogRecordProcessor(
            self.redactor, max_length=self.config.logrecord_attribute_value_length_limit)
        """Every log sink sits behind it (:meth:`add_log_record_processor`)."""
        self.logger_provider: LoggerProvider | None = None
        """The SDK logger provider log records go to; None when logs are not exported or telemetry is disabled."""
        self.log_capture: LogCapture | None = None
        """While started with capture on: this app's hold on the process's ``logging`` handler."""
        self._owned: list[TracerProvider | MeterProvider | LoggerProvider] = []
        """The providers built here: :meth:`shutdown` shuts them down (borrowed ones are only flushed)."""
        self.span_processors = span_processors if span_processors is not None else SpanProcessors()
        """Every span processor of the tracer provider the lean tracers make spans on (one built here, or one given
        with the ``span_processors`` it was built with), which they call as the SDK's tracer would."""
        self._lean_on_given = span_processors is not None
        self.span_limits = SpanLimits(**dict(self.config.span_limits))
        """The ``OTEL_SPAN_*_LIMIT`` limits of a tracer provider built here, from the configuration's environment."""
        self._started = False
        self._start_lock = threading.Lock()
        separate_reader = False  # an OTLP metrics push with delta temporality reads the provider itself
        if not self.enabled:
            self.resource = Resource.get_empty()
            self.meter_provider: metrics_api.MeterProvider = metrics_api.NoOpMeterProvider()
            self.tracer_provider: trace_api.TracerProvider = trace_api.NoOpTracerProvider()
        else:
            self.resource = _resource(self.config, service_name)
            meter_provider = meter_provider or _global(metrics_api.get_meter_provider(), MeterProvider)
            if meter_provider is None:
                meter_provider, self.metrics_hub, separate_reader = _meter_provider(
                    self.config, self.resource, self.prometheus_registry)
                self._owned.append(meter_provider)
            self.meter_provider = meter_provider
            self.span_outcomes = spans_counter(
                self.meter_provider.get_meter(contract.INSTRUMENTATION_NAME, __version__))
            if self.tail_sampling is not None:
                self.tail_sampler = TailSamplingProcessor(self.tail_sampling, self.span_outcomes)
                self.sinks.add(self.tail_sampler)
            tracer_provider = tracer_provider or _global(trace_api.get_tracer_provider(), TracerProvider)
            if tracer_provider is None:
                tracer_provider = self._tracer_provider()
                self._owned.append(tracer_provider)
            elif self.config.workflow_sampling:
                log.warning("%s (workflow_sampling) is ignored: the tracer provider was not built by nexus-otel, "
                            "so its head sampler decides every trace", WORKFLOW_SAMPLING)
            self.tracer_provider = tracer_provider
            if isinstance(self.tracer_provider, TracerProvider):
                self.tracer_provider.add_span_processor(self.sinks)
                if span_processors is not None and self.sinks not in span_processors.items:
                    raise ConfigurationError(
                        "span_processors", type(span_processors).__name__,
                        "the SpanProcessors the tracer provider was built with "
                        "(TracerProvider(active_span_processor=...)): spans would reach none of its processors")
            self._set_logger_provider(logger_provider)
            if self.config.workers_dir is not None:
                self.worker_metrics = WorkerMetrics(self.config.workers_dir, self.prometheus_registry,
                                                    hub=self.metrics_hub)
        self.service_name = str(self.resource.attributes.get(contract.SERVICE_NAME, service_name))
        self.tracer: trace_api.Tracer = self._tracer(contract.INSTRUMENTATION_NAME)
        """The tracer of every span the app makes (lean on a provider built here: see :meth:`delivery_tracer`)."""
        self.meter = self.meter_provider.get_meter(contract.INSTRUMENTATION_NAME, __version__)
        # Hot-path instruments are pre-aggregated when every metrics output reads the hub.
        self.bound_metrics: BoundMetrics | None = None
        if self.enabled and self.metrics_hub is not None and not separate_reader:
            self.bound_metrics = self.metrics_hub.bound_metrics(
                InstrumentationScope(contract.INSTRUMENTATION_NAME, __version__), self.resource,
                self.config.exemplar_filter,
            )
            if self.tail_sampler is not None:
                self.bound_metrics.exemplar_check = self.tail_sampler.was_kept  # exemplars name kept traces only
        self.instruments = Instruments.create(self.meter, self.bound_metrics)
        if self._owned:  # flushed at interpreter exit too, if the app was never stopped: within EXIT_TIMEOUT
            atexit.register(self._shutdown_at_exit)

    def _tracer_provider(self) -> TracerProvider:
        """A new SDK provider whose exporters sit behind redaction (and the tail sampler, if any)."""
        sampler = self.config.sampler
        if self.config.workflow_sampling:  # listed workflows' new traces at their own ratio
            sampler = self.workflow_sampler = WorkflowSampler(dict(self.config.workflow_sampling), sampler)
        if self.tail_sampler is not None:  # record what the head would drop: the tail may keep it
            sampler = RecordingSampler(sampler)
        # Our own exit handler bounds the flush; the SDK's would wait on a silent endpoint.
        provider = TracerProvider(resource=self.resource, sampler=sampler, shutdown_on_exit=False,
                                  active_span_processor=self.span_processors,  # type: ignore[arg-type]
                                  span_limits=self.span_limits)
        exporters = self.tail_sampler if self.tail_sampler is not None else self.sinks
        for processor in span_processors(self.config, self.span_outcomes):
            exporters.add(processor)
        return provider

    def _set_logger_provider(self, given: logs_api.LoggerProvider | None) -> None:
        """The injected provider, else the process's global SDK one, else one built here when a logs exporter is
        configured; the redacting log sinks are added to whichever it is."""
        if given is not None and not isinstance(given, LoggerProvider):
            raise ConfigurationError("logger_provider", type(given).__name__,
                                     "an opentelemetry.sdk._logs.LoggerProvider or None")
        provider = given or _global(logs_api.get_logger_provider(), LoggerProvider)
        if provider is None and self.config.logs_exporters:
            count = self.config.logrecord_attribute_count_limit
            count = LOG_ATTRIBUTE_COUNT if count is None else count
            # Values are cut by the redacting processor after its scan (the SDK would cut a secret in two first);
            # every limit is given, so the SDK reads none from the process environment.
            limits = LogRecordLimits(max_attributes=count, max_attribute_length=LogRecordLimits.UNSET,
                                     max_log_record_attributes=count,
                                     max_log_record_attribute_length=LogRecordLimits.UNSET)
            provider = LoggerProvider(resource=self.resource, shutdown_on_exit=False, log_record_limits=limits,
                                      meter_provider=self.meter_provider)
            counter = log_records_counter(self.meter_provider.get_meter(contract.INSTRUMENTATION_NAME, __version__))
            for processor in log_processors(self.config, counter):
                self.log_sinks.add(processor)
            self._owned.append(provider)
        if provider is not None:
            provider.add_log_record_processor(self.log_sinks)
        self.logger_provider = provider

    @property
    def captures_logs(self) -> bool:
        """Whether :meth:`start` brings the app's ``logging`` records in: ``NEXUS_OTEL_CAPTURE_LOGS``, by default
        whenever there is a logger provider."""
        if self.logger_provider is None:
            return False
        return self.config.capture_logs is not False

    def start(self) -> Telemetry:
        """Start the background work: metric pushes, with ``serve --workers`` this worker's part in
        ``/metrics``, and the capture of the process's ``logging`` records (:attr:`captures_logs`).
        Again: nothing more. ``Nexus.start`` calls it, and so does an app's first execution
        when it was never started; :meth:`shutdown` stops it."""
        with self._start_lock:
            if self._started or not self.enabled:
                return self
            self._started = True
        if self.metrics_hub is not None:
            self.metrics_hub.start()
        if self.worker_metrics is not None:
            self.worker_metrics.start()
        if self.logger_provider is not None and self.captures_logs:
            self.log_capture = LogCapture(self.logger_provider)
            self.log_capture.start()
        return self

    # -- public ------------------------------------------------------------
    def delivery_tracer(self, name: str, *, scrubbed: frozenset[str] = frozenset()) -> trace_api.Tracer | None:
        """The tracer of the spans of work done after an execution returned (webhook attempts, audit batches):
        None when telemetry is disabled or delivery spans are off (``NEXUS_OTEL_DELIVERY_SPANS``).

        On a tracer provider built here it is a :class:`~nexus_otel.telemetry.lean_tracer.LeanTracer` (the
        provider's sampler, ids and resource, this app's span pipeline, a fraction of the SDK's cost per span);
        ``scrubbed`` names the attributes whose values the caller made from text :attr:`redactor` scrubbed.
        On a borrowed provider, its own tracer.
        """
        if not self.enabled or not self.config.delivery_spans:
            return None
        return self._tracer(name, scrubbed=scrubbed, stack_traces=False)

    def _tracer(self, name: str, *, scrubbed: frozenset[str] = frozenset(), stack_traces: bool = True,
                ) -> trace_api.Tracer:
        """A :class:`~nexus_otel.telemetry.lean_tracer.LeanTracer` on a provider built here (or given with its
        ``span_processors``), else the provider's own tracer."""
        provider = self.tracer_provider
        if not isinstance(provider, TracerProvider):
            return provider.get_tracer(name, __version__)
        owned = provider in self._owned
        if owned or self._lean_on_given:
            return LeanTracer(provider, self.sinks, InstrumentationScope(name, __version__), self.span_processors,
                              self.span_limits, scrubbed=scrubbed, stack_traces=stack_traces,
                              follows_local_parents=self._follows_local_parents(provider, owned),
                              records_unsampled=owned and self.tail_sampler is not None)
        return provider.get_tracer(name, __version__)

    def _follows_local_parents(self, provider: TracerProvider, owned: bool) -> bool:
        """Whether ``provider``'s head sampler gives a local parent's child the parent's decision: the
        ``parentbased_*`` samplers of ``OTEL_TRACES_SAMPLER`` (the default among them) and per-workflow ratios
        (:class:`WorkflowSampler`) do; any other sampler is asked."""
        if owned:
            return self.workflow_sampler is not None or follows_local_parents(self.config.sampler)
        return follows_local_parents(provider.sampler)

    def add_span_processor(self, processor: SpanProcessor) -> None:
        """Add a span processor (a sink) behind redaction: it only ever sees scrubbed spans.

        With tail sampling on it sits behind the tail sampler too: it sees kept traces only.
        """
        if not self.enabled:
            return
        if not isinstance(self.tracer_provider, TracerProvider):
            raise ConfigurationError(
                "tracer_provider", type(self.tracer_provider).__name__,
                "an opentelemetry.sdk.trace.TracerProvider to add span processors to",
            )
        (self.tail_sampler if self.tail_sampler is not None else self.sinks).add(processor)

    def add_log_record_processor(self, processor: LogRecordProcessor) -> None:
        """Add a log record processor (a sink) behind redaction: it only ever sees scrubbed log records.

        With no logger provider (logs not exported) it is kept but gets no record.
        """
        if self.enabled:
            self.log_sinks.add(processor)

    def remove_log_record_processor(self, processor: LogRecordProcessor) -> bool:
        """Flush, shut down and detach a processor added with :meth:`add_log_record_processor`."""
        if self.log_sinks.remove(processor):
            return True
        processor.shutdown()
        return False

    def batch_processor(self, exporter: Any, name: str, **kwargs: Any) -> SpanProcessor:
        """A batching processor for ``exporter`` whose exports, failures and drops are counted."""
        from ..processors.metered import MeteredBatchSpanProcessor

        if self.span_outcomes is None:
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            return BatchSpanProcessor(exporter, **kwargs)
        return MeteredBatchSpanProcessor(exporter, name, self.span_outcomes, **kwargs)

    def remove_span_processor(self, processor: SpanProcessor) -> bool:
        """Flush, shut down and detach a processor added with :meth:`add_span_processor`.

        A processor that was never attached (telemetry disabled) is still shut down.
        """
        if self.tail_sampler is not None and self.tail_sampler.remove(processor):
            return True
        if self.sinks.remove(processor):
            return True
        processor.shutdown()
        return False

    def require_metrics_hub(self, who: str) -> MetricsHub:
        """The hub, or a clear error when the meter provider was borrowed without one."""
        if self.metrics_hub is None:
            raise ConfigurationError(
                "meter_provider", type(self.meter_provider).__name__,
                f"a meter provider built by nexus-otel (or one with a MetricsHub reader) for {who}",
            )
        return self.metrics_hub

    @property
    def exposition(self) -> Any:
        """What ``/metrics`` exposes: the Prometheus registry, or with ``serve --workers`` every worker's totals."""
        return self.worker_metrics if self.worker_metrics is not None else self.prometheus_registry

    def prometheus_exposition(self, openmetrics: bool = False) -> tuple[bytes, str]:
        """The current metrics in Prometheus text (or OpenMetrics, with exemplars) and the content type."""
        if openmetrics:
            from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as om_type

            return generate_openmetrics(self.exposition), om_type
        from prometheus_client.exposition import CONTENT_TYPE_LATEST

        return generate_latest(self.exposition), CONTENT_TYPE_LATEST

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Push out buffered spans, log records and metrics; true when every provider finished in time."""
        ok = True
        for provider in (self.tracer_provider, self.logger_provider, self.meter_provider):
            flush = getattr(provider, "force_flush", None)
            if flush is not None:
                ok = bool(flush(timeout_millis)) and ok
        return ok

    def _shutdown_at_exit(self) -> None:
        call_within(self.shutdown, EXIT_TIMEOUT, "telemetry flush at exit")

    def shutdown(self) -> None:
        """Flush everything; shut down what this object built (never borrowed providers).

        The SDK's exporters do not bound their own time: call this through
        :func:`~nexus_otel.deadline.call_within` (as ``Nexus.stop`` does) to bound it.
        """
        if not self.enabled:
            return
        atexit.unregister(self._shutdown_at_exit)
        if self.log_capture is not None:  # no more of the process's records come here
            self.log_capture.stop()
        self.force_flush()
        if self.tracer_provider not in self._owned:
            # A borrowed tracer provider stays up; our sinks on it end with the app.
            self.sinks.shutdown()
        if self.logger_provider is not None and self.logger_provider not in self._owned:
            self.log_sinks.shutdown()
        if self.worker_metrics is not None:  # after the flush, while the meter provider still reads
            self.worker_metrics.close()
        for provider in reversed(self._owned):  # log records and spans first, then the metrics that count them
            provider.shutdown()
        self._owned.clear()


def _global(current: Any, sdk_class: type[P]) -> P | None:
    """The process's global provider if it is an SDK one (used, never replaced), else None."""
    if isinstance(current, sdk_class):
        log.debug("using the process's global %s", sdk_class.__name__)
        return current
    return None


def _meter_provider(config: TelemetryConfig, resource: Resource,
                    registry: CollectorRegistry) -> tuple[MeterProvider, MetricsHub, bool]:
    """A new SDK provider read by one hub (``/metrics`` and every push), the hub, and whether an OTLP push
    with delta temporality got a reader of its own (the hub is cumulative)."""
    hub = MetricsHub(registry, resource=resource)
    readers: list[MetricReader] = [hub]
    pushes = metric_exporters(config)
    separate = config.metrics_delta and any(name == "otlp" for name, _ in pushes)
    for name, exporter in pushes:
        if name == "otlp" and config.metrics_delta:
            readers.append(separate_reader(exporter))
        else:
            hub.add_push(exporter, config.metric_export_interval, name)
    provider = MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)
    return provider, hub, separate


PROPAGATOR_GROUP = "opentelemetry_propagator"
"""The entry point group propagators are installed under (as ``opentelemetry.propagate`` reads them)."""


@functools.lru_cache(maxsize=1)
def installed_propagators() -> dict[str, EntryPoint]:
    """The installed propagators by name, read once per process (scanning the installed packages takes tens of
    milliseconds; an app is made many times in a test suite)."""
    return {ep.name: ep for ep in entry_points(group=PROPAGATOR_GROUP)}


def build_propagator(names: Sequence[str]) -> TextMapPropagator:
    """The propagators named, in order, as one composite, built as ``opentelemetry.propagate`` builds the global
    one (entry points of :data:`PROPAGATOR_GROUP`); none named: one that extracts and injects nothing."""
    installed = installed_propagators()
    chosen: list[TextMapPropagator] = []
    for name in names:
        entry = installed.get(name)
        if entry is None:
            raise ConfigurationError("OTEL_PROPAGATORS", ",".join(names),
                                     f"installed propagators ({', '.join(sorted(installed))}); "
                                     f"{name!r} is not installed")
        try:
            chosen.append(entry.load()())
        except Exception as exc:  # an installed package whose propagator cannot be loaded or made
            raise ConfigurationError("OTEL_PROPAGATORS", ",".join(names),
                                     f"propagators that load ({name!r} failed: {type(exc).__name__}: {exc})") from exc
    return CompositePropagator(chosen)


def _resource(config: TelemetryConfig, default_service_name: str) -> Resource:
    """``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` (from the configuration) win over the app's name.

    One of several workers gets its own ``service.instance.id`` (the one given, if any, with its
    process id added), so what each pushes over OTLP is a series of its own, summed, never merged.
    The SDK's resource detectors run as the SDK runs them, and the configuration's attributes win over
    theirs; what the SDK's ``OTEL_*`` detector read from the process environment and the configuration
    does not have is dropped (an app given ``environ=`` takes its resource from that mapping alone).
    """
    attributes: dict[str, Any] = {contract.SERVICE_NAME: default_service_name, **dict(config.resource_attributes)}
    if config.service_name:
        attributes[contract.SERVICE_NAME] = config.service_name
    if config.workers_dir is not None:
        given = attributes.get(contract.SERVICE_INSTANCE_ID)
        attributes[contract.SERVICE_INSTANCE_ID] = f"{given}-{os.getpid()}" if given else str(uuid.uuid4())
    resource = Resource.create(attributes)
    stray = set(OTELResourceDetector().detect().attributes) - set(attributes)
    if stray:
        resource = Resource({k: v for k, v in resource.attributes.items() if k not in stray}, resource.schema_url)
    return resource
