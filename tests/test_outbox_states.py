"""The outbox's state diagram in docs/records.md and the code agree, transition by transition.

The diagram is read from the docs. Every transition must name a public operation of ``Outbox``,
every public operation that moves a message must appear in it, and every transition is driven
here on a real outbox (files, SQLite, and a second process where a process must end) from its
source state, checking that the message ends in the target state the diagram names.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nexus_otel.outbox import Outbox, RowHandle

DOCS = Path(__file__).resolve().parent.parent / "docs" / "records.md"
DEST = "audit"
READS = {"left", "dead_letters", "oldest_age", "view", "defer", "commit_deferred"}
"""Public operations that read, or group enqueues, without moving a message from one state to another
(``due``, ``next_due_in`` and ``counts`` read too, but may spill or recover: they are drawn)."""
STATES = {"journaled", "leased_locally", "pending", "leased", "dead", "[*]"}


def _diagram() -> list[tuple[str, str, list[str], str]]:
    """``(source, target, operations, note)`` for each transition of the docs' diagram."""
    text = DOCS.read_text()
    section = text[text.index("### The outbox's states"):]
    block = section[section.index("```mermaid"):]
    block = block[:block.index("```", 3)]
    out = []
    for line in block.splitlines():
        m = re.match(r"\s*(\S+)\s*-->\s*(\S+)\s*:\s*(.+)$", line)
        if m:
            label = m.group(3).strip()
            note = re.search(r"\((.*)\)", label)
            names = [part.strip() for part in re.sub(r"\(.*\)", "", label).split("/")]
            out.append((m.group(1), m.group(2), names, note.group(1) if note else ""))
    return out


TRANSITIONS = _diagram()


def _public_operations() -> set[str]:
    """Outbox's public methods, one name per function (the earlier names are the same functions)."""
    seen: dict[object, str] = {}
    for name in sorted(vars(Outbox)):
        value = vars(Outbox)[name]
        if name.startswith("_") or not callable(value):
            continue
        canonical = value.__name__
        seen.setdefault(value, canonical)
    return set(seen.values())


def test_the_diagram_names_only_states_and_public_operations():
    """Each transition goes between the five documented states and is made by a public operation of Outbox."""
    assert len(TRANSITIONS) >= 15, "the diagram was read"
    operations = _public_operations()
    for source, target, names, _ in TRANSITIONS:
        assert {source, target} <= STATES, f"{source} --> {target}: not a documented state"
        for name in names:
            assert name in operations, f"{source} --> {target}: {name!r} is not a public operation of Outbox"


def test_every_operation_that_moves_a_message_is_in_the_diagram():
    """A public operation of Outbox either reads, or appears in the diagram: a new one must be drawn there."""
    drawn = {name for _, _, names, _ in TRANSITIONS for name in names}
    missing = _public_operations() - READS - drawn
    assert not missing, f"operations that move messages but are not in docs/records.md's diagram: {sorted(missing)}"
    assert not (READS & drawn), "an operation listed as a read moves messages in the diagram"


# -- driving each transition -----------------------------------------------------------------------
def _state(outbox: Outbox, message_id: str) -> str:
    """Where ``message_id`` is now, as the diagram names it (read from the table and the public reads).

    Each scenario holds one message, so what this object has in memory and not waiting is that one.
    """
    with sqlite3.connect(outbox.path) as db:
        others = db.execute("SELECT COUNT(*) FROM outbox WHERE message_id != ?", (message_id,)).fetchone()[0]
        row = db.execute("SELECT state, claimed_by, next_attempt_at FROM outbox WHERE message_id = ?",
                         (message_id,)).fetchone()
    assert others == 0 and outbox.left() <= 1, "a scenario holds one message"
    if row is not None:
        state, claimed_by, due_at = row
        if state == "dead":
            return "dead"
        return "leased" if claimed_by is not None and due_at > time.time() else "pending"
    if any(m.message_id == message_id for m in outbox.due(1000)):
        return "journaled"
    return "leased_locally" if outbox.left() else "[*]"


def _in(outbox: Outbox, state: str) -> str:
    """Put a fresh message in ``state``; its message id."""
    message_id = f"m-{time.monotonic_ns()}"
    outbox.enqueue([(message_id, DEST, {"n": 1})])
    if state == "journaled":
        return message_id
    (message,) = outbox.lease(1)
    if state == "leased_locally":
        return message_id
    if state == "dead":
        outbox.dead_letter(message.handle, "HTTP 400")
        return message_id
    outbox.retry(message.handle, 0.0, "HTTP 503")  # into the table, due now
    if state == "pending":
        return message_id
    (message,) = outbox.lease(1)
    assert state == "leased"
    return message_id


def _row_handle(outbox: Outbox, message_id: str) -> RowHandle:
    """The handle of a message in the table, as its worker got it from :meth:`Outbox.lease`."""
    with sqlite3.connect(outbox.path) as db:
        (row,) = db.execute("SELECT id FROM outbox WHERE message_id = ?", (message_id,)).fetchone()
    return RowHandle(row)


def _ended_process(path: Path, code: str) -> None:
    """Run ``code`` on ``o = Outbox(path)`` in another process that then dies without closing anything."""
    script = f"import os, sys; from nexus_otel.outbox import Outbox; o = Outbox(sys.argv[1]); {code}; os._exit(9)"
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, timeout=60)
    assert done.returncode == 9, done.stderr.decode()


Scenario = Callable[[Path], tuple[Outbox, str]]
"""Makes the transition; the outbox to look through and the message id."""


def _local_then(op: str) -> Scenario:
    def run(path: Path) -> tuple[Outbox, str]:
        outbox = Outbox(path)
        message_id = f"m-{op}"
        outbox.enqueue([(message_id, DEST, {})])
        (message,) = outbox.lease(1)
        if op == "ack":
            outbox.ack([message.handle])
        elif op == "release":
            outbox.release([message.handle])
        elif op == "retry":
            outbox.retry(message.handle, 60.0, "HTTP 503")
        elif op == "dead_letter":
            outbox.dead_letter(message.handle, "HTTP 400")
        elif op == "close":
            outbox.close()
        return outbox, message_id
    return run


def _row_then(state: str, op: str) -> Scenario:
    def run(path: Path) -> tuple[Outbox, str]:
        outbox = Outbox(path)
        message_id = _in(outbox, state)
        handle = _row_handle(outbox, message_id)
        if op == "ack":
            outbox.ack([handle])
        elif op == "retry":
            outbox.retry(handle, 60.0, "HTTP 503")
        elif op == "release":
            outbox.release([handle])
        elif op == "dead_letter":
            outbox.dead_letter(handle, "HTTP 400")
        elif op == "hold":
            outbox.hold(DEST, time.time() + 3600)  # later than the lease's end
        elif op == "replay":
            outbox.replay()
        elif op == "lease":
            outbox.lease(10)
        return outbox, message_id
    return run


ELSEWHERE = ("destination = ?", ("somewhere else",))
"""A scope with no Python test (a plain ``(sql, params)``): reads through it spill every local message first."""


def _read(outbox: Outbox, op: str) -> None:
    """One of the reads that spill or recover, through :data:`ELSEWHERE` (it leases none of the scenario's)."""
    if op == "lease":
        outbox.lease(10, scope=ELSEWHERE)
    elif op == "due":
        outbox.due(10, scope=ELSEWHERE)
    elif op == "next_due_in":
        outbox.next_due_in(scope=ELSEWHERE)
    elif op == "counts":
        outbox.counts(scope=ELSEWHERE)
    else:
        raise AssertionError(op)


def _journaled_then(op: str) -> Scenario:
    def run(path: Path) -> tuple[Outbox, str]:
        outbox = Outbox(path)
        message_id = _in(outbox, "journaled")
        if op == "hold":
            outbox.hold(DEST, time.time() + 60)
        elif op == "close":
            outbox.close()
        else:
            _read(outbox, op)
        return outbox, message_id
    return run


def _recovered(leased: bool, op: str) -> Scenario:
    def run(path: Path) -> tuple[Outbox, str]:
        _ended_process(path, "o.enqueue([('m-gone', 'audit', {})])" + ("; o.lease(1)" if leased else ""))
        outbox = Outbox(path)
        _read(outbox, op)
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 1, f"{op} recovered the journal"
        return outbox, "m-gone"
    return run


def _orphaned(path: Path) -> tuple[Outbox, str]:
    outbox = Outbox(path)
    message_id = _in(outbox, "pending")
    outbox.close()
    _ended_process(path, "o.lease(10, lease=600)")
    outbox = Outbox(path)
    assert _state(outbox, message_id) == "leased", "the ended process's lease holds it"
    outbox.release_orphans()
    return outbox, message_id


def _lease_ran_out(path: Path) -> tuple[Outbox, str]:
    outbox = Outbox(path)
    message_id = _in(outbox, "pending")
    outbox.lease(10, lease=0.3)
    assert _state(outbox, message_id) == "leased" and outbox.lease(10) == [], "leased: no one else takes it"
    time.sleep(0.4)
    (message,) = Outbox(path).lease(10)  # another worker, once the lease has run out
    assert message.message_id == message_id
    return outbox, message_id


def _pending_held(path: Path) -> tuple[Outbox, str]:
    outbox = Outbox(path)
    message_id = _in(outbox, "pending")
    until = time.time() + 3600
    outbox.hold(DEST, until)
    with sqlite3.connect(outbox.path) as db:
        (due_at,) = db.execute("SELECT next_attempt_at FROM outbox WHERE message_id = ?", (message_id,)).fetchone()
    assert due_at == pytest.approx(until), "held: due at the circuit's next probe"
    return outbox, message_id


def _fresh(state: str) -> Scenario:
    def run(path: Path) -> tuple[Outbox, str]:
        outbox = Outbox(path)
        return outbox, _in(outbox, state)
    return run


SCENARIOS: dict[tuple[str, str, str, str], Scenario] = {
    ("[*]", "journaled", "enqueue", ""): _fresh("journaled"),
    ("journaled", "leased_locally", "lease", ""): _fresh("leased_locally"),
    ("leased_locally", "[*]", "ack", ""): _local_then("ack"),
    ("leased_locally", "journaled", "release", ""): _local_then("release"),
    ("leased_locally", "pending", "retry", ""): _local_then("retry"),
    ("leased_locally", "dead", "dead_letter", ""): _local_then("dead_letter"),
    **{("journaled", "pending", op, ""): _journaled_then(op)
       for op in ("hold", "lease", "due", "next_due_in", "close")},
    ("leased_locally", "leased", "close", ""): _local_then("close"),
    **{(source, "pending", op, "recovery after its process ended"): _recovered(source == "leased_locally", op)
       for source in ("journaled", "leased_locally") for op in ("lease", "due", "next_due_in", "counts")},
    ("pending", "leased", "lease", ""): _row_then("pending", "lease"),
    ("leased", "[*]", "ack", ""): _row_then("leased", "ack"),
    ("leased", "pending", "retry", ""): _row_then("leased", "retry"),
    ("leased", "pending", "release", ""): _row_then("leased", "release"),
    ("leased", "pending", "release_orphans", ""): _orphaned,
    ("leased", "pending", "hold", ""): _row_then("leased", "hold"),
    ("leased", "leased", "lease", "its lease ran out"): _lease_ran_out,
    ("leased", "dead", "dead_letter", ""): _row_then("leased", "dead_letter"),
    ("pending", "pending", "hold", ""): _pending_held,
    ("dead", "pending", "replay", ""): _row_then("dead", "replay"),
}

EDGES = [(source, target, name, note) for source, target, names, note in TRANSITIONS for name in names]


def test_every_transition_drawn_is_driven_here_and_every_one_driven_is_drawn():
    """The scenarios below and the diagram's transitions are the same set."""
    assert set(EDGES) == set(SCENARIOS), (f"drawn, not driven: {sorted(set(EDGES) - set(SCENARIOS))}; "
                                          f"driven, not drawn: {sorted(set(SCENARIOS) - set(EDGES))}")


@pytest.mark.parametrize("edge", EDGES, ids=[f"{s}->{t}:{n}" + (f"({x[:12]})" if x else "") for s, t, n, x in EDGES])
def test_each_transition_ends_in_the_state_drawn(edge, tmp_path):
    """Driving the transition from its source state leaves the message in its target state."""
    source, target, _, _ = edge
    outbox, message_id = SCENARIOS[edge](tmp_path / "outbox.sqlite")
    assert _state(outbox, message_id) == target, f"{edge}: the message is {_state(outbox, message_id)}"
