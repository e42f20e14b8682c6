"""Each webhook destination made visible: its limit, in flight and holds as metrics, and in `webhooks status`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from nexus_otel import cli
from nexus_otel.exporters.destination_metrics import observe_destinations
from nexus_otel.exporters.destination_snapshots import (
    DestinationSnapshots,
    read_snapshots,
    snapshots_dir,
    status_lines,
)
from nexus_otel.exporters.destinations import DestinationState
from nexus_otel.exporters.webhook import WebhookExporter
from nexus_otel.outbox import Outbox
from nexus_otel.testing import CapturedTelemetry

SECRET_URL = "https://hooks:PASSWORD-1@receiver.example/in?api_key=KEY-2&team=a"
MASKED = "https://hooks:REDACTED@receiver.example/in?api_key=REDACTED&team=a"
PLAIN_URL = "http://127.0.0.1:9/hook"
HOSTILE_URL = "http://127.0.0.1:9/\x1b[2J\x1b]0;owned\x07\nforged line\u202e"


def states(now: float) -> list[DestinationState]:
    """Two destinations: one held by a Retry-After, one whose breaker is open."""
    return [
        DestinationState(SECRET_URL, limit=4, ceiling=128, in_flight=2, held_until=now + 30,
                         hold_reason="retry_after"),
        DestinationState(PLAIN_URL, limit=1, ceiling=128, in_flight=0, breaker="open", breaker_until=now + 20,
                         failures=3),
    ]


def points(capture: CapturedTelemetry, name: str) -> dict[tuple, float]:
    return {tuple(sorted(p.attributes.items())): p.value for p in capture.metric_points(name)}


# --- metrics ------------------------------------------------------------------------------------------

def test_gauges_read_each_destination_now_with_its_url_masked() -> None:
    """Limit and in-flight per destination, and a 0/1 held series per reason, read at each collection."""
    capture = CapturedTelemetry()
    current = states(time.time())
    observe_destinations(capture.meter_provider.get_meter("t"), lambda: current)

    assert points(capture, "nexus.webhook.concurrency_limit") == {
        (("destination", MASKED),): 4, (("destination", PLAIN_URL),): 1}
    assert points(capture, "nexus.webhook.in_flight") == {
        (("destination", MASKED),): 2, (("destination", PLAIN_URL),): 0}
    assert points(capture, "nexus.webhook.held") == {
        (("destination", MASKED), ("reason", "retry_after")): 1,
        (("destination", MASKED), ("reason", "breaker")): 0,
        (("destination", PLAIN_URL), ("reason", "retry_after")): 0,
        (("destination", PLAIN_URL), ("reason", "breaker")): 1,
    }
    # The hold ended and the limit grew: the next collection says so (the held series stay, at 0).
    current = [DestinationState(SECRET_URL, limit=9, ceiling=128, in_flight=7, held_until=time.time() - 1)]
    assert points(capture, "nexus.webhook.concurrency_limit")[(("destination", MASKED),)] == 9
    held = points(capture, "nexus.webhook.held")
    assert held[(("destination", MASKED), ("reason", "retry_after"))] == 0


def test_prometheus_exposition_names_the_gauges_and_never_the_credentials() -> None:
    """/metrics has nexus_webhook_concurrency_limit, _in_flight and _held as gauges; no password or key in it."""
    capture = CapturedTelemetry()
    observe_destinations(capture.meter_provider.get_meter("t"), lambda: states(time.time()))
    text = capture.prometheus_text()
    for name in ("nexus_webhook_concurrency_limit", "nexus_webhook_in_flight", "nexus_webhook_held"):
        assert f"# TYPE {name} gauge" in text, text
    assert re.search(r'nexus_webhook_concurrency_limit\{destination="https://hooks:REDACTED@receiver\.example/in\?'
                     r'api_key=REDACTED&team=a",service_name="test"\} 4\.0', text), text
    assert "PASSWORD-1" not in text and "KEY-2" not in text


def test_across_worker_processes_limits_add_up_and_a_hold_is_the_largest_reading() -> None:
    """serve --workers: the merged /metrics sums limit and in flight over workers; held is 1 if any worker holds."""
    from prometheus_client.exposition import generate_latest

    from nexus_otel.telemetry.worker_metrics import decode, encode, merge

    def worker(limit: int, in_flight: int, held: bool) -> list[dict]:
        capture = CapturedTelemetry()
        until = time.time() + (30 if held else -30)
        observe_destinations(capture.meter_provider.get_meter("t"),
                             lambda: [DestinationState(PLAIN_URL, limit, 128, in_flight, held_until=until)])
        return decode(encode(capture.prometheus_registry.collect()))

    class Merged:
        def collect(self) -> list:
            return merge([worker(4, 1, True), worker(6, 2, False)])

    lines = generate_latest(Merged()).decode().splitlines()  # type: ignore[arg-type]

    def sample(prefix: str, *parts: str) -> float:
        (line,) = [x for x in lines if x.startswith(prefix + "{") and all(p in x for p in parts)]
        return float(line.rsplit(" ", 1)[1])

    assert sample("nexus_webhook_concurrency_limit") == 10
    assert sample("nexus_webhook_in_flight") == 3
    assert sample("nexus_webhook_held", 'reason="retry_after"') == 1


def test_a_failing_source_gives_no_series_and_no_error() -> None:
    """A sender whose state cannot be read leaves the gauges empty; the collection itself goes on."""
    capture = CapturedTelemetry()

    def broken() -> list[DestinationState]:
        raise RuntimeError("no state")

    observe_destinations(capture.meter_provider.get_meter("t"), broken)
    assert capture.metric_points("nexus.webhook.concurrency_limit") == []
    samples = [line for line in capture.prometheus_text().splitlines() if line.startswith("nexus_webhook_")]
    assert samples == []


def test_webhook_exporter_registers_the_gauges_on_its_meter(tmp_path: Path) -> None:
    """WebhookExporter(meter=...) observes its own destinations(); without a meter it registers nothing."""

    class Reporting(WebhookExporter):
        def destinations(self) -> list[DestinationState]:
            return [DestinationState(self.urls[0], limit=6, ceiling=32, in_flight=1)]

    capture = CapturedTelemetry()
    outbox = Outbox(tmp_path / "outbox.sqlite")
    try:
        exporter = Reporting([SECRET_URL], outbox, meter=capture.meter_provider.get_meter("t"), max_in_flight=32)
        assert points(capture, "nexus.webhook.concurrency_limit") == {(("destination", MASKED),): 6}
        Reporting([PLAIN_URL], outbox)  # no meter: nothing to observe, nothing fails
        # What the worker publishes goes beside the outbox, and a clean close takes it away.
        exporter.publish_destinations()
        (line,) = status_lines(snapshots_dir(tmp_path / "outbox.sqlite"))
        assert line.startswith(f"{MASKED}  limit 6/32  in flight 1  ")
        exporter.close()
        assert status_lines(snapshots_dir(tmp_path / "outbox.sqlite")) == []
    finally:
        outbox.close()


# --- snapshot files -----------------------------------------------------------------------------------

def test_snapshot_round_trip_with_the_url_masked_in_the_file(tmp_path: Path) -> None:
    """What a process publishes is what a reader gets back, from this process, masked on disk too."""
    now = time.time()
    snapshots = DestinationSnapshots(snapshots_dir(tmp_path / "outbox.sqlite"))
    assert snapshots.publish(states(now))
    assert snapshots.file.parent == tmp_path / "outbox.sqlite.destinations"
    assert "PASSWORD-1" not in snapshots.file.read_text() and "KEY-2" not in snapshots.file.read_text()
    (snapshot,), problems = read_snapshots(snapshots.file.parent)
    assert problems == []
    assert (snapshot.pid, snapshot.ended) == (os.getpid(), False)
    assert [s.destination for s in snapshot.destinations] == [MASKED, PLAIN_URL]
    assert snapshot.destinations[0] == DestinationState(MASKED, 4, 128, 2, held_until=now + 30,
                                                        hold_reason="retry_after")
    assert snapshot.destinations[1].breaker == "open" and snapshot.destinations[1].failures == 3


def test_publish_writes_changes_at_most_once_an_interval_and_nothing_unchanged(tmp_path: Path) -> None:
    """A change within the interval waits for the next call after it; the same state is never rewritten."""
    clock = [100.0]
    snapshots = DestinationSnapshots(tmp_path / "d", interval=1.0, clock=lambda: clock[0])
    one = [DestinationState(PLAIN_URL, 4, 128, 1)]
    two = [DestinationState(PLAIN_URL, 5, 128, 3)]

    def limit_on_disk() -> int:
        return int(json.loads(snapshots.file.read_text())["destinations"][0]["limit"])

    assert snapshots.publish(one) and limit_on_disk() == 4
    clock[0] += 0.5
    assert not snapshots.publish(two) and limit_on_disk() == 4  # held back by the interval
    clock[0] += 0.5
    assert snapshots.publish(two) and limit_on_disk() == 5  # the next call after it writes it
    written = snapshots.file.stat().st_mtime_ns
    clock[0] += 10
    assert not snapshots.publish(list(two))  # unchanged: no write however long since the last
    assert snapshots.file.stat().st_mtime_ns == written


def test_readers_never_see_half_a_snapshot(tmp_path: Path) -> None:
    """A reader racing a writer that rewrites the file without pause always parses a whole snapshot."""
    snapshots = DestinationSnapshots(tmp_path / "d", interval=0.0)
    snapshots.publish([DestinationState(PLAIN_URL, 0, 128, 0)])
    stop = threading.Event()
    seen: list[int] = []
    errors: list[str] = []

    def read() -> None:
        while not stop.is_set():
            found, problems = read_snapshots(tmp_path / "d")
            errors.extend(problems)
            seen.extend(len(s.destinations) for s in found)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(1, 400):  # each snapshot is big enough that a partial write would show
            assert snapshots.publish([DestinationState(f"{PLAIN_URL}/{n}", i, 128, n) for n in range(50)])
    finally:
        stop.set()
        reader.join()
    assert errors == [] and len(seen) > 10 and set(seen) <= {1, 50}
    assert [p.name for p in (tmp_path / "d").iterdir()] == [snapshots.file.name]  # no temporary file left


def test_a_clean_close_removes_the_file_and_stops_publishing(tmp_path: Path) -> None:
    """After close() the process has no snapshot, and a late publish writes none."""
    snapshots = DestinationSnapshots(tmp_path / "d", interval=0.0)
    snapshots.publish([DestinationState(PLAIN_URL, 1, 128, 0)])
    assert snapshots.file.exists()
    snapshots.close()
    assert not snapshots.file.exists()
    assert not snapshots.publish([DestinationState(PLAIN_URL, 2, 128, 0)]) and not snapshots.file.exists()


def test_an_unwritable_folder_is_one_warning_never_an_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Publishing where no folder can be made returns False and logs once, however often it is called."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    snapshots = DestinationSnapshots(blocker / "d", interval=0.0)
    with caplog.at_level("WARNING", logger="nexus_otel.webhooks"):
        assert not snapshots.publish([DestinationState(PLAIN_URL, 1, 128, 0)])
        assert not snapshots.publish([DestinationState(PLAIN_URL, 2, 128, 0)])
    assert len([r for r in caplog.records if "cannot write" in r.getMessage()]) == 1


def _publish_and_die(directory: Path) -> int:
    """A process that publishes a snapshot and ends without a clean stop; its pid."""
    script = textwrap.dedent(f"""
        import os, time
        from nexus_otel.exporters.destination_snapshots import DestinationSnapshots
        from nexus_otel.exporters.destinations import DestinationState
        DestinationSnapshots({str(directory)!r}).publish(
            [DestinationState({SECRET_URL!r}, 3, 64, 1, held_until=time.time() + 60, hold_reason="retry_after")])
        print(os.getpid(), flush=True)
        os._exit(0)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True)
    return int(done.stdout)


def test_a_dead_process_snapshot_is_reported_ended_and_cleared_by_the_next_writer(tmp_path: Path) -> None:
    """A snapshot whose process is gone reads as ended, in the status too; the next process's writer removes it."""
    directory = snapshots_dir(tmp_path / "outbox.sqlite")
    pid = _publish_and_die(directory)
    (snapshot,), _ = read_snapshots(directory)
    assert snapshot.pid == pid and snapshot.ended
    (line,) = status_lines(directory)
    assert line.startswith(MASKED) and line.endswith("(process ended)]") and f"pid {pid} " in line

    mine = DestinationSnapshots(directory)
    assert mine.publish([DestinationState(PLAIN_URL, 1, 128, 0)])
    assert [(s.pid, s.ended) for s in read_snapshots(directory)[0]] == [(os.getpid(), False)]


# --- nexus-otel webhooks status -----------------------------------------------------------------------

def _status(outbox: Path) -> list[str]:
    result = CliRunner().invoke(cli.main, ["webhooks", "status", "--outbox", str(outbox)])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_status_prints_each_destinations_limit_hold_and_breaker(tmp_path: Path) -> None:
    """After the pending/dead line: a line per destination with limit/ceiling, in flight, hold, breaker, process."""
    outbox = tmp_path / "outbox.sqlite"
    Outbox(outbox).close()
    DestinationSnapshots(snapshots_dir(outbox)).publish(states(time.time()))
    first, held, broken = _status(outbox)
    assert first == "pending 0  dead 0"
    assert held.startswith(f"{MASKED}  limit 4/128  in flight 2  held until ")
    assert re.search(r"held until \d\d:\d\d:\d\d \(in \d+\.\d s, retry_after\)  breaker closed  "
                     rf"\[pid {os.getpid()} on .+, as of \d\d:\d\d:\d\d\]$", held), held
    assert broken.startswith(f"{PLAIN_URL}  limit 1/128  in flight 0  not held  breaker open until ")
    assert re.search(r"breaker open until \d\d:\d\d:\d\d \(in \d+\.\d s, 3 failures\)", broken), broken
    assert "PASSWORD-1" not in "\n".join([held, broken]) and "KEY-2" not in held


def test_status_without_snapshots_is_the_one_line_it_was(tmp_path: Path) -> None:
    """No process has published (or none has an outbox yet): only the pending/dead line."""
    (line,) = _status(tmp_path / "outbox.sqlite")
    assert line.startswith("pending 0  dead 0")


def test_status_prints_a_hostile_url_inertly_and_names_an_unreadable_snapshot(tmp_path: Path) -> None:
    """Escape sequences, a newline and a bidi override in a URL are shown as escapes; a bad file is one note."""
    outbox = tmp_path / "outbox.sqlite"
    DestinationSnapshots(snapshots_dir(outbox)).publish([DestinationState(HOSTILE_URL, 2, 8, 1)])
    (snapshots_dir(outbox) / "other-1.json").write_text('{"destinations": "\x1b[31m"}')
    result = CliRunner().invoke(cli.main, ["webhooks", "status", "--outbox", str(outbox)])
    assert result.exit_code == 0, result.output
    for char in ("\x1b", "\x07", "\u202e"):
        assert char not in result.output
    _, hostile, note = result.output.splitlines()  # the newline in the URL forged no line
    assert hostile.startswith("http://127.0.0.1:9/\\x1b[2J\\x1b]0;owned\\x07\\nforged line\\u202e  limit 2/8  ")
    assert note.startswith("other-1.json: not readable as a destinations snapshot")


def test_status_masks_credentials_a_snapshot_file_carries(tmp_path: Path) -> None:
    """A snapshot written by something else, credentials and all, still shows them masked."""
    outbox = tmp_path / "outbox.sqlite"
    snapshots_dir(outbox).mkdir()
    (snapshots_dir(outbox) / "elsewhere-7.json").write_text(json.dumps({
        "version": 1, "process": "elsewhere/7/1", "host": "elsewhere", "pid": 7, "written_at": time.time(),
        "destinations": [{"destination": SECRET_URL, "limit": 2, "ceiling": 16, "in_flight": 0}]}))
    _, line = _status(outbox)
    assert line.startswith(f"{MASKED}  limit 2/16  in flight 0  not held  breaker closed  [pid 7 on elsewhere, ")
    assert "PASSWORD-1" not in line and "KEY-2" not in line and "process ended" not in line  # another host's
