"""The kit's logs path on the real binaries: the OTel SDK -> our Collector on the shipped configs -> VictoriaLogs.

Log records are emitted by the real SDK (``LoggerProvider`` + ``BatchLogRecordProcessor(OTLPLogExporter)``),
each inside a trace (half of them with the trace's sampled flag off: records are never sampled), and looked
up in VictoriaLogs through its LogsQL query API by trace id. Two set-ups run side by side:

* one Collector on ``deploy/otel-collector.yaml``, exporting to one VictoriaLogs;
* the scaled-out pair: a gateway on ``deploy/otel-collector-gateway.yaml`` (its resolver listing the samplers,
  as in tests/test_collector_gateway.py) routing to two samplers on ``deploy/otel-collector-sampler.yaml``,
  each exporting to a VictoriaLogs of its own, so the test sees which sampler every record went through.

Only listening addresses and destinations come from the environment variables the shipped files read.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from .deploy_servers import Collector, VictoriaLogs, gateway_config_with_static_samplers, require_binary
from .prometheus_server import wait_until

SERVICE = "logs-e2e"
SCOPE = "nexus_otel.requests"
TRACES, RECORDS_PER_TRACE = 12, 2  # started + completed/failed, as the request log writes them
WAIT = 20.0  # s: the SDK's batch (0.1 s) + the Collector's batch (2 s; 1 s at the gateway) + indexing, with room
BEARER = "Bearer abc.DEF-123456"
CARD = "4111 1111 1111 1111"
PASSWORD = "hunter2"


@dataclass(frozen=True)
class Sent:
    """One log record as the SDK emitted it."""

    trace_id: str
    span_id: str
    event: str
    status: str
    sampled: bool


def _emit(endpoint: str, run: str) -> list[Sent]:
    """Emit the request log's records of TRACES executions (every third failing) plus one with secrets in it."""
    provider = LoggerProvider(resource=Resource.create({"service.name": SERVICE, "test.run": run}))
    provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{endpoint}/v1/logs"),
                                                              schedule_delay_millis=100))
    logger = provider.get_logger(SCOPE)
    sent = []
    for index in range(TRACES):
        sampled = index % 2 == 0
        trace_id, span_id = secrets.randbits(128), secrets.randbits(64)
        context = trace.set_span_in_context(NonRecordingSpan(SpanContext(
            trace_id, span_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else 0))))
        failed = index % 3 == 0
        end = ("nexus.workflow.failed", "failed") if failed else ("nexus.workflow.completed", "completed")
        for event, status in (("nexus.workflow.started", "started"), end):
            attributes = {"nexus.workflow.name": "checkout", "nexus.workflow.id": f"{run}-{index}"}
            if status != "started":
                attributes |= {"nexus.workflow.status": status, "nexus.workflow.duration": 0.25}
            if failed and status == "failed":
                attributes |= {"exception.type": "ValueError", "exception.message": "card declined"}
            logger.emit(body=f"workflow {status}", event_name=event, context=context, attributes=attributes,
                        severity_number=SeverityNumber.ERROR if status == "failed" else SeverityNumber.INFO,
                        severity_text="ERROR" if status == "failed" else "INFO")
            sent.append(Sent(format(trace_id, "032x"), format(span_id, "016x"), event, status, sampled))
    # A service without nexus-otel's redaction logs secrets: the Collector masks and drops them.
    secret_trace = secrets.randbits(128)
    logger.emit(body=f"charge retried with {BEARER} for card {CARD}", severity_number=SeverityNumber.WARN,
                context=trace.set_span_in_context(NonRecordingSpan(SpanContext(
                    secret_trace, secrets.randbits(64), is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)))),
                attributes={"db.password": PASSWORD, "note": f"paid with {CARD}", "order.id": "o-42"})
    sent.append(Sent(format(secret_trace, "032x"), "", "", "secret", True))
    assert provider.force_flush(10_000)
    provider.shutdown()
    return sent


def _by_trace(stores: list[VictoriaLogs], run: str) -> dict[str, dict[int, list[dict]]]:
    """trace id -> {index of the VictoriaLogs holding them: its records of that trace} for this run."""
    out: dict[str, dict[int, list[dict]]] = {}
    for index, store in enumerate(stores):
        for entry in store.query(f'service.name:="{SERVICE}" AND test.run:="{run}"', limit="1000"):
            out.setdefault(entry["trace_id"], {}).setdefault(index, []).append(entry)
    return out


@dataclass
class Setup:
    """A Collector set-up under test: where the SDK sends, the VictoriaLogs it ends in, what was sent."""

    name: str
    stores: list[VictoriaLogs]
    sent: list[Sent]
    run: str

    def landed(self) -> dict[str, dict[int, list[dict]]]:
        return _by_trace(self.stores, self.run)


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Setup]]:
    """Both set-ups running, the records sent to each, and every record arrived (or the wait timed out)."""
    require_binary("otelcol")
    require_binary("victorialogs")
    tmp: Path = tmp_path_factory.mktemp("collector-logs")
    single_store, store_a, store_b = (VictoriaLogs(tmp, name=f"victorialogs-{n}") for n in ("single", "a", "b"))
    with single_store, store_a, store_b:
        single = Collector(tmp, "otel-collector.yaml", name="single", victorialogs_endpoint=single_store.otlp_endpoint)
        samplers = [Collector(tmp, "otel-collector-sampler.yaml", name=f"sampler-{n}",
                              victorialogs_endpoint=store.otlp_endpoint)
                    for n, store in (("a", store_a), ("b", store_b))]
        gateway_config = gateway_config_with_static_samplers(tmp / "gateway.yaml",
                                                             [s.otlp_grpc_endpoint for s in samplers])
        with single, samplers[0], samplers[1], Collector(tmp, str(gateway_config), name="gateway") as gateway:
            out = {}
            for name, collector, stores in (("single", single, [single_store]),
                                            ("gateway", gateway, [store_a, store_b])):
                run = secrets.token_hex(4)
                out[name] = Setup(name, stores, _emit(collector.otlp_http_url, run), run)
            for path in out.values():
                wanted = {s.trace_id for s in path.sent}
                try:
                    wait_until(lambda path=path, wanted=wanted: wanted <= set(path.landed()) and sum(
                        len(r) for where in path.landed().values() for r in where.values()) >= len(path.sent),
                        WAIT, what=f"every record through the {path.name} set-up")
                except TimeoutError:
                    pass  # the tests below say what is missing
            yield out


@pytest.mark.parametrize("setup", ["single", "gateway"])
def test_every_record_arrives_with_its_trace_and_span_ids(paths: dict[str, Setup], setup: str) -> None:
    """Each record is found in VictoriaLogs by its trace id, once, with span id, scope, severity and attributes."""
    path = paths[setup]
    landed = path.landed()
    for sent in path.sent:
        if sent.status == "secret":
            continue
        records = [r for where in landed.get(sent.trace_id, {}).values() for r in where
                   if r.get("event_name") == sent.event]
        assert len(records) == 1, f"{setup}: {sent} -> {records}"
        (record,) = records
        assert record["span_id"] == sent.span_id, record
        assert record["scope.name"] == SCOPE and record["_msg"] == f"workflow {sent.status}", record
        assert record["nexus.workflow.name"] == "checkout", record
        if sent.status == "failed":
            assert (record["severity_text"], record["severity_number"]) == ("ERROR", "17"), record
            assert record["exception.type"] == "ValueError", record
        if sent.status != "started":
            assert record["nexus.workflow.status"] == sent.status, record
    unsampled = {s.trace_id for s in path.sent if not s.sampled}
    assert unsampled and unsampled <= set(landed), "records of unsampled traces are kept too"


def test_a_query_by_trace_id_returns_that_trace_only(paths: dict[str, Setup]) -> None:
    """The LogsQL the docs and Grafana's trace-to-logs link use (trace_id:="...") selects one trace's records."""
    path = paths["single"]
    trace_id = path.sent[0].trace_id
    records = path.stores[0].query(f'trace_id:="{trace_id}"')
    assert sorted(r["event_name"] for r in records) == sorted(s.event for s in path.sent if s.trace_id == trace_id)
    assert {r["trace_id"] for r in records} == {trace_id}


@pytest.mark.parametrize("setup", ["single", "gateway"])
def test_secrets_are_masked_and_sensitive_attributes_dropped(paths: dict[str, Setup], setup: str) -> None:
    """A bearer token and a card number in a body or attribute arrive masked; a `password` attribute not at all."""
    path = paths[setup]
    (secret,) = [s for s in path.sent if s.status == "secret"]
    records = [r for where in path.landed().get(secret.trace_id, {}).values() for r in where]
    assert len(records) == 1, records
    (record,) = records
    assert "db.password" not in record, record
    assert record["order.id"] == "o-42", record
    text = repr(record)
    for value in (BEARER.split()[1], CARD, PASSWORD):
        assert value not in text, f"{setup}: {value!r} arrived in {record}"
    assert record["_msg"] == "charge retried with **** for card ****", record
    assert record["note"] == "paid with ****", record


def test_the_gateway_keeps_each_traces_records_on_one_sampler(paths: dict[str, Setup]) -> None:
    """The gateway routes log records by trace id: every trace's records end on one sampler, and both get some."""
    landed = paths["gateway"].landed()
    traces = {s.trace_id for s in paths["gateway"].sent if s.status != "secret"}
    assert traces <= set(landed)
    for trace_id in traces:
        assert len(landed[trace_id]) == 1, f"trace {trace_id} split across samplers: {set(landed[trace_id])}"
    assert {index for trace_id in traces for index in landed[trace_id]} == {0, 1}, "both samplers got records"
