"""The outbox's journal: a put is one appended line, taken into the table by whoever reads, once."""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import zlib

import pytest

from nexus_otel.exporters import journal
from nexus_otel.exporters.outbox import Outbox

from .served import REPO


def _rows(path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT message_id FROM outbox ORDER BY id")]


def test_lines_read_back_as_written_and_a_line_still_being_written_waits():
    items = [("m1", "http://127.0.0.1:9/hook", '{"text": "two\\nlines", "ü": [1, 2.5, null]}'), ("m2", "audit", "[]")]
    whole = journal.encode(12.5, items) + journal.encode(13.0, items[:1])
    decoded = journal.decode(whole + b"0000abcd [1")  # a line whose write has not ended: no newline yet
    assert decoded.entries == [(12.5, items), (13.0, items[:1])]
    assert decoded.taken == len(whole) and decoded.corrupt == 0
    assert whole.count(b"\n") == 2, "a payload's line break is escaped: one line per put"


def test_a_line_that_fails_its_checksum_is_skipped_and_counted():
    good = journal.encode(1.0, [("a", "audit", "{}")])
    body = journal.encode(2.0, [("b", "audit", "{}")])
    torn = body[:20] + b"\x00" * (len(body) - 21) + b"\n"
    for bad in (torn, b"zz" + body[2:], b"short\n"):
        decoded = journal.decode(good + bad + good)
        assert [e[1][0][0] for e in decoded.entries] == ["a", "a"] and decoded.corrupt == 1
    assert int(good[:8], 16) == zlib.crc32(good[9:-1])


def test_a_put_needs_no_lock_on_the_shared_file(tmp_path):
    """Another process holding the outbox locked (the CLI, a worker's claim) does not hold up a workflow's put."""
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path, busy_timeout=0.1)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        assert outbox.put([("m1", "audit", {"n": 1}), ("m2", "audit", {"n": 2})]) == 2
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            outbox.claim(10)  # a claim does wait for the lock (here 0.1 s, then it says so)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert outbox.counts() == {"pending": 2, "dead": 0}


def test_readers_in_other_processes_see_a_put_at_once_and_take_it_once(tmp_path):
    path = tmp_path / "outbox.sqlite"
    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys; from nexus_otel.exporters.outbox import Outbox; "
         "o = Outbox(sys.argv[1]); o.put([('m1', 'audit', {'n': 1})]); print('put', flush=True); sys.stdin.read(); "
         "o.put([('m2', 'audit', {'n': 2})])", str(path)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "put\n"
        first, second = Outbox(path), Outbox(path)
        assert [m.message_id for m in first.claim(10)] == ["m1"], "visible while its writer still runs"
        assert second.claim(10) == [] and second.counts()["pending"] == 1, "taken once, by one reader"
        assert len(journal.journals(path)) == 1, "a running writer's journal stays"
    finally:
        writer.communicate("", timeout=30)
    assert writer.returncode == 0
    assert [m.message_id for m in second.claim(10)] == ["m2"]
    assert journal.journals(path) == [], "the journal of a writer that ended goes once it is taken"
    assert _rows(path) == ["m1", "m2"]


def test_a_writer_that_died_mid_line_leaves_its_whole_lines_and_an_error(tmp_path, caplog):
    path = tmp_path / "outbox.sqlite"
    Outbox(path)  # the file and its tables
    name = f"{journal.prefix_of(path)}{socket.gethostname()}+999999999+1+0"  # a pid no process has
    (tmp_path / name).write_bytes(journal.encode(1.0, [("whole", "audit", "{}")]) + b"0123abcd [2.0, [[\"torn")
    with caplog.at_level(logging.ERROR, logger="nexus_otel.outbox"):
        assert Outbox(path).counts()["pending"] == 1
    assert "never finished; dropped" in caplog.text
    assert journal.journals(path) == [] and _rows(path) == ["whole"]


def test_close_moves_the_journal_into_the_table_and_removes_it(tmp_path):
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path)
    outbox.put([("m1", "audit", {})])
    assert len(journal.journals(path)) == 1 and _rows(path) == []
    outbox.close()
    assert journal.journals(path) == [] and _rows(path) == ["m1"]
    outbox.put([("m2", "audit", {})])  # usable again: a new journal
    assert [m.message_id for m in outbox.claim(10)] == ["m1", "m2"]


def test_a_taken_journal_is_replaced_by_a_new_file_and_nothing_is_lost_or_doubled(tmp_path, monkeypatch):
    monkeypatch.setattr(journal, "ROTATE_BYTES", 2_000)
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path)
    names = set()
    for i in range(300):
        outbox.put([(f"m{i}", "audit", {"i": i, "pad": "x" * 40})])
        names.update(journal.journals(path))
        if i % 7 == 0:
            outbox.counts()
    outbox.counts()
    assert len(names) > 5, "the journal started again several times"
    assert len(journal.journals(path)) <= 1, "the files it left were removed once taken"
    assert _rows(path) == [f"m{i}" for i in range(300)]


def test_puts_and_claims_from_many_threads_and_two_outboxes_take_each_message_once(tmp_path):
    path = tmp_path / "outbox.sqlite"
    boxes = [Outbox(path), Outbox(path)]  # two connections, two journals: as two processes have
    per_thread, threads_per_box = 250, 3
    done = threading.Event()
    claimed: list[list[str]] = [[], []]

    def put(box: Outbox, k: int) -> None:
        for i in range(per_thread):
            box.put([(f"m{k}-{i}", "audit", {"i": i})])

    def claim(k: int) -> None:
        box = boxes[k]
        while True:
            finished = done.is_set()
            batch = box.claim(40)
            claimed[k] += [m.message_id for m in batch]
            time.sleep(0.002)  # delivering: the other claimer takes its turn meanwhile
            box.delivered([m.id for m in batch])
            if finished and not batch:
                return

    putters = [threading.Thread(target=put, args=(boxes[k % 2], k)) for k in range(2 * threads_per_box)]
    claimers = [threading.Thread(target=claim, args=(k,)) for k in (0, 1)]
    for t in putters + claimers:
        t.start()
    for t in putters:
        t.join(60)
    done.set()
    for t in claimers:
        t.join(60)
    everything = claimed[0] + claimed[1]
    assert len(everything) == 2 * threads_per_box * per_thread == len(set(everything))
    assert claimed[0] and claimed[1], "both took part"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_writes_a_journal_of_its_own(tmp_path):
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path)
    outbox.put([("parent-1", "audit", {})])
    pid = os.fork()
    if pid == 0:  # the child: its puts go to its own file, the parent's stays the parent's
        try:
            outbox.put([("child", "audit", {})])
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    outbox.put([("parent-2", "audit", {})])
    assert len(journal.journals(path)) == 2
    assert sorted(m.message_id for m in Outbox(path).claim(10)) == ["child", "parent-1", "parent-2"]
    assert len(journal.journals(path)) == 1, "the ended child's journal went; the parent's stays"


def test_looks_do_not_wait_out_another_processs_lock(tmp_path, caplog):
    """Counts (a scrape, ``webhooks status``) and close (a shutdown) read the table as is if the file stays locked."""
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path)  # the default busy_timeout: 5 s
    outbox.put([("old", "audit", {})])
    outbox.counts()
    outbox.put([("new", "audit", {})])
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        assert outbox.counts() == {"pending": 1, "dead": 0}, "the table's count: the new one is still in the journal"
        with caplog.at_level(logging.WARNING, logger="nexus_otel.outbox"):
            outbox.close()
        assert time.monotonic() - started < outbox.busy_timeout / 2, "neither waited out the busy timeout"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "journal left for the next reader" in caplog.text
    assert sorted(m.message_id for m in Outbox(path).claim(10)) == ["new", "old"], "the next reader takes it"
