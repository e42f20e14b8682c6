"""The records path's JSON (orjson, with the standard library as the fallback) against the standard library."""

import json
import math
import time
import uuid
from dataclasses import fields

import pytest

from nexus_otel import fastjson
from nexus_otel.outbox import Outbox
from nexus_otel.records import ExecutionRecord

VALUES = [
    None, True, False, 0, -1, 2**63 - 1, -(2**63), 1.5, 1e-7, 123456789.123456, "", "plain", "été ✓ 東京 🙂",
    "quote \" backslash \\ newline \n tab \t nul \u0000", [], {}, [1, "two", None, [3.0]],
    {"nested": {"list": [True, None], "text": "ü"}},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_what_it_writes_reads_back_equal_with_the_standard_library(value):
    text = fastjson.dumps(value)
    assert json.loads(text) == value
    assert fastjson.loads(text) == value
    assert fastjson.dumpb(value) == text.encode("utf-8")
    assert fastjson.loads(json.dumps(value)) == value  # what an earlier version stored reads the same


def test_what_orjson_refuses_falls_back_to_the_standard_library():
    big = 2**70
    assert fastjson.loads(fastjson.dumps([big])) == [big]
    lone = "\ud800"  # a lone surrogate: not valid UTF-8
    assert json.loads(fastjson.dumps([lone])) == [lone]
    assert json.loads(fastjson.dumpb({"k": lone})) == {"k": lone}
    assert math.isnan(fastjson.loads("[NaN]")[0]) and fastjson.loads("[Infinity]") == [math.inf]


class Odd:
    def __str__(self):
        return "odd value"


def test_a_value_json_cannot_hold_is_written_as_its_str():
    assert fastjson.loads(fastjson.dumps({"id": uuid.UUID(int=7), "x": Odd()})) == {"id": str(uuid.UUID(int=7)),
                                                                                    "x": "odd value"}
    assert json.loads(fastjson.dumps([2**70, Odd()])) == [2**70, "odd value"]  # the fallback does the same


def test_bad_json_raises_a_value_error():
    with pytest.raises(ValueError):
        fastjson.loads("{not json")


def _record(**overrides):
    now = time.time()
    fields = dict(workflow="commande-été ✓", workflow_id=str(uuid.uuid4()), status="failed", channel="api",
                  session_id="s1", started_at=now - 0.5, ended_at=now, duration=0.5, trace_id="ab" * 16,
                  span_id="cd" * 8, trace_sampled=True, error_type="ValueError", error="ValueError: ü",
                  inputs='{"card": "***"}', cache_hit=False)
    fields.update(overrides)
    return ExecutionRecord(**fields)


def test_a_record_round_trips_through_its_stored_json():
    record = _record()
    again = ExecutionRecord.from_json(record.to_json())
    assert again == record
    assert ExecutionRecord.from_json(json.loads(record.to_json())) == record
    assert record.completed_at == again.as_dict()["completed_at"] and record.started_at_iso.endswith("+00:00")


def test_a_record_stored_by_the_standard_library_encoder_reads_the_same():
    record = _record(duration=None, ended_at=None, status="running")
    old = json.dumps([getattr(record, f.name) for f in fields(record)], separators=(",", ":"), default=str)
    assert ExecutionRecord.from_json(old) == record
    assert record.completed_at is None


def test_outbox_payloads_come_back_as_put(tmp_path):
    outbox = Outbox(tmp_path / "outbox.sqlite")
    record = _record()
    outbox.put([("a", "audit", record.to_json()), ("b", "audit", {"finished": "payload", "n": 1.5}),
                ("c", "audit", '{"stored":"before","value":NaN}')])
    got = {m.message_id: m.payload for m in outbox.due()}
    assert ExecutionRecord.from_json(got["a"]) == record
    assert got["b"] == {"finished": "payload", "n": 1.5}
    assert got["c"]["stored"] == "before" and math.isnan(got["c"]["value"])
    outbox.close()
