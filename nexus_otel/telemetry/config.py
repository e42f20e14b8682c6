"""Reading the standard ``OTEL_*`` variables, strictly.

The OpenTelemetry SDK warns and falls back when a variable is malformed; a
service then runs with telemetry nobody asked for. Here every variable we act
on is checked once, at start, and a bad value raises
:class:`~nexus_otel.errors.ConfigurationError` naming the variable, the value
and what was expected. The result, :class:`TelemetryConfig`, is the one
parsed configuration: the sinks, the metric outputs, plugins and the CLI read
it, not the environment. That includes each OTLP signal's endpoint, timeout,
headers and compression (:class:`OtlpTarget`), resolved as the specification
says, so an app given an ``environ`` mapping and one reading the process's
environment behave the same. A general ``OTEL_EXPORTER_OTLP_ENDPOINT`` that
ends in a signal's path (``/v1/traces``) is valid but almost always a slip
(the exporters append their own path to it): it is warned about at start.

nexus-otel adds one traces exporter name, ``local``: spans kept on this machine
in a bounded store under ``NEXUS_OTEL_DATA_DIR`` (default ``.nexus-otel`` in
the working directory), read by ``nexus-otel traces``. It is the default when
no OTLP endpoint is set; ``OTEL_TRACES_EXPORTER=otlp,local`` keeps both.
Its size is bounded by ``NEXUS_OTEL_LOCAL_MAX_BYTES`` per file (default 10 MiB)
and ``NEXUS_OTEL_LOCAL_MAX_FILES`` files (default 5).

``NEXUS_OTEL_TAIL_SAMPLING_RATIO`` (0 to 1) and ``NEXUS_OTEL_TAIL_SAMPLING_SLOW_MS``
(milliseconds, zero or more) turn on in-process tail sampling
(:class:`~nexus_otel.processors.tail_sampling.TailSampling`); setting either is
enough (the ratio defaults to 1, the threshold to none).

``NEXUS_OTEL_OTLP_ENCODER`` chooses how the OTLP span and log record exporters (either
protocol) serialize a batch: ``fast`` (the default) writes the protobuf bytes directly
(:mod:`nexus_otel.exporters.otlp_encoding`), ``stock`` uses the SDK's exporter
unchanged.

Logs are the third signal (``OTEL_LOGS_EXPORTER``: ``otlp``, ``local``, ``console``,
``none``, or a comma list): to the OTLP endpoint when one is set (the general one or
``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT``), else kept on this machine beside the traces,
with ``OTEL_EXPORTER_OTLP_LOGS_*`` resolved as for the other signals.
``NEXUS_OTEL_CAPTURE_LOGS`` (``true`` or ``false``; unset, on when logs are exported)
brings the app's own ``logging`` records into that signal. ``OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT``
and ``OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT`` bound each record, falling back to
``OTEL_ATTRIBUTE_COUNT_LIMIT`` and ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``; ``OTEL_BLRP_SCHEDULE_DELAY``
is how long the local store waits before it writes, as ``OTEL_BSP_SCHEDULE_DELAY`` is for spans.

``nexus-otel serve --workers N`` sets ``NEXUS_OTEL_WORKERS`` (N) and
``NEXUS_OTEL_WORKERS_DIR`` (a directory its workers share for the duration of
the server) in every worker's environment: each worker then gets its own
``service.instance.id`` and ``/metrics`` answers with the totals of all workers
(:mod:`nexus_otel.telemetry.worker_metrics`). Users do not set them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from opentelemetry.sdk.trace import sampling

from ..errors import ConfigurationError
from ..processors.tail_sampling import TailSampling
from .bound import EXEMPLAR_FILTERS

log = logging.getLogger("nexus_otel.telemetry")

TRACES_EXPORTERS = ("otlp", "local", "console", "none")
METRICS_EXPORTERS = ("otlp", "console", "prometheus", "none")
LOGS_EXPORTERS = ("otlp", "local", "console", "none")
CAPTURE_LOGS = "NEXUS_OTEL_CAPTURE_LOGS"
PROTOCOLS = ("http/protobuf", "grpc")
SAMPLERS = (
    "always_on", "always_off", "traceidratio",
    "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio",
)
DEFAULT_DATA_DIR = ".nexus-otel"
TAIL_SAMPLING_RATIO = "NEXUS_OTEL_TAIL_SAMPLING_RATIO"
TAIL_SAMPLING_SLOW_MS = "NEXUS_OTEL_TAIL_SAMPLING_SLOW_MS"
OTLP_ENCODER = "NEXUS_OTEL_OTLP_ENCODER"
OTLP_ENCODERS = ("fast", "stock")
WORKERS = "NEXUS_OTEL_WORKERS"
WORKERS_DIR = "NEXUS_OTEL_WORKERS_DIR"
BAGGAGE_KEYS = "NEXUS_OTEL_BAGGAGE_KEYS"
BAGGAGE_METRIC_KEYS = "NEXUS_OTEL_BAGGAGE_METRIC_KEYS"
DELIVERY_SPANS = "NEXUS_OTEL_DELIVERY_SPANS"
UNTRACED_HOOKS = "NEXUS_OTEL_UNTRACED_HOOKS"
WORKFLOW_SAMPLING = "NEXUS_OTEL_WORKFLOW_SAMPLING"
STUCK_AFTER = "NEXUS_OTEL_STUCK_AFTER"
OUTBOX_URL = "NEXUS_OTEL_OUTBOX_URL"
OUTBOX_LEASE = "NEXUS_OTEL_OUTBOX_LEASE"
SEMCONV_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"
GEN_AI_OPT_IN = "gen_ai_latest_experimental"
"""The ``OTEL_SEMCONV_STABILITY_OPT_IN`` value that adds the GenAI conventions to workflow spans."""
DEFAULT_PROPAGATORS = ("tracecontext", "baggage")
RESERVED_ATTRIBUTE_PREFIXES = ("nexus.", "error.", "exception.", "enduser.", "session.", "http.", "url.", "server.",
                               "client.", "network.", "user_agent.", "gen_ai.", "db.", "service.", "otel.",
                               "telemetry.", "code.")
"""Attribute names the workflow span and its records may carry already: no baggage key may take one."""
_BAGGAGE_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""A W3C baggage key: an RFC 7230 token."""
TEMPORALITIES = ("cumulative", "delta", "lowmemory")
COMPRESSIONS = ("gzip", "deflate", "none")
_SIGNAL_PATH = re.compile(r"/v1/(traces|metrics|logs)/?$")
_DECIMAL = re.compile(r"[+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TRUE = ("true",)
_FALSE = ("false", "")
_GENERAL_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
_TRACES_METRICS_ENDPOINTS = (
    _GENERAL_ENDPOINT, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)
"""Any of these sends traces and metrics over OTLP by default."""
_LOGS_ENDPOINTS = (_GENERAL_ENDPOINT, "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
"""Either of these sends log records over OTLP by default."""
_ENDPOINT_VARS = (*_TRACES_METRICS_ENDPOINTS, "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
_NON_NEGATIVE_INT_VARS = (
    "OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_EXPORT_TIMEOUT",
    "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BLRP_SCHEDULE_DELAY", "OTEL_BLRP_EXPORT_TIMEOUT",
    "OTEL_BLRP_MAX_QUEUE_SIZE", "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_METRIC_EXPORT_INTERVAL", "OTEL_METRIC_EXPORT_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT",
    "NEXUS_OTEL_LOCAL_MAX_BYTES", "NEXUS_OTEL_LOCAL_MAX_FILES", WORKERS,
    "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_SPAN_EVENT_COUNT_LIMIT",
    "OTEL_SPAN_LINK_COUNT_LIMIT", "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT", "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT",
)


@dataclass(frozen=True, slots=True)
class OtlpTarget:
    """Where and how one signal's OTLP exporter sends (``OTEL_EXPORTER_OTLP_*``), resolved as the specification says.

    For each setting the signal's own variable wins over the general one. None (or no headers)
    leaves the setting to the exporter's default.
    """

    endpoint: str | None = None
    """The signal's own endpoint as it is, else the general one (plus ``/v1/<signal>`` over http/protobuf)."""
    timeout: float | None = None
    """Seconds per export: the variables are in milliseconds (the Python exporters alone would read seconds)."""
    headers: tuple[tuple[str, str], ...] = ()
    compression: str | None = None
    """``gzip``, ``deflate`` or ``none``."""


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """What the environment asks of telemetry, validated."""

    sdk_disabled: bool = False
    service_name: str | None = None
    """``OTEL_SERVICE_NAME``: wins over ``OTEL_RESOURCE_ATTRIBUTES`` and the app's name."""
    resource_attributes: tuple[tuple[str, str], ...] = ()
    """``OTEL_RESOURCE_ATTRIBUTES``, values percent-decoded as the SDK does."""
    traces_exporters: tuple[str, ...] = ()
    metrics_exporters: tuple[str, ...] = ()
    traces_protocol: str = "http/protobuf"
    metrics_protocol: str = "http/protobuf"
    sampler: sampling.Sampler = sampling.DEFAULT_ON
    data_dir: str = DEFAULT_DATA_DIR
    local_max_bytes: int = 10 * 1024 * 1024
    local_max_files: int = 5
    metric_export_interval: float = 60.0
    """Seconds between metric pushes (``OTEL_METRIC_EXPORT_INTERVAL`` is in milliseconds)."""
    exemplar_filter: str = "trace_based"
    """Which measurements keep an exemplar (``OTEL_METRICS_EXEMPLAR_FILTER``)."""
    tail_sampling: TailSampling | None = None
    """In-process tail sampling (``NEXUS_OTEL_TAIL_SAMPLING_*``); None keeps every sampled span."""
    otlp_encoder: str = "fast"
    """How OTLP span batches are serialized (``NEXUS_OTEL_OTLP_ENCODER``): ``fast`` or the SDK's (``stock``)."""
    workers: int = 1
    """Worker processes serving this app (``NEXUS_OTEL_WORKERS``, set by ``serve --workers``)."""
    workers_dir: str | None = None
    """The directory those workers share (``NEXUS_OTEL_WORKERS_DIR``); None when not one of several workers."""
    otlp_traces: OtlpTarget = OtlpTarget()
    """The OTLP span exporter's endpoint, timeout, headers and compression."""
    otlp_metrics: OtlpTarget = OtlpTarget()
    """The OTLP metric exporter's endpoint, timeout, headers and compression."""
    metrics_delta: bool = False
    """``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` is ``delta`` or ``lowmemory``: OTLP metrics need a
    reader of their own (the shared hub is cumulative)."""
    bsp_schedule_delay_ms: int | None = None
    """``OTEL_BSP_SCHEDULE_DELAY`` if set: the local store then waits that long too (else half a second)."""
    logs_exporters: tuple[str, ...] = ()
    """``OTEL_LOGS_EXPORTER``: where log records go (``otlp``, ``local``, ``console``); empty: no logs signal."""
    logs_protocol: str = "http/protobuf"
    otlp_logs: OtlpTarget = OtlpTarget()
    """The OTLP log exporter's endpoint, timeout, headers and compression."""
    capture_logs: bool | None = None
    """``NEXUS_OTEL_CAPTURE_LOGS``: the app's ``logging`` records become log records; None: on when logs are
    exported."""
    logrecord_attribute_count_limit: int | None = None
    """``OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT`` (else ``OTEL_ATTRIBUTE_COUNT_LIMIT``); None: the SDK's 128."""
    logrecord_attribute_value_length_limit: int | None = None
    """``OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT`` (else ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``): bodies and
    string attributes are cut to it after redaction; None: the redactor's own bounds."""
    blrp_schedule_delay_ms: int | None = None
    """``OTEL_BLRP_SCHEDULE_DELAY`` if set: the local store's log batches wait that long (else half a second)."""
    span_limits: tuple[tuple[str, int], ...] = ()
    """The ``OTEL_SPAN_*`` / ``OTEL_EVENT_*`` / ``OTEL_LINK_*`` / ``OTEL_ATTRIBUTE_*`` limits as
    ``SpanLimits`` keyword arguments, each given (``SpanLimits.UNSET``: no limit), so the SDK reads none from
    the process environment; () leaves them to the SDK (:func:`span_limits`)."""
    propagators: tuple[str, ...] = DEFAULT_PROPAGATORS
    """``OTEL_PROPAGATORS``: the propagators' names, in order (default ``tracecontext,baggage``; ``none``: ())."""
    baggage_keys: tuple[str, ...] = ()
    """``NEXUS_OTEL_BAGGAGE_KEYS``: baggage copied onto the workflow span, its record and logs, and sent on."""
    baggage_metric_keys: tuple[str, ...] = ()
    """``NEXUS_OTEL_BAGGAGE_METRIC_KEYS``: those of ``baggage_keys`` also put on the workflow metrics."""
    delivery_spans: bool = True
    """``NEXUS_OTEL_DELIVERY_SPANS``: a span per webhook attempt and audit batch, linked to its executions."""
    untraced_hooks: tuple[str, ...] = ()
    """``NEXUS_OTEL_UNTRACED_HOOKS``: ``plugin`` or ``plugin:event`` entries (``*`` for any) whose hooks get
    no span (their timing metrics stay)."""
    workflow_sampling: tuple[tuple[str, float], ...] = ()
    """``NEXUS_OTEL_WORKFLOW_SAMPLING``: ``workflow=ratio`` pairs, the head sampling ratio of that workflow's
    new traces."""
    stuck_after: float | None = None
    """``NEXUS_OTEL_STUCK_AFTER``: seconds after which an execution is reported stuck, for workflows without a
    ``stuck_after`` of their own (None: never)."""
    outbox_url: str | None = None
    """``NEXUS_OTEL_OUTBOX_URL``: a ``postgresql://`` URL, the shared outbox every replica's durable sinks queue in
    (None: each process's local outbox under the data dir)."""
    outbox_lease: float = 60.0
    """``NEXUS_OTEL_OUTBOX_LEASE``: seconds a leased message is one worker's; a worker that dies mid-delivery
    leaves its messages to the others when this ends (a webhook's lease is at least 4 times its timeout)."""
    gen_ai_semconv: bool = False
    """``OTEL_SEMCONV_STABILITY_OPT_IN`` holds ``gen_ai_latest_experimental``: workflow spans carry the GenAI
    conventions' ``invoke_workflow`` attributes."""

    def with_settings(self, settings: Mapping[str, Any]) -> TelemetryConfig:
        """This configuration with an app's own settings (``APP_SETTINGS``; None values keep the variable's)."""
        return _with_settings(self, settings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TelemetryConfig:
        """Parse and check ``environ`` (default: ``os.environ``)."""
        env = os.environ if environ is None else environ
        for var in _ENDPOINT_VARS:
            _check_endpoint(var, env.get(var))
        _warn_signal_path(env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
        for var in _NON_NEGATIVE_INT_VARS:
            _check_non_negative_int(var, env.get(var))
        for prefix in ("OTEL_BSP", "OTEL_BLRP"):
            _check_batching(env, prefix)
        # A signal goes to OTLP by default once the general endpoint or its own is set: a logs endpoint alone
        # sends log records there, not spans to an exporter's default of localhost:4318 (traces and metrics
        # keep their older rule, where either one's endpoint sends both). With no endpoint, traces and logs
        # stay on this machine (``nexus-otel traces``, ``nexus-otel logs``).
        has_endpoint = any(env.get(v, "").strip() for v in _TRACES_METRICS_ENDPOINTS)
        has_logs_endpoint = any(env.get(v, "").strip() for v in _LOGS_ENDPOINTS)
        traces_default = "otlp" if has_endpoint else "local"
        metrics_default = "otlp" if has_endpoint else "none"
        logs_default = "otlp" if has_logs_endpoint else "local"
        general_protocol = _choice(
            "OTEL_EXPORTER_OTLP_PROTOCOL", env.get("OTEL_EXPORTER_OTLP_PROTOCOL"),
            PROTOCOLS, "http/protobuf",
        )
        service_name = (env.get("OTEL_SERVICE_NAME") or "").strip() or None
        traces_protocol = _choice("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
                                  PROTOCOLS, general_protocol)
        metrics_protocol = _choice("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
                                   env.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"), PROTOCOLS, general_protocol)
        logs_protocol = _choice("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", env.get("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL"),
                                PROTOCOLS, general_protocol)
        baggage_keys = baggage_key_list(BAGGAGE_KEYS, env.get(BAGGAGE_KEYS))
        metric_keys = baggage_key_list(BAGGAGE_METRIC_KEYS, env.get(BAGGAGE_METRIC_KEYS))
        return cls(
            sdk_disabled=_bool("OTEL_SDK_DISABLED", env.get("OTEL_SDK_DISABLED")),
            service_name=service_name,
            resource_attributes=_resource_attributes(env.get("OTEL_RESOURCE_ATTRIBUTES")),
            traces_exporters=_exporters(
                "OTEL_TRACES_EXPORTER", env.get("OTEL_TRACES_EXPORTER"),
                TRACES_EXPORTERS, traces_default,
            ),
            metrics_exporters=_exporters(
                "OTEL_METRICS_EXPORTER", env.get("OTEL_METRICS_EXPORTER"),
                METRICS_EXPORTERS, metrics_default,
            ),
            traces_protocol=traces_protocol,
            metrics_protocol=metrics_protocol,
            sampler=_sampler(env.get("OTEL_TRACES_SAMPLER"), env.get("OTEL_TRACES_SAMPLER_ARG")),
            data_dir=(env.get("NEXUS_OTEL_DATA_DIR") or "").strip() or DEFAULT_DATA_DIR,
            local_max_bytes=_positive_int(env, "NEXUS_OTEL_LOCAL_MAX_BYTES", 10 * 1024 * 1024),
            local_max_files=_positive_int(env, "NEXUS_OTEL_LOCAL_MAX_FILES", 5),
            metric_export_interval=_positive_int(env, "OTEL_METRIC_EXPORT_INTERVAL", 60_000) / 1000,
            exemplar_filter=_choice("OTEL_METRICS_EXEMPLAR_FILTER", env.get("OTEL_METRICS_EXEMPLAR_FILTER"),
                                    EXEMPLAR_FILTERS, "trace_based"),
            tail_sampling=_tail_sampling(env),
            otlp_encoder=otlp_encoder(env),
            workers=_positive_int(env, WORKERS, 1),
            workers_dir=(env.get(WORKERS_DIR) or "").strip() or None,
            otlp_traces=_otlp_target(env, "traces", traces_protocol),
            otlp_metrics=_otlp_target(env, "metrics", metrics_protocol),
            metrics_delta=_choice("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
                                  env.get("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"),
                                  TEMPORALITIES, "cumulative") != "cumulative",
            bsp_schedule_delay_ms=_positive_int(env, "OTEL_BSP_SCHEDULE_DELAY", 0) or None,
            logs_exporters=_exporters("OTEL_LOGS_EXPORTER", env.get("OTEL_LOGS_EXPORTER"),
                                      LOGS_EXPORTERS, logs_default),
            logs_protocol=logs_protocol,
            otlp_logs=_otlp_target(env, "logs", logs_protocol),
            capture_logs=_optional_bool(CAPTURE_LOGS, env.get(CAPTURE_LOGS)),
            logrecord_attribute_count_limit=_limit(
                env, "OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT", "OTEL_ATTRIBUTE_COUNT_LIMIT"),
            logrecord_attribute_value_length_limit=_limit(
                env, "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"),
            blrp_schedule_delay_ms=_positive_int(env, "OTEL_BLRP_SCHEDULE_DELAY", 0) or None,
            span_limits=span_limits(env),
            propagators=_propagators(env.get("OTEL_PROPAGATORS")),
            baggage_keys=baggage_keys,
            baggage_metric_keys=metric_keys,
            delivery_spans=_bool(DELIVERY_SPANS, env.get(DELIVERY_SPANS) or "true"),
            untraced_hooks=untraced_hooks(UNTRACED_HOOKS, env.get(UNTRACED_HOOKS)),
            workflow_sampling=workflow_sampling(WORKFLOW_SAMPLING, env.get(WORKFLOW_SAMPLING)),
            stuck_after=stuck_after(STUCK_AFTER, env.get(STUCK_AFTER)),
            outbox_url=outbox_url(OUTBOX_URL, env.get(OUTBOX_URL)),
            outbox_lease=_outbox_lease(env.get(OUTBOX_LEASE)),
            gen_ai_semconv=GEN_AI_OPT_IN in _names(env.get(SEMCONV_OPT_IN)),
        )


APP_SETTINGS = ("baggage_keys", "baggage_metric_keys", "untraced_hooks", "workflow_sampling", "delivery_spans",
                "stuck_after")
"""The settings an app may give itself (``Nexus(baggage_keys=...)``), winning over their variables."""


def _with_settings(config: TelemetryConfig, settings: Mapping[str, Any]) -> TelemetryConfig:
    """``config`` with the app's own ``settings`` (None values ignored), checked as their variables are."""
    unknown = sorted(set(settings) - set(APP_SETTINGS))
    if unknown:
        raise ConfigurationError("settings", unknown, "some of " + ", ".join(APP_SETTINGS))
    given = {name: value for name, value in settings.items() if value is not None}
    changes: dict[str, Any] = {}
    if "baggage_keys" in given:
        changes["baggage_keys"] = baggage_key_list("baggage_keys", _listed("baggage_keys", given["baggage_keys"]))
    if "baggage_metric_keys" in given:
        changes["baggage_metric_keys"] = baggage_key_list(
            "baggage_metric_keys", _listed("baggage_metric_keys", given["baggage_metric_keys"]))
    if "untraced_hooks" in given:
        changes["untraced_hooks"] = untraced_hooks("untraced_hooks", _listed("untraced_hooks",
                                                                              given["untraced_hooks"]))
    if "workflow_sampling" in given:
        value = given["workflow_sampling"]
        if not isinstance(value, Mapping):
            raise ConfigurationError("workflow_sampling", value, "a mapping of workflow names to ratios (0 to 1)")
        changes["workflow_sampling"] = workflow_sampling("workflow_sampling", value)
    if "delivery_spans" in given:
        if not isinstance(given["delivery_spans"], bool):
            raise ConfigurationError("delivery_spans", given["delivery_spans"], "True or False")
        changes["delivery_spans"] = given["delivery_spans"]
    if "stuck_after" in given:
        if isinstance(given["stuck_after"], str):
            raise ConfigurationError("stuck_after", given["stuck_after"], STUCK_AFTER_EXPECTED)
        changes["stuck_after"] = stuck_after("stuck_after", given["stuck_after"])
    config = dataclasses.replace(config, **changes)
    check_metric_keys(f"{BAGGAGE_METRIC_KEYS} (baggage_metric_keys)", config.baggage_metric_keys,
                      config.baggage_keys)
    return config


def _listed(setting: str, value: Any) -> Sequence[str]:
    """A list of names given as a list, tuple or set of strings (a plain string is a mistake worth naming)."""
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)) \
            or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(setting, value, "a list of strings")
    return sorted(value) if isinstance(value, (set, frozenset)) else list(value)


def otlp_encoder(environ: Mapping[str, str]) -> str:
    """``NEXUS_OTEL_OTLP_ENCODER``: ``fast`` (default) or ``stock``; anything else is a ConfigurationError."""
    return _choice(OTLP_ENCODER, environ.get(OTLP_ENCODER), OTLP_ENCODERS, "fast")


def _first(env: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    """The first of ``names`` set (non-empty) in ``env``, and its value: the signal's own variable, then the general."""
    for name in names:
        value = (env.get(name) or "").strip()
        if value:
            return name, value
    return None


def _otlp_target(env: Mapping[str, str], signal: str, protocol: str) -> OtlpTarget:
    """``signal``'s (``traces``, ``metrics`` or ``logs``) OTLP settings, each from its own variable, else the
    general one."""
    upper = signal.upper()

    def setting(name: str) -> tuple[str, str] | None:
        return _first(env, f"OTEL_EXPORTER_OTLP_{upper}_{name}", f"OTEL_EXPORTER_OTLP_{name}")

    endpoint = None
    found = setting("ENDPOINT")
    if found is not None:
        var, value = found
        specific = var != "OTEL_EXPORTER_OTLP_ENDPOINT"
        endpoint = value if specific or protocol == "grpc" else f"{value.removesuffix('/')}/v1/{signal}"
    timeout = setting("TIMEOUT")
    headers: tuple[tuple[str, str], ...] = ()
    found = setting("HEADERS")
    if found is not None:
        from opentelemetry.util.re import parse_env_headers

        headers = tuple(parse_env_headers(found[1], liberal=True).items())
    compression = setting("COMPRESSION")
    if compression is not None and compression[1].lower() not in COMPRESSIONS:
        raise ConfigurationError(compression[0], env[compression[0]], ", ".join(COMPRESSIONS[:-1]) + " or none")
    return OtlpTarget(
        endpoint=endpoint,
        timeout=int(timeout[1]) / 1000 if timeout is not None else None,  # checked to be a whole number
        headers=headers,
        compression=compression[1].lower() if compression is not None else None,
    )


def _names(raw: str | None) -> list[str]:
    """A comma-separated list, each name stripped, empty ones dropped."""
    return [n.strip() for n in (raw or "").split(",") if n.strip()]


def _propagators(raw: str | None) -> tuple[str, ...]:
    """``OTEL_PROPAGATORS``: names in order, ``none`` alone for none; unset or empty is the default.

    The names are checked against the installed propagators where the providers are built.
    """
    names = [n.lower() for n in _names(raw)]
    if not names:
        return DEFAULT_PROPAGATORS
    if "none" in names:
        if len(names) > 1:
            raise ConfigurationError("OTEL_PROPAGATORS", raw, '"none" alone, or a list without it')
        return ()
    return tuple(dict.fromkeys(names))


def baggage_key_list(setting: str, raw: str | Sequence[str] | None) -> tuple[str, ...]:
    """Baggage keys from a comma-separated string (or a list of keys); each must be a W3C baggage key, and none
    may take a name the telemetry contract or OpenTelemetry's conventions give the workflow span (a caller's
    baggage must not pass for ``error.type``, ``enduser.id`` or ``nexus.workflow.name``)."""
    names = _names(raw) if isinstance(raw, str) or raw is None else [str(k).strip() for k in raw]
    for name in names:
        if not _BAGGAGE_KEY.fullmatch(name):
            raise ConfigurationError(setting, raw, f"baggage keys (W3C tokens: letters, digits, !#$%&'*+-.^_`|~); "
                                                   f"{name!r} is not one")
        if name.lower().startswith(RESERVED_ATTRIBUTE_PREFIXES):
            raise ConfigurationError(setting, raw, f"baggage keys outside the names spans already use "
                                                   f"({', '.join(p + '*' for p in RESERVED_ATTRIBUTE_PREFIXES)}); "
                                                   f"{name!r} is one")
    return tuple(dict.fromkeys(names))


def check_metric_keys(setting: str, metric_keys: tuple[str, ...], keys: tuple[str, ...]) -> None:
    """Keys put on metrics must be among the baggage keys copied at all (a metric label is a copy too)."""
    missing = [k for k in metric_keys if k not in keys]
    if missing:
        raise ConfigurationError(setting, ",".join(metric_keys),
                                 f"keys also listed as baggage keys ({', '.join(missing)} is not)")


def untraced_hooks(setting: str, raw: str | Sequence[str] | None) -> tuple[str, ...]:
    """``plugin`` or ``plugin:event`` entries; ``*`` stands for any plugin or any event."""
    entries = _names(raw) if isinstance(raw, str) or raw is None else [str(e).strip() for e in raw]
    for entry in entries:
        plugin, _, event = entry.partition(":")
        if not plugin.strip() or (":" in entry and not event.strip()):
            raise ConfigurationError(setting, raw, f'"plugin" or "plugin:event" entries ({entry!r} is neither)')
    return tuple(dict.fromkeys(entries))


def workflow_sampling(setting: str, raw: str | Mapping[str, float] | None) -> tuple[tuple[str, float], ...]:
    """``workflow=ratio`` pairs (or a mapping), each ratio from 0 to 1."""
    if raw is None:
        return ()
    pairs: list[tuple[str, object]] = []
    if isinstance(raw, str):
        for item in _names(raw):
            name, eq, text = item.rpartition("=")
            if not eq or not name.strip():
                raise ConfigurationError(setting, raw, f'"workflow=ratio" pairs ({item!r} is not one)')
            pairs.append((name.strip(), text.strip()))
    else:
        pairs = list(raw.items())
    out: dict[str, float] = {}
    for name, ratio in pairs:
        if isinstance(ratio, bool):  # True is a number to Python, not a ratio to anyone writing it
            raise ConfigurationError(setting, raw, f"ratios from 0 to 1 ({name}={ratio!r} is not)")
        try:
            value = float(ratio)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            value = math.nan
        if not 0.0 <= value <= 1.0:
            raise ConfigurationError(setting, raw, f"ratios from 0 to 1 ({name}={ratio!r} is not)")
        out[str(name)] = value
    return tuple(out.items())


OUTBOX_URL_EXPECTED = "a postgresql:// URL (the shared outbox's database), or unset for the local outbox"


def outbox_url(setting: str, raw: Any) -> str | None:
    """A shared outbox's ``postgresql://`` URL; None (the local outbox) when unset or empty."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if not isinstance(raw, str):
        raise ConfigurationError(setting, raw, OUTBOX_URL_EXPECTED)
    value = raw.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("postgresql", "postgres"):
        shown = value if not parts.password else value.replace(f":{parts.password}@", ":***@")
        raise ConfigurationError(setting, shown, OUTBOX_URL_EXPECTED)
    return value


def _outbox_lease(raw: str | None) -> float:
    """``NEXUS_OTEL_OUTBOX_LEASE``: seconds, from 1 to a day (unset or empty: 60)."""
    if raw is None or not raw.strip():
        return 60.0
    value = _decimal(OUTBOX_LEASE, raw, "a number of seconds from 1 to 86400")
    if not 1.0 <= value <= 86400.0:
        raise ConfigurationError(OUTBOX_LEASE, raw, "a number of seconds from 1 to 86400")
    return value


STUCK_AFTER_EXPECTED = "a number of seconds, zero or more (0: never)"


def stuck_after(setting: str, raw: str | float | None) -> float | None:
    """Seconds after which an execution is stuck: a number from a variable (unset or empty: None) or an
    app's or workflow's own (an int or float); 0 means never (None)."""
    if raw is None:
        return None
    if isinstance(raw, str):
        if not raw.strip():
            return None
        value = _decimal(setting, raw, STUCK_AFTER_EXPECTED)
    elif isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0 <= raw < math.inf:
        raise ConfigurationError(setting, raw, STUCK_AFTER_EXPECTED)
    else:
        value = float(raw)
    return value or None


def _bool(var: str, raw: str | None) -> bool:
    value = (raw or "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(var, raw, '"true" or "false"')


def _optional_bool(var: str, raw: str | None) -> bool | None:
    """``true`` or ``false`` (any case); unset or empty is None (the default decides)."""
    if raw is None or not raw.strip():
        return None
    return _bool(var, raw)


_SPAN_LIMIT_DEFAULT = 128
"""The SDK's default for each count limit of a span, its events and links."""
_UNLIMITED = -1
"""``SpanLimits.UNSET``: no limit."""


def span_limits(env: Mapping[str, str]) -> tuple[tuple[str, int], ...]:
    """``SpanLimits``' keyword arguments as the SDK reads them from a process environment, here from ``env``
    (each variable already checked to be a whole number >= 0, or empty): a span's, an event's and a link's own
    count limits fall back to ``OTEL_ATTRIBUTE_COUNT_LIMIT``, then 128; a span's value length to
    ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``, then none; a variable set but empty means no limit."""
    def read(name: str, default: int | None) -> int | None:  # the SDK's SpanLimits._from_env_if_absent
        if name not in env:
            return default
        raw = env[name].strip()
        return None if raw == "" else int(raw)

    general = read("OTEL_ATTRIBUTE_COUNT_LIMIT", None)
    counts = _SPAN_LIMIT_DEFAULT if general is None else general
    length = read("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", None)
    limits = {
        "max_attributes": counts,
        "max_events": read("OTEL_SPAN_EVENT_COUNT_LIMIT", _SPAN_LIMIT_DEFAULT),
        "max_links": read("OTEL_SPAN_LINK_COUNT_LIMIT", _SPAN_LIMIT_DEFAULT),
        "max_span_attributes": read("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", counts),
        "max_event_attributes": read("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", counts),
        "max_link_attributes": read("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", counts),
        "max_attribute_length": length,
        "max_span_attribute_length": read("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", length),
    }
    return tuple((name, _UNLIMITED if value is None else value) for name, value in limits.items())


def _limit(env: Mapping[str, str], var: str, general: str) -> int | None:
    """A limit from ``var``, else from ``general`` (both already checked to be whole numbers >= 0); None unset."""
    found = _first(env, var, general)
    return int(found[1]) if found is not None else None


def _choice(var: str, raw: str | None, allowed: tuple[str, ...], default: str) -> str:
    value = (raw or "").strip().lower()
    if not value:
        return default
    if value not in allowed:
        hint = " (the Python OTLP exporters do not support http/json)" if value == "http/json" else ""
        raise ConfigurationError(var, raw, "one of " + ", ".join(allowed) + hint)
    return value


def _exporters(var: str, raw: str | None, allowed: tuple[str, ...], default: str) -> tuple[str, ...]:
    value = (raw or "").strip().lower()
    names = [n.strip() for n in value.split(",") if n.strip()] or [default]
    for name in names:
        if name not in allowed:
            raise ConfigurationError(var, raw, "a comma-separated list of " + ", ".join(allowed))
    if "none" in names:
        if len(names) > 1:
            raise ConfigurationError(var, raw, '"none" alone, or a list without it')
        return ()
    return tuple(dict.fromkeys(names))


def _check_endpoint(var: str, raw: str | None) -> None:
    if raw is None or not raw.strip():
        return
    try:
        parts = urlsplit(raw.strip())
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigurationError(var, raw, "a URL such as http://127.0.0.1:4318") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(var, raw, "a URL such as http://127.0.0.1:4318 (http or https)")


def _warn_signal_path(raw: str | None) -> None:
    """Warn when the general endpoint ends in a signal's path (``/v1/traces``): a common slip, since the
    specification has each exporter append its own signal's path to that variable (``.../v1/traces/v1/traces``),
    and a receiver then answers every export with 404."""
    value = (raw or "").strip()
    match = _SIGNAL_PATH.search(urlsplit(value).path) if value else None
    if match is None:
        return
    from ..urls import mask_url

    signal = match.group(1)
    shown = mask_url(value)
    base = shown[:shown.rindex(f"/v1/{signal}")]
    log.warning(
        "OTEL_EXPORTER_OTLP_ENDPOINT=%s ends in a signal's path (/v1/%s), but over http/protobuf every exporter "
        "appends its own signal's path to this variable (spans would go to %s/v1/traces); set "
        "OTEL_EXPORTER_OTLP_ENDPOINT=%s, or OTEL_EXPORTER_OTLP_%s_ENDPOINT=%s for %s alone",
        shown, signal, shown.rstrip("/"), base, signal.upper(), shown, signal)


def _check_non_negative_int(var: str, raw: str | None) -> None:
    if raw is None or not raw.strip():
        return
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigurationError(var, raw, "a whole number") from None
    if value < 0:
        raise ConfigurationError(var, raw, "a whole number, zero or more")


def _positive_int(env: Mapping[str, str], var: str, default: int) -> int:
    raw = env.get(var)
    if raw is None or not raw.strip():
        return default
    value = int(raw.strip())  # already checked to be a whole number >= 0
    if value < 1:
        raise ConfigurationError(var, raw, "a whole number of at least 1")
    return value


def _check_batching(env: Mapping[str, str], prefix: str) -> None:
    """A batch processor's settings as the SDK needs them: a delay, a queue and a batch of at least 1,
    the batch no larger than the queue (the SDK would raise a bare ValueError when the processor is built)."""
    for name in ("SCHEDULE_DELAY", "MAX_QUEUE_SIZE", "MAX_EXPORT_BATCH_SIZE"):
        _positive_int(env, f"{prefix}_{name}", 1)
    queue = _positive_int(env, f"{prefix}_MAX_QUEUE_SIZE", 2048)
    batch = _positive_int(env, f"{prefix}_MAX_EXPORT_BATCH_SIZE", 512)
    if batch > queue:
        batch_var = f"{prefix}_MAX_EXPORT_BATCH_SIZE"
        var = batch_var if env.get(batch_var) else f"{prefix}_MAX_QUEUE_SIZE"
        raise ConfigurationError(
            var, env.get(var), f"{prefix}_MAX_EXPORT_BATCH_SIZE ({batch}) no larger than "
            f"{prefix}_MAX_QUEUE_SIZE ({queue})")


def _resource_attributes(raw: str | None) -> tuple[tuple[str, str], ...]:
    """``key=value`` pairs, comma-separated, values percent-decoded (as the SDK reads them); a bad item is named."""
    if raw is None or not raw.strip():
        return ()
    pairs: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(
                "OTEL_RESOURCE_ATTRIBUTES", raw,
                f"comma-separated key=value pairs (bad item {item.strip()!r})",
            )
        pairs[key.strip()] = unquote(value.strip())
    return tuple(pairs.items())


def _tail_sampling(env: Mapping[str, str]) -> TailSampling | None:
    """Either variable turns tail sampling on; unset, nothing changes."""
    raw_ratio, raw_slow = env.get(TAIL_SAMPLING_RATIO), env.get(TAIL_SAMPLING_SLOW_MS)
    has_ratio = raw_ratio is not None and bool(raw_ratio.strip())
    has_slow = raw_slow is not None and bool(raw_slow.strip())
    if not (has_ratio or has_slow):
        return None
    ratio = _decimal(TAIL_SAMPLING_RATIO, raw_ratio, "a number from 0 to 1", 1.0) if has_ratio else 1.0
    slow = _decimal(TAIL_SAMPLING_SLOW_MS, raw_slow, "a number of milliseconds, zero or more") if has_slow else None
    return TailSampling(ratio=ratio, slow_ms=slow)


def _decimal(var: str, raw: str | None, expected: str, maximum: float = math.inf) -> float:
    """A plain decimal number from 0 to ``maximum`` (no nan, inf, hex or underscores)."""
    text = (raw or "").strip()
    value = float(text) if _DECIMAL.fullmatch(text) else -1.0
    if not 0.0 <= value <= maximum or math.isinf(value):
        raise ConfigurationError(var, raw, expected)
    return value


def _sampler(raw: str | None, raw_arg: str | None) -> sampling.Sampler:
    name = (raw or "").strip().lower() or "parentbased_always_on"
    if name not in SAMPLERS:
        raise ConfigurationError("OTEL_TRACES_SAMPLER", raw, "one of " + ", ".join(SAMPLERS))
    if not name.endswith("traceidratio"):
        return {
            "always_on": sampling.ALWAYS_ON,
            "always_off": sampling.ALWAYS_OFF,
            "parentbased_always_on": sampling.DEFAULT_ON,
            "parentbased_always_off": sampling.DEFAULT_OFF,
        }[name]
    ratio = 1.0
    if raw_arg is not None and raw_arg.strip():
        try:
            ratio = float(raw_arg)
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            raise ConfigurationError("OTEL_TRACES_SAMPLER_ARG", raw_arg, "a number from 0 to 1")
    if name == "traceidratio":
        return sampling.TraceIdRatioBased(ratio)
    return ParentBasedRatio(sampling.TraceIdRatioBased(ratio))


class ParentBasedRatio(sampling.ParentBased):
    """``parentbased_traceidratio`` as the configuration builds it: the SDK's ``ParentBased`` with its default
    delegates, so a local parent's children get the parent's decision (what :func:`follows_local_parents` tells)."""


def follows_local_parents(sampler: sampling.Sampler) -> bool:
    """Whether ``sampler`` is one the configuration built from a ``parentbased_*`` name (the default among them):
    a local parent's child then gets the parent's decision, with the given attributes and the parent's trace
    state. A sampler given otherwise is not judged (its delegates, or a subclass, may decide otherwise)."""
    return sampler is sampling.DEFAULT_ON or sampler is sampling.DEFAULT_OFF or type(sampler) is ParentBasedRatio
