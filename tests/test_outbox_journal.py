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

from nexus_otel.outbox import LocalHandle, Outbox, RowHandle, destination_scope, journal

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
        assert outbox.enqueue([("m1", "audit", {"n": 1}), ("m2", "audit", {"n": 2})]) == 2
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            outbox.lease(10)  # a claim does wait for the lock (here 0.1 s, then it says so)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert outbox.counts() == {"pending": 2, "dead": 0}


def _writer(path, code: str) -> subprocess.Popen[str]:
    """Another process with an outbox ``o`` on ``path``, running ``code``; it waits on its stdin where told to."""
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; from nexus_otel.outbox import Outbox; o = Outbox(sys.argv[1]); "
         + code, str(path)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_a_running_process_delivers_its_own_and_the_next_reader_takes_them_once_it_ends(tmp_path):
    path = tmp_path / "outbox.sqlite"
    writer = _writer(path, "o.enqueue([('m1', 'audit', {'n': 1})]); print('put', flush=True); sys.stdin.read(); "
                           "o.enqueue([('m2', 'audit', {'n': 2})])")
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "put\n"
        first, second = Outbox(path), Outbox(path)
        assert first.lease(10) == [] and first.counts()["pending"] == 0, "a running process's messages are its own"
        assert len(journal.journals(path)) == 1
    finally:
        writer.communicate("", timeout=30)  # it ends without closing its outbox: as a crash would leave it
    assert writer.returncode == 0
    assert [m.message_id for m in first.lease(10)] == ["m1", "m2"]
    assert second.lease(10) == [], "taken once, by one reader"
    assert journal.journals(path) == [], "the journal of a writer that ended goes once it is taken"
    assert _rows(path) == ["m1", "m2"]


def test_a_running_process_that_closes_its_outbox_hands_its_messages_to_every_reader(tmp_path):
    path = tmp_path / "outbox.sqlite"
    writer = _writer(path, "o.enqueue([('m1', 'audit', {'n': 1})]); o.close(); print('closed', flush=True); "
                           "sys.stdin.read()")
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "closed\n"
        assert [m.message_id for m in Outbox(path).lease(10)] == ["m1"]
        assert journal.journals(path) == [], "nothing left in its journal: the file went"
    finally:
        writer.communicate("", timeout=30)


def test_own_messages_delivered_at_once_never_touch_the_table(tmp_path):
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path)
    outbox.enqueue([(f"m{i}", "audit", {"i": i}) for i in range(50)])
    claimed = outbox.lease(100)
    assert [m.message_id for m in claimed] == [f"m{i}" for i in range(50)]
    assert [m.payload for m in claimed[:2]] == [{"i": 0}, {"i": 1}]
    assert all(isinstance(m.handle, LocalHandle) for m in claimed)
    assert outbox.lease(100) == [], "claimed: not handed out twice"
    outbox.ack([m.handle for m in claimed])
    assert outbox.counts() == {"pending": 0, "dead": 0}
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
        (name, taken), = db.execute("SELECT name, taken FROM outbox_journal").fetchall()
    assert taken == (tmp_path / name).stat().st_size, "the journal is noted as settled to its end"


def test_own_messages_that_fail_or_wait_go_to_the_table_with_their_attempts(tmp_path):
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path)
    outbox.enqueue([("retry", "audit", {}), ("dead", "audit", {}), ("back", "audit", {}), ("held", "http://x/h", {})])
    by_id = {m.message_id: m.handle for m in outbox.lease(3, scope=destination_scope("audit"))}
    outbox.retry(by_id["retry"], 60.0, "HTTP 503")
    outbox.dead_letter(by_id["dead"], "HTTP 400")
    outbox.release([by_id["back"]])
    assert outbox.hold("http://x/h", time.time() + 60) == 1
    assert [m.message_id for m in outbox.lease(10)] == ["back"], "released: first in line again; the rest wait"
    with sqlite3.connect(path) as db:
        rows = {r[0]: r[1:] for r in db.execute("SELECT message_id, state, attempts, last_error FROM outbox")}
    assert rows == {"retry": ("pending", 1, "HTTP 503"), "dead": ("dead", 1, "HTTP 400"), "held": ("pending", 0, None)}
    assert [m.message_id for m in outbox.dead_letters()] == ["dead"]
    assert outbox.counts() == {"pending": 3, "dead": 1}


def test_what_was_settled_before_a_crash_is_not_sent_again_and_the_rest_is(tmp_path):
    path = tmp_path / "outbox.sqlite"
    code = ("import os, sys; from nexus_otel.outbox import Outbox; o = Outbox(sys.argv[1]); "
            "[o.enqueue([(f'm{i}', 'audit', {})]) for i in range(3)]; c = o.lease(10); o.ack([c[0].handle]); "
            "o.retry(c[2].handle, 0.0, 'HTTP 503'); os._exit(9)")
    assert subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO).returncode == 9
    got = sorted(m.message_id for m in Outbox(path).lease(10))
    assert got == ["m1", "m2"], "m0 delivered and noted: not again; m1 was in flight: again; m2 once (its retry)"


def test_own_messages_beyond_what_memory_holds_go_to_the_table(tmp_path, monkeypatch):
    from nexus_otel.outbox import queue as outbox_module

    monkeypatch.setattr(outbox_module, "_MAX_LOCAL", 10)
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path)
    outbox.enqueue([(f"m{i}", "audit", {}) for i in range(30)])
    first = outbox.lease(5)
    assert [m.message_id for m in first] == [f"m{i}" for i in range(5)]
    assert all(isinstance(m.handle, RowHandle) for m in first)
    assert len(_rows(path)) == 20, "the oldest 20 went to the table, the newest 10 stay in memory"
    seen = [m.message_id for m in first]
    outbox.ack([m.handle for m in first])
    while batch := outbox.lease(7):
        seen += [m.message_id for m in batch]
        outbox.ack([m.handle for m in batch])
    assert sorted(seen) == sorted(f"m{i}" for i in range(30)) and len(seen) == 30


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
    outbox.enqueue([("m1", "audit", {})])
    assert len(journal.journals(path)) == 1 and _rows(path) == []
    outbox.close()
    assert journal.journals(path) == [] and _rows(path) == ["m1"]
    outbox.enqueue([("m2", "audit", {})])  # usable again: a new journal
    assert [m.message_id for m in outbox.lease(10)] == ["m1", "m2"]


def test_a_settled_journal_is_replaced_by_a_new_file_and_nothing_is_lost_or_doubled(tmp_path, monkeypatch):
    monkeypatch.setattr(journal, "ROTATE_BYTES", 2_000)
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path)
    names, seen = set(), []
    for i in range(300):
        outbox.enqueue([(f"m{i}", "audit", {"i": i, "pad": "x" * 40})])
        names.update(journal.journals(path))
        if i % 7 == 0:
            batch = outbox.lease(100)
            seen += [m.message_id for m in batch]
            outbox.ack([m.handle for m in batch])
    batch = outbox.lease(100)
    seen += [m.message_id for m in batch]
    outbox.ack([m.handle for m in batch])
    assert len(names) > 5, "the journal started again several times"
    assert len(journal.journals(path)) <= 1, "the files it left were removed once settled"
    assert seen == [f"m{i}" for i in range(300)]


def test_puts_and_claims_from_many_threads_and_two_outboxes_take_each_message_once(tmp_path):
    path = tmp_path / "outbox.sqlite"
    boxes = [Outbox(path), Outbox(path)]  # two connections, two journals: as two processes have
    per_thread, threads_per_box = 250, 3
    done = threading.Event()
    claimed: list[list[str]] = [[], []]

    def put(box: Outbox, k: int) -> None:
        for i in range(per_thread):
            box.enqueue([(f"m{k}-{i}", "audit", {"i": i})])

    def claim(k: int) -> None:
        box = boxes[k]
        while True:
            finished = done.is_set()
            batch = box.lease(40)
            claimed[k] += [m.message_id for m in batch]
            time.sleep(0.002)  # delivering: the other claimer takes its turn meanwhile
            box.ack([m.handle for m in batch])
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
def test_a_forked_child_writes_a_journal_of_its_own_and_leaves_its_parents_messages_alone(tmp_path):
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path)
    outbox.enqueue([("parent-1", "audit", {})])
    pid = os.fork()
    if pid == 0:  # the child: its puts go to its own file; the parent's messages are not its to send
        code = 1
        try:
            code = 0 if outbox.lease(10) == [] else 3
            outbox.enqueue([("child", "audit", {})])
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child claimed its parent's message"
    outbox.enqueue([("parent-2", "audit", {})])
    assert len(journal.journals(path)) == 2
    assert [m.message_id for m in outbox.lease(10)] == ["child", "parent-1", "parent-2"]
    assert len(journal.journals(path)) == 1, "the ended child's journal went; the parent's stays"


def test_looks_do_not_wait_out_another_processs_lock(tmp_path, caplog):
    """Counts (a scrape, ``webhooks status``) and close (a shutdown) read the table as is if the file stays locked."""
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path)  # the default busy_timeout: 5 s
    outbox.enqueue([("mine", "audit", {})])
    name = f"{journal.prefix_of(path)}{socket.gethostname()}+999999999+1+0"  # left by a process that ended
    (tmp_path / name).write_bytes(journal.encode(1.0, [("left", "audit", "{}")]))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        assert outbox.counts() == {"pending": 1, "dead": 0}, "its own, and not yet what the ended process left"
        with caplog.at_level(logging.WARNING, logger="nexus_otel.outbox"):
            outbox.close()
        assert time.monotonic() - started < outbox.busy_timeout / 2, "neither waited out the busy timeout"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "left in the journal for the next reader" in caplog.text
    assert outbox.counts() == {"pending": 2, "dead": 0}
    outbox.close()
    assert sorted(m.message_id for m in Outbox(path).lease(10)) == ["left", "mine"], "closed: every reader sees them"


def test_an_outbox_dropped_without_close_hands_its_messages_to_the_table(tmp_path):
    path = tmp_path / "outbox.sqlite"
    Outbox(path).enqueue([("m1", "audit", {})])  # unreferenced at once
    assert _rows(path) == ["m1"] and journal.journals(path) == []


def test_messages_in_delivery_at_close_go_to_the_table_claimed_and_are_settled_there(tmp_path):
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path)
    outbox.enqueue([("a", "audit", {}), ("b", "audit", {}), ("c", "audit", {})])
    a, b, c = outbox.lease(10)
    outbox.close()  # a worker that could not finish by its deadline still has them in flight
    other = Outbox(path)
    assert other.lease(10) == [] and other.counts()["pending"] == 3, "claimed by this process: no one else takes them"
    outbox.ack([a.handle])
    outbox.retry(b.handle, 0.0, "HTTP 503")
    outbox.release([c.handle])
    taken = {m.message_id: m.attempts for m in other.lease(10)}
    assert taken == {"b": 1, "c": 0}, "a settled there; b retried; c given back"
