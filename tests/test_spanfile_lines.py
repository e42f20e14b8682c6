"""The local store's fast line writer (orjson) writes the same JSON as the standard library's encoder.

``spanfile.encode`` (the standard library's ``json``) is the reference; the
exporter writes ``spanfile.encode_lines``. Both are parsed back and compared,
on spans from the real SDK: every attribute type, events, several resources,
unicode, big and negative numbers; a NaN becomes ``null`` (documented); a batch
orjson refuses falls back to the reference encoder.
"""

from __future__ import annotations

import json
import math
import random

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from nexus_otel.exporters import spanfile
from nexus_otel.exporters.local import LocalSpanExporter, read_spans


def _spans(seed: int = 7, count: int = 200):
    rng = random.Random(seed)
    memory = InMemorySpanExporter()
    providers = [TracerProvider(resource=Resource.create({"service.name": f"svc-{i}", "deployment.n": i}))
                 for i in range(3)]
    for provider in providers:
        provider.add_span_processor(SimpleSpanProcessor(memory))
    values = ["", "plain", "ünïcødé ✓", "quote\" back\\slash\nnewline", 0, -1, 2**62, -(2**63), 1.5, -0.0, 1e300,
              True, False, ("a", "b"), (1, 2, 3), (True, False), (0.5, 2.5), ()]
    for i in range(count):
        tracer = providers[i % 3].get_tracer(f"scope-{i % 2}")
        kind = list(SpanKind)[i % 5]
        with tracer.start_as_current_span(f"span {i}", kind=kind) as span:
            for k in range(rng.randint(0, 6)):
                span.set_attribute(f"key.{k}", rng.choice(values))
            if i % 4 == 0:
                span.add_event("event", {"n": i, "what": rng.choice(["x", "ÿ"])})
            if i % 5 == 0:
                span.set_status(Status(StatusCode.ERROR, "broke: ✗"))
            elif i % 5 == 1:
                span.set_status(Status(StatusCode.OK))
    return memory.get_finished_spans()


def _parsed(data: bytes | str) -> list:
    text = data.decode() if isinstance(data, bytes) else data
    return [json.loads(line) for line in text.splitlines()]


def test_fast_lines_parse_to_the_same_json_as_the_reference():
    spans = _spans()
    for size in (1, 7, 64, len(spans)):
        for start in range(0, len(spans), size):
            batch = spans[start:start + size]
            fast = spanfile.encode_lines(batch)
            assert fast.endswith(b"\n") and fast.count(b"\n") == len(_parsed(fast))
            assert _parsed(fast) == _parsed(spanfile.encode(batch))


def test_nan_is_null_in_fast_lines():
    spans = _spans(count=1)
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("t").start_as_current_span("nan") as span:
        span.set_attribute("ratio", float("nan"))
    (nan_span,) = memory.get_finished_spans()
    reference = _parsed(spanfile.encode([nan_span]))[0]["spans"][0]["a"]["ratio"]
    fast = _parsed(spanfile.encode_lines([nan_span]))[0]["spans"][0]["a"]["ratio"]
    assert math.isnan(reference) and fast is None
    assert spans  # the generator works for one span too


def test_a_batch_orjson_refuses_falls_back_to_the_reference(tmp_path):
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("t").start_as_current_span("huge") as span:
        span.set_attribute("big", 2**70)  # beyond 64 bits: orjson refuses it
    spans = memory.get_finished_spans()
    assert _parsed(spanfile.encode_lines(spans)) == _parsed(spanfile.encode(spans))
    exporter = LocalSpanExporter(tmp_path)
    exporter.export(spans)
    (read,) = read_spans(tmp_path)
    assert read.attributes["big"] == 2**70 and read.name == "huge"
