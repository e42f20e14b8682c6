"""Merging the metrics of several workers, and sharing one outbox between processes: the pieces, one at a time.

``test_workers.py`` runs them for real across processes; here each rule is
pinned where a failure says exactly which one broke.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from nexus_otel.errors import ConfigurationError
from nexus_otel.outbox import Outbox
from nexus_otel.telemetry.shared_counts import CountsFile, SharedBoundMetrics, read_counts
from nexus_otel.telemetry.worker_metrics import (
    WORKERS_DIR_MAX,
    WorkerMetrics,
    counters_only,
    decode,
    encode,
    merge,
    overlay,
)
from nexus_otel.testing import CapturedTelemetry


def families_after(runs: int, *, pending: int, active: int) -> list[dict]:
    """One worker's families after ``runs`` executions of ``work``, with an outbox gauge reading ``pending``."""
    capture = CapturedTelemetry()
    app = capture.app("merged")
    app.register("work", lambda inputs: {"ok": True})
    meter = app.telemetry.meter
    meter.create_observable_gauge("nexus.webhook.outbox", callbacks=[lambda options: [_observation(pending)]])
    meter.create_up_down_counter("demo.in_flight").add(active)
    for _ in range(runs):
        app.execute_workflow("work", {})
    data = decode(encode(capture.prometheus_registry.collect()))
    app.stop()
    return data


def _observation(value: int):
    from opentelemetry.metrics import Observation

    return Observation(value)


def value(text: str, prefix: str, *parts: str) -> float:
    """The one sample whose line starts with ``prefix`` and contains ``parts``."""
    (line,) = [line for line in text.splitlines() if line.startswith(prefix) and all(p in line for p in parts)]
    return float(line.rsplit(" ", 1)[1])


def exposition(metrics) -> str:
    class Source:
        def collect(self):
            return metrics

    return generate_latest(Source()).decode()


def test_counters_and_histograms_add_up_readings_of_shared_state_do_not():
    one = families_after(3, pending=7, active=2)
    two = families_after(5, pending=9, active=1)
    text = exposition(merge([one, two]))
    assert value(text, "nexus_workflow_executions_total", 'workflow="work"') == 8
    assert value(text, "nexus_workflow_duration_seconds_count", 'workflow="work"') == 8
    assert value(text, "nexus_workflow_duration_seconds_bucket", 'le="+Inf"') == 8
    assert value(text, "nexus_webhook_outbox{") == 9  # the larger reading, not 16
    assert value(text, "demo_in_flight{") == 3  # an up-down count: summed


def test_target_info_is_one_series_without_the_workers_instance_ids():
    a = [{"n": "target", "d": "", "t": "info", "u": "", "m": "info",
          "s": [["target_info", {"service_name": "s", "service_instance_id": "a"}, 1.0, None, None]]}]
    b = [{"n": "target", "d": "", "t": "info", "u": "", "m": "info",
          "s": [["target_info", {"service_name": "s", "service_instance_id": "b"}, 1.0, None, None]]}]
    (info,) = merge([a, b])
    assert [s.labels for s in info.samples] == [{"service_name": "s"}]


def test_a_gone_worker_keeps_its_counters_not_its_gauges():
    gone = counters_only(families_after(4, pending=3, active=5))
    names = {f["n"] for f in gone}
    assert "nexus_workflow_executions" in names and "nexus_workflow_duration_seconds" in names
    assert "nexus_webhook_outbox" not in names and "demo_in_flight" not in names


def test_a_scrape_asks_live_peers_and_reads_gone_ones_from_their_files(tmp_path):
    class Fixed:
        def __init__(self, families):
            self.families = families

        def collect(self):
            return merge([self.families])

    live = WorkerMetrics(tmp_path, Fixed(families_after(2, pending=1, active=0)))
    live.pid, live.socket_path, live.file = 11, tmp_path / "11.sock", tmp_path / "11.json"
    live.start()
    gone = WorkerMetrics(tmp_path, Fixed(families_after(3, pending=1, active=0)))
    gone.pid, gone.socket_path, gone.file = 12, tmp_path / "12.sock", tmp_path / "12.json"
    gone.start()
    gone.close()  # its final counts stay in 12.json
    assert not (tmp_path / "12.sock").exists() and (tmp_path / "12.json").exists()
    (tmp_path / "13.sock").touch()  # a worker killed outright: its socket is left, nobody listens
    me = WorkerMetrics(tmp_path, Fixed(families_after(1, pending=1, active=0)))
    try:
        text = exposition(me.collect())
    finally:
        live.close()
    assert value(text, "nexus_workflow_executions_total") == 6  # 1 (this one) + 2 (asked) + 3 (from its file)
    assert not (tmp_path / "13.sock").exists(), "a dead socket is removed, not asked again"


def test_a_counts_file_holds_what_the_series_report_but_what_was_in_flight(tmp_path):
    """Counters and histograms read back from the file as the series report them; up-down counters left out."""
    bound = SharedBoundMetrics(CountsFile(tmp_path / "1.counts"))
    runs = bound.counter("runs", "1", "runs").bind({"workflow": "w", "ok": True})
    took = bound.histogram("took", "s", "took", (0.1, 1.0)).bind({"workflow": "w"})
    bound.up_down_counter("active").bind({"workflow": "w"}).add(3)
    for value in (0.05, 0.1, 0.5, 7.0):
        runs.add(2)
        took.record(value)
    live = {m.name: m.data.data_points[0] for m in bound.produce()}
    read = {m.name: m.data.data_points[0] for m in read_counts(tmp_path / "1.counts")}
    assert set(read) == {"runs", "took"} and set(live) == {"runs", "took", "active"}
    assert read["runs"].value == live["runs"].value == 8 and read["runs"].attributes == {"workflow": "w", "ok": True}
    assert (read["took"].count, read["took"].sum, read["took"].min, read["took"].max) == (4, 7.65, 0.05, 7.0)
    assert list(read["took"].bucket_counts) == list(live["took"].bucket_counts) == [2, 1, 1]
    everything = {m.name for m in read_counts(tmp_path / "1.counts", cumulative_only=False)}
    assert everything == {"runs", "took", "active"}


def test_a_counts_file_takes_more_series_than_its_first_size(tmp_path):
    """The file grows past its first 64 KiB; series bound before the growth still store their values."""
    bound = SharedBoundMetrics(CountsFile(tmp_path / "1.counts"))
    family = bound.histogram("took", "s", "", [i / 10 for i in range(1, 20)])
    first = family.bind({"n": -1})
    for n in range(600):  # about 250 bytes each
        family.bind({"n": n}).record(0.01)
    first.record(5.0)
    assert (tmp_path / "1.counts").stat().st_size > 1 << 16
    points = {p.attributes["n"]: p for p in read_counts(tmp_path / "1.counts")[0].data.data_points}
    assert len(points) == 601 and points[-1].max == 5.0 and points[599].count == 1


def test_a_counts_file_that_cannot_be_made_leaves_series_counting_in_memory(tmp_path, caplog):
    """No file (its directory is a file here; a full disk alike): one error naming it, and the counts go on."""
    (tmp_path / "taken").write_text("")
    bound = SharedBoundMetrics(CountsFile(tmp_path / "taken" / "1.counts"))
    for n in range(3):
        bound.counter("runs").bind({"n": n}).add(5)
    assert sorted(p.value for p in bound.produce()[0].data.data_points) == [5, 5, 5]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "cannot keep counts in" in errors[0] and "taken/1.counts" in errors[0], errors


def test_a_worker_killed_outright_leaves_every_count_and_no_gauge_to_its_peers(tmp_path):
    """SIGKILL right after its last execution: a peer's scrape has all of them, and not what it had in flight."""
    directory = tmp_path / "w"
    env = {**os.environ, "NEXUS_OTEL_WORKERS": "2", "NEXUS_OTEL_WORKERS_DIR": str(directory),
           "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}
    worker = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import threading, time
        from nexus_otel import Nexus
        app = Nexus("killed")
        app.register("work", lambda inputs: {})
        app.register("hang", lambda inputs: time.sleep(60))
        app.start()
        threading.Thread(target=app.execute_workflow, args=("hang", {}), daemon=True).start()
        for _ in range(137):
            app.execute_workflow("work", {})
        print("done", flush=True)
        time.sleep(60)
        """)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline() == "done\n"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    assert not (directory / f"{worker.pid}.json").exists(), "killed before any snapshot: only its counts file"
    from nexus_otel import Nexus

    peer = Nexus("killed", environ={k: v for k, v in env.items() if k.startswith(("NEXUS_OTEL_", "OTEL_"))})
    peer.register("work", lambda inputs: {})
    try:
        peer.start()
        peer.execute_workflow("work", {})
        text = peer.telemetry.prometheus_exposition()[0].decode()
    finally:
        peer.stop()
    assert value(text, "nexus_workflow_executions_total", 'workflow="work"') == 138
    assert value(text, "nexus_workflow_duration_seconds_count", 'workflow="work"') == 138
    assert value(text, "nexus_workflow_active", 'workflow="work"') == 0
    assert 'workflow="hang"' not in text.split("nexus_workflow_active", 1)[1].split("# HELP", 1)[0]


def test_a_dead_workers_counts_file_corrects_its_older_snapshot():
    """Series in both take the counts file's values; series only in the snapshot stay as they were."""
    snapshot = [{"n": "runs", "d": "", "t": "counter", "u": "", "m": "sum",
                 "s": [["runs_total", {"w": "a"}, 5.0, None, None], ["runs_total", {"w": "b"}, 2.0, None, None]]},
                {"n": "spans", "d": "", "t": "counter", "u": "", "m": "sum",
                 "s": [["spans_total", {}, 9.0, None, None]]}]
    exact = [{"n": "runs", "d": "", "t": "counter", "u": "", "m": "sum",
              "s": [["runs_total", {"w": "a"}, 7.0, None, None], ["runs_total", {"w": "c"}, 1.0, None, None]]}]
    merged = {f["n"]: sorted((s[1].get("w"), s[2]) for s in f["s"]) for f in overlay(snapshot, exact)}
    assert merged == {"runs": [("a", 7.0), ("b", 2.0), ("c", 1.0)], "spans": [(None, 9.0)]}


def test_a_new_worker_with_a_dead_ones_process_id_keeps_the_dead_ones_counts(tmp_path):
    """The kernel reuses process ids: a dead worker's files are moved aside, not overwritten."""
    (tmp_path / f"{os.getpid()}.counts").write_bytes(b"dead's")
    (tmp_path / f"{os.getpid()}.json").write_bytes(b"[]")
    metrics = WorkerMetrics(tmp_path, CollectorRegistry())
    metrics.counts.allocate(["counter", "c", "1", "", {}, []], 1)
    kept = {p.name for p in tmp_path.iterdir()} - {f"{os.getpid()}.counts"}
    assert {p.read_bytes() for p in tmp_path.glob(f"{os.getpid()}-*")} == {b"dead's", b"[]"}, kept
    assert len({p.name.split(".")[0] for p in tmp_path.glob(f"{os.getpid()}-*")}) == 1, "one name for both"


def test_a_workers_directory_too_long_for_socket_names_is_a_clear_error(tmp_path):
    long_dir = tmp_path / ("d" * (WORKERS_DIR_MAX + 1 - len(str(tmp_path)) - 1))
    with pytest.raises(ConfigurationError, match="NEXUS_OTEL_WORKERS_DIR.*short enough for Unix socket names"):
        WorkerMetrics(long_dir, CollectorRegistry()).start()


_CLAIMER = textwrap.dedent("""
    import json, sys, time
    from nexus_otel.outbox import Outbox

    box = Outbox(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()  # both are ready: go
    claimed = []
    while batch := box.claim(37):
        claimed.extend(m.message_id for m in batch)
        time.sleep(0.002)  # delivering: the other process takes its turn meanwhile
        box.delivered([m.id for m in batch])
    box.close()
    print(json.dumps(claimed), flush=True)
    """)


def test_two_processes_sharing_an_outbox_never_claim_the_same_message(tmp_path):
    """Two processes claim from one outbox file at once: 1,000 messages, each claimed by exactly one of them."""
    file = tmp_path / "outbox.sqlite"
    putter = Outbox(file)
    putter.put([(f"m{i}", "http://127.0.0.1:9/hook", {"n": i}) for i in range(1000)])
    putter.close()  # into the table, where every claimer sees them
    claimers = [subprocess.Popen([sys.executable, "-c", _CLAIMER, str(file)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for claimer in claimers:
            assert claimer.stdout is not None and claimer.stdout.readline().strip() == "ready"
        for claimer in claimers:
            assert claimer.stdin is not None
            claimer.stdin.write("go\n")
            claimer.stdin.flush()
        outputs = [claimer.communicate(timeout=60)[0] for claimer in claimers]
    finally:
        for claimer in claimers:
            claimer.kill()
            claimer.wait()
    assert [claimer.returncode for claimer in claimers] == [0, 0]
    claimed = [json.loads(out) for out in outputs]
    everything = claimed[0] + claimed[1]
    assert len(everything) == 1000 and len(set(everything)) == 1000
    assert claimed[0] and claimed[1], "both took part"


def test_a_claim_is_released_or_taken_again_when_its_lease_ends(tmp_path):
    box = Outbox(tmp_path / "outbox.sqlite")
    box.put([("a", "dest", {}), ("b", "dest", {})])
    first = box.claim(10, lease=60)
    assert [m.message_id for m in first] == ["a", "b"]
    assert box.claim(10) == [], "claimed messages are not due to anyone else"
    box.release([first[0].id])
    assert [m.message_id for m in box.claim(10)] == ["a"]
    other = Outbox(tmp_path / "outbox.sqlite")
    assert other.claim(10, lease=0.0) == []
    short = Outbox(tmp_path / "short.sqlite")
    short.put([("c", "dest", {})])
    short.close()  # into the table: leases are the table's
    assert [m.message_id for m in short.claim(10, lease=0.0)] == ["c"]
    assert [m.message_id for m in short.claim(10)] == ["c"], "a claimer that died: taken again after the lease"


def test_the_workers_setting_is_read_strictly():
    from nexus_otel.telemetry.config import TelemetryConfig

    config = TelemetryConfig.from_env({"NEXUS_OTEL_WORKERS": "3", "NEXUS_OTEL_WORKERS_DIR": "/tmp/x"})
    assert (config.workers, config.workers_dir) == (3, "/tmp/x")
    assert TelemetryConfig.from_env({}).workers == 1
    with pytest.raises(ConfigurationError, match="NEXUS_OTEL_WORKERS"):
        TelemetryConfig.from_env({"NEXUS_OTEL_WORKERS": "two"})

