"""The logs signal: OTEL_LOGS_EXPORTER and friends, users' logging records joined to their trace, redaction and
limits before any sink, one capture handler per process."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

from nexus_otel import ConfigurationError, Nexus
from nexus_otel.logs.capture import LogCapture
from nexus_otel.telemetry.config import TelemetryConfig
from nexus_otel.testing import CapturedTelemetry

from .otlp_receivers import HTTPReceiver

SHOP = "shop"


@pytest.fixture
def shop_logger() -> Iterator[logging.Logger]:
    """The user's logger at INFO, as an application that configured logging has it."""
    logger = logging.getLogger(SHOP)
    before = logger.level
    logger.setLevel(logging.INFO)
    yield logger
    logger.setLevel(before)


@pytest.fixture
def receiver() -> Iterator[HTTPReceiver]:
    with HTTPReceiver() as r:
        yield r


def env_for(receiver: HTTPReceiver, tmp_path, **extra: str) -> dict[str, str]:
    """An app's environment: everything to ``receiver`` (the general endpoint only), short batch delays."""
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_METRICS_EXPORTER": "none",
            "OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_BLRP_SCHEDULE_DELAY": "50", "NEXUS_OTEL_DATA_DIR": str(tmp_path),
            **extra}


def otel_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, LoggingHandler)]


def shop_logs(receiver: HTTPReceiver) -> list:
    return [r for r in receiver.logs() if r.scope == SHOP]


def test_a_users_log_line_arrives_over_otlp_with_the_workflow_spans_ids(receiver, tmp_path, shop_logger):
    """With only OTEL_EXPORTER_OTLP_ENDPOINT set, an INFO line inside a workflow reaches the receiver carrying the
    workflow span's trace and span ids; the DEBUG line below the logger's level is not exported."""
    app = Nexus("shop-app", environ=env_for(receiver, tmp_path))
    assert app.telemetry.config.logs_exporters == ("otlp",)

    @app.workflow("checkout")
    def checkout(inputs: dict) -> str:
        shop_logger.info("order %s placed", inputs["order"])
        shop_logger.debug("basket details")
        return "ok"

    app.start()
    app.execute_workflow("checkout", {"order": "A-1"})
    app.stop()
    assert receiver.wait_for(lambda: shop_logs(receiver) and
                             any(s.name == "workflow checkout" for s in receiver.spans()))
    logs = shop_logs(receiver)
    assert [r.body for r in logs] == ["order A-1 placed"]
    (record,) = logs
    (span,) = [s for s in receiver.spans() if s.name == "workflow checkout"]
    assert (record.trace_id, record.span_id) == (span.trace_id, span.span_id)
    assert record.severity_text == "INFO" and record.severity_number == 9
    assert record.resource["service.name"] == "shop-app"
    assert receiver.errors == []


def test_with_no_endpoint_log_lines_stay_on_this_machine(tmp_path, shop_logger):
    """No OTLP endpoint: the local store is the default, and keeps the line with its trace and span ids."""
    from nexus_otel.exporters.local_logs import read_logs

    seen: list[trace.SpanContext] = []
    app = Nexus("local", environ={"NEXUS_OTEL_DATA_DIR": str(tmp_path), "OTEL_TRACES_EXPORTER": "none"})
    assert app.telemetry.config.logs_exporters == ("local",)

    @app.workflow("checkout")
    def checkout(inputs: dict) -> str:
        seen.append(trace.get_current_span().get_span_context())
        shop_logger.info("paid")
        return "ok"

    app.execute_workflow("checkout", {})
    app.stop()
    lines = [line for line in read_logs(tmp_path) if line.scope == SHOP]
    assert [(line.body, line.trace_id, line.span_id) for line in lines] == [
        ("paid", f"{seen[0].trace_id:032x}", f"{seen[0].span_id:016x}")]


def test_an_unsampled_trace_still_gives_its_log_lines_valid_ids(receiver, tmp_path, shop_logger):
    """OTEL_TRACES_SAMPLER=always_off: no span is exported, yet the log line carries the workflow span's ids."""
    seen: list[trace.SpanContext] = []
    app = Nexus("unsampled", environ=env_for(receiver, tmp_path, OTEL_TRACES_SAMPLER="always_off"))

    @app.workflow("checkout")
    def checkout(inputs: dict) -> str:
        seen.append(trace.get_current_span().get_span_context())
        shop_logger.warning("stock low")
        return "ok"

    app.execute_workflow("checkout", {})
    app.stop()
    assert receiver.wait_for(lambda: shop_logs(receiver))
    (record,) = shop_logs(receiver)
    (context,) = seen
    assert context.is_valid and not context.trace_flags.sampled
    assert record.trace_id == f"{context.trace_id:032x}" and record.span_id == f"{context.span_id:016x}"
    assert record.flags & 1 == 0  # not sampled, and said so
    assert not [s for s in receiver.spans() if s.name == "workflow checkout"]


def test_secrets_in_a_message_and_under_a_sensitive_extra_key_arrive_masked(receiver, tmp_path, shop_logger):
    """A password in a URL in the message and a value under ``api_token`` never reach the receiver."""
    app = Nexus("secrets", environ=env_for(receiver, tmp_path))

    @app.workflow("connect")
    def connect(inputs: dict) -> str:
        shop_logger.info("connecting to postgres://app:hunter2@db.internal/orders",
                         extra={"api_token": "tok-4f9a1c", "order_id": "A-7"})
        return "ok"

    app.execute_workflow("connect", {})
    app.stop()
    assert receiver.wait_for(lambda: shop_logs(receiver))
    (record,) = shop_logs(receiver)
    assert "hunter2" not in record.body and "db.internal/orders" in record.body
    assert record.attributes["api_token"] == "[REDACTED]"
    assert record.attributes["order_id"] == "A-7"


def test_the_value_length_limit_cuts_bodies_and_attributes(receiver, tmp_path, shop_logger):
    """OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT=20 wins over OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT: both cut to 20."""
    app = Nexus("limits", environ=env_for(receiver, tmp_path, OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT="20",
                                          OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT="5"))
    app.start()
    shop_logger.info("x" * 100, extra={"note": "y" * 100, "short": "z"})
    app.stop()
    assert receiver.wait_for(lambda: shop_logs(receiver))
    (record,) = shop_logs(receiver)
    assert record.body == "x" * 20
    assert record.attributes["note"] == "y" * 20 and record.attributes["short"] == "z"


def test_logs_exporter_none_means_no_provider_and_no_handler(tmp_path, shop_logger):
    """OTEL_LOGS_EXPORTER=none: no logger provider, and starting the app adds no handler to the root logger."""
    before = list(logging.getLogger().handlers)
    app = Nexus("quiet", environ={"OTEL_LOGS_EXPORTER": "none", "OTEL_TRACES_EXPORTER": "none",
                                  "NEXUS_OTEL_DATA_DIR": str(tmp_path)})
    app.start()
    try:
        assert app.telemetry.logger_provider is None
        assert logging.getLogger().handlers == before and LogCapture.handler() is None
    finally:
        app.stop()


def test_capture_can_be_turned_off_alone(receiver, tmp_path, shop_logger):
    """NEXUS_OTEL_CAPTURE_LOGS=false: logs are exported (a provider exists) but users' lines are not brought in."""
    app = Nexus("no-capture", environ=env_for(receiver, tmp_path, NEXUS_OTEL_CAPTURE_LOGS="false"))
    app.start()
    try:
        assert app.telemetry.logger_provider is not None
        assert otel_handlers() == []
    finally:
        app.stop()


@pytest.mark.parametrize("variable, value", [
    ("OTEL_LOGS_EXPORTER", "loki"),
    ("OTEL_LOGS_EXPORTER", "none,otlp"),
    ("NEXUS_OTEL_CAPTURE_LOGS", "yes"),
    ("OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT", "-1"),
    ("OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT", "many"),
    ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "localhost:4318"),
    ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/json"),
    ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "soon"),
    ("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "brotli"),
    ("OTEL_BLRP_SCHEDULE_DELAY", "0"),
])
def test_a_bad_logs_setting_fails_at_start_naming_it(variable, value):
    """Each logs variable is checked when the configuration is read; the error names it and the value."""
    with pytest.raises(ConfigurationError) as info:
        Nexus("bad", environ={variable: value})
    assert variable in str(info.value) and value in str(info.value)


def test_the_logs_endpoint_alone_turns_otlp_logs_on():
    """OTEL_EXPORTER_OTLP_LOGS_ENDPOINT is used as it is and sends log records over OTLP by default; it sends
    nothing else there (spans stay local, metrics off), and the traces' endpoint alone keeps logs local."""
    config = TelemetryConfig.from_env({"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://127.0.0.1:4318/custom/logs",
                                       "OTEL_EXPORTER_OTLP_LOGS_HEADERS": "team=core"})
    assert config.logs_exporters == ("otlp",)
    assert (config.traces_exporters, config.metrics_exporters) == (("local",), ())
    traces_only = TelemetryConfig.from_env({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert (traces_only.traces_exporters, traces_only.logs_exporters) == (("otlp",), ("local",))
    assert config.otlp_logs.endpoint == "http://127.0.0.1:4318/custom/logs"
    assert config.otlp_logs.headers == (("team", "core"),)
    general = TelemetryConfig.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert general.otlp_logs.endpoint == "http://127.0.0.1:4318/v1/logs"
    limits = TelemetryConfig.from_env({"OTEL_ATTRIBUTE_COUNT_LIMIT": "7", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "9"})
    assert (limits.logrecord_attribute_count_limit, limits.logrecord_attribute_value_length_limit) == (7, 9)


def test_the_users_own_otel_handler_means_no_second_one(receiver, tmp_path, shop_logger):
    """The root logger already has the user's OpenTelemetry LoggingHandler: nexus-otel adds none, and each line
    is exported once, by the user's handler."""
    theirs = InMemoryLogRecordExporter()
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(SimpleLogRecordProcessor(theirs))
    handler = LoggingHandler(logger_provider=provider)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        app = Nexus("own-handler", environ=env_for(receiver, tmp_path))
        app.register("w", lambda inputs: shop_logger.info("once only"))
        app.execute_workflow("w", {})
        assert otel_handlers() == [handler] and LogCapture.handler() is None
        app.stop()
    finally:
        root.removeHandler(handler)
        provider.shutdown()
    assert [r.log_record.body for r in theirs.get_finished_logs()] == ["once only"]
    assert shop_logs(receiver) == []


def test_two_apps_share_one_handler_and_the_last_stop_removes_it(receiver, tmp_path, shop_logger):
    """Two running apps: one handler on the root logger; a line goes to the latest app only, then to the other
    when the latest stops; stopping both removes the handler."""
    first = Nexus("first", environ=env_for(receiver, tmp_path / "1")).start()
    second = Nexus("second", environ=env_for(receiver, tmp_path / "2")).start()
    try:
        assert len(otel_handlers()) == 1
        shop_logger.info("to the latest")
        second.stop()
        assert len(otel_handlers()) == 1
        shop_logger.info("to the one left")
    finally:
        second.stop()
        first.stop()
    assert otel_handlers() == [] and LogCapture.handler() is None
    assert receiver.wait_for(lambda: len(shop_logs(receiver)) >= 2)
    shop_logger.info("after both stopped")
    got = sorted((r.body, r.resource["service.name"]) for r in shop_logs(receiver))
    assert got == [("to the latest", "second"), ("to the one left", "first")]


def test_request_log_lines_and_sdk_lines_are_not_captured(shop_logger):
    """Records marked ``nexus_request_log`` and records of the log pipeline's loggers (``opentelemetry``, the local
    log store) stay out (no duplicates, no feedback loop on export failures); a user's line with a secret is
    captured, masked, in CapturedTelemetry."""
    capture = CapturedTelemetry(capture_logs=True)
    app = capture.app("captured")
    app.start()
    try:
        shop_logger.info("request done", extra={"nexus_request_log": True})
        logging.getLogger("opentelemetry.exporter.test").error("export failed")
        logging.getLogger("nexus_otel.exporters.local_logs").error("cannot write 3 log records")
        shop_logger.info("token=abc123secret kept out")
    finally:
        app.stop()
        capture.shutdown()
    bodies = [r.log_record.body for r in capture.logs]
    assert bodies == ["token=[REDACTED] kept out"]


def test_a_global_sdk_logger_provider_is_used_not_replaced():
    """A process that set an SDK LoggerProvider globally keeps it: the app's records go there, and it still works
    after the app stops (borrowed: flushed, never shut down)."""
    code = textwrap.dedent(
        """
        import logging
        from opentelemetry import _logs
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
        from nexus_otel import Nexus

        exporter = InMemoryLogRecordExporter()
        provider = LoggerProvider()
        provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
        _logs.set_logger_provider(provider)
        logging.getLogger("shop").setLevel(logging.INFO)
        app = Nexus("g", environ={"OTEL_TRACES_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"})
        assert app.telemetry.logger_provider is provider
        app.register("w", lambda i: logging.getLogger("shop").info("password=hunter2 in the workflow"))
        app.execute_workflow("w")
        app.stop()
        provider.get_logger("after").emit(body="after stop")
        print([r.log_record.body for r in exporter.get_finished_logs()])
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # The user's own processor sees the record as emitted (their pipeline, their rules): nexus-otel's redaction
    # guards the sinks it adds, and changes nothing in place.
    assert out.stdout.strip() == "['password=hunter2 in the workflow', 'after stop']"


def log_outcomes(app: Nexus) -> dict[str, float]:
    """``nexus_telemetry_log_records_total`` by outcome, from the app's own /metrics text."""
    text, _ = app.telemetry.prometheus_exposition()
    out: dict[str, float] = {}
    for line in text.decode().splitlines():
        if line.startswith("nexus_telemetry_log_records_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            out[outcome] = out.get(outcome, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def test_exported_and_failed_log_records_are_counted(receiver, tmp_path, shop_logger):
    """Each sink counts what it exported and what it failed to export (a receiver that is not there)."""
    good = Nexus("good", environ=env_for(receiver, tmp_path / "good")).start()
    try:
        shop_logger.info("one")
        shop_logger.info("two")
        assert good.telemetry.force_flush(5_000)
        assert log_outcomes(good) == {"exported": 2.0, "failed": 0.0, "dropped": 0.0}
    finally:
        good.stop()
    with HTTPReceiver() as gone:
        dead = gone.endpoint
    bad = Nexus("bad", environ={"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": f"{dead}/v1/logs", "OTEL_LOGS_EXPORTER": "otlp",
                                "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT": "300", "OTEL_TRACES_EXPORTER": "none",
                                "OTEL_METRICS_EXPORTER": "none", "NEXUS_OTEL_DATA_DIR": str(tmp_path / "bad")})
    bad.start()
    try:
        shop_logger.info("lost")
        bad.telemetry.force_flush(5_000)
        assert log_outcomes(bad)["failed"] == 1.0
    finally:
        bad.stop()


def test_a_processor_added_by_the_user_sees_scrubbed_records_only(tmp_path, shop_logger):
    """add_log_record_processor puts a sink behind redaction: a structured body's sensitive key is masked too."""
    sink = InMemoryLogRecordExporter()
    app = Nexus("added", environ={"OTEL_LOGS_EXPORTER": "local", "OTEL_TRACES_EXPORTER": "none",
                                  "NEXUS_OTEL_DATA_DIR": str(tmp_path)})
    app.telemetry.add_log_record_processor(SimpleLogRecordProcessor(sink))
    assert app.telemetry.logger_provider is not None
    app.telemetry.logger_provider.get_logger("mine").emit(
        body={"user": "ada", "password": "hunter2"}, attributes={"dsn": "postgres://u:hunter2@h/db"})
    app.stop()
    (record,) = sink.get_finished_logs()
    assert record.log_record.body == {"user": "ada", "password": "[REDACTED]"}
    assert "hunter2" not in record.log_record.attributes["dsn"]


def test_logging_configured_after_the_app_started_still_takes_effect():
    """basicConfig after start (in a fresh process: pytest's own root handlers would make it a no-op anyway) is not
    skipped for the capture handler: the level and the user's handler are set, and lines go to both."""
    code = textwrap.dedent(
        """
        import io, logging, tempfile
        from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
        from nexus_otel import Nexus

        stream = io.StringIO()
        app = Nexus("late", environ={"OTEL_TRACES_EXPORTER": "none", "NEXUS_OTEL_DATA_DIR": tempfile.mkdtemp()})
        sink = InMemoryLogRecordExporter()
        app.telemetry.add_log_record_processor(SimpleLogRecordProcessor(sink))
        app.start()
        logging.basicConfig(level=logging.INFO, stream=stream)
        root = logging.getLogger()
        print(logging.getLevelName(root.level), sorted(type(h).__name__ for h in root.handlers))
        logging.getLogger("late").info("configured late")
        app.stop()
        print(root.handlers == [h for h in root.handlers if type(h).__name__ == "StreamHandler"])
        print("configured late" in stream.getvalue(), [r.log_record.body for r in sink.get_finished_logs()])
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "INFO ['StreamHandler', '_CaptureHandler']", "True", "True ['configured late']"]


def test_log_records_go_over_grpc_when_the_protocol_says_so(tmp_path, shop_logger):
    """OTEL_EXPORTER_OTLP_LOGS_PROTOCOL=grpc: the line reaches a real OTLP/gRPC receiver."""
    from .otlp_receivers import GRPCReceiver

    with GRPCReceiver() as grpc_receiver:
        app = Nexus("grpc-logs", environ={
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": grpc_receiver.endpoint, "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "grpc",
            "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "NEXUS_OTEL_DATA_DIR": str(tmp_path)})
        assert app.telemetry.config.logs_exporters == ("otlp",)
        app.start()
        shop_logger.error("card declined")
        app.stop()
        assert grpc_receiver.wait_for(lambda: shop_logs(grpc_receiver))
        (record,) = shop_logs(grpc_receiver)
        assert (record.body, record.severity_text, record.resource["service.name"]) == (
            "card declined", "ERROR", "grpc-logs")


def test_a_logger_provider_passed_to_the_app_is_used_and_not_shut_down(tmp_path, shop_logger):
    """``Nexus(logger_provider=...)`` (as ``tracer_provider=``): the app's log lines go there (to the caller's own
    processors as written, as spans do: their provider, their sinks), nothing to the local store, and the provider
    is the caller's to shut down."""
    provider = LoggerProvider()
    exporter = InMemoryLogRecordExporter()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    app = Nexus("given", logger_provider=provider, environ={"OTEL_TRACES_EXPORTER": "none",
                                                             "NEXUS_OTEL_DATA_DIR": str(tmp_path)})
    app.register("work", lambda inputs: shop_logger.info("paid with password=%s", inputs["password"]))
    app.execute_workflow("work", {"password": "hunter2hunter2"})
    app.stop()
    shop_logger.info("after the app stopped")  # no handler of the app's any more: not exported
    provider.get_logger("still-open").emit(body="the provider still takes records")
    bodies = [r.log_record.body for r in exporter.get_finished_logs()]
    assert bodies == ["paid with password=hunter2hunter2", "the provider still takes records"], bodies
    assert not list(tmp_path.glob("logs*.jsonl"))


def test_log_correlations_ids_are_not_repeated_as_attributes(shop_logger):
    """With LogCorrelation on (``trace_id``/``span_id`` on every record), a captured record carries its ids as its
    context only, not again as attributes (a backend would let them shadow its fields); the record the user's own
    handlers format keeps them."""
    from nexus_otel.logs import LogCorrelation

    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    keep = Keep()
    shop_logger.addHandler(keep)
    capture = CapturedTelemetry(capture_logs=True)
    app = capture.app("captured")
    app.register("work", lambda inputs: shop_logger.info("inside"))
    LogCorrelation.acquire()
    try:
        app.start()
        app.execute_workflow("work", {})
        shop_logger.info("outside")  # no span: the extras are None, and are not sent either
    finally:
        LogCorrelation.release()
        shop_logger.removeHandler(keep)
        app.stop()
        capture.shutdown()
    (inside,) = [r for r in capture.logs if r.log_record.body == "inside"]
    (outside,) = [r for r in capture.logs if r.log_record.body == "outside"]
    (span,) = [s for s in capture.spans if s.name == "workflow work"]
    assert inside.log_record.span_id == span.context.span_id and inside.log_record.trace_id == span.context.trace_id
    for record in (inside, outside):
        assert "trace_id" not in record.log_record.attributes and "span_id" not in record.log_record.attributes
    assert seen[0].span_id == f"{span.context.span_id:016x}"  # the user's handlers still see them
