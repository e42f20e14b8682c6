"""The outbox against a reference model: random puts, deliveries, crashes, restarts, full disks and second processes.

The test drives the real outbox (journal, own messages, claims, ``OutboxWorker``, the
``nexus-otel webhooks replay`` command) with Hypothesis's ``RuleBasedStateMachine``. Each
process of the outbox is a real process (forked from a server that has the outbox imported):
a crash is a ``SIGKILL``, with or without a torn line at the end of its journal; a full disk
is a small tmpfs filled with a ballast file. The model is what the documentation promises
(``docs/records.md``, "Durable sinks: the outbox"), message by message:

* **Nothing acknowledged is lost.** After every step, what a process would recover from the
  files if every process crashed now (the table's rows, and each journal's whole lines after
  its note of how far it is settled, read with the journal's own decoder) holds every message
  whose ``put`` returned and that no receiver has answered OK: as a pending row or journal
  line, or as a dead row if it was given up on. At the end every process stops, a new one
  starts, and it must deliver each of them (and list each dead letter).
* **Nothing settled is sent again outside the at-least-once window.** A message delivered
  (answered OK) or dead-lettered may be handed to a deliverer again only (a) after the
  dead letters are replayed (for a dead one), or (b) once, after the process that put it
  ended without handing its journal over (a ``SIGKILL``; or an exit without ``close()``
  while it had deliveries in flight), if the put that carried it came at or after that
  process's first put with a message it had not yet settled (delivered, retried,
  dead-lettered, or handed over by ``close()``), or whose settlement could not be written
  (the disk full): the journal's note of how far it is settled stops at that line, so the
  lines after it are read again. A message whose settlement failed may repeat itself. A
  message in flight is handed to a second deliverer only once the first one's process has
  ended. A put that raised (``RecordsUnavailableError`` on a full disk) is never delivered,
  and leaves no row and no whole journal line.

What it catches: two deliberate mutations of the outbox, each applied only inside the outbox's
processes (a module the fork server imports first, monkeypatching; the source untouched), fail
at the default seed 2024, within the first examples (steps shrunk with ``OUTBOX_MODEL_SHRINK=1``):

* **An ack lost on close.** ``outbox._hand_over`` without ``_insert(tx, waiting)``: close()
  notes the waiting messages settled without moving them into the table. Seed 2024; minimal:
  ``first_process(); put(n=1, to='http://127.0.0.1:9/a', which=0); close(which=0)`` ->
  "m1 (pending) was put and acknowledged, but a crash now would lose it: table no row, no
  journal line after the note" (and, through an exit's finalizer: ``first_process();
  start_process(); put(n=1, ...); teardown()`` -> "m1 was put and acknowledged but never
  delivered").
* **A journal line read twice.** ``journal.read_from(path, offset)`` reading from 0: taking an
  ended process's journal reads again the lines before its note. Seed 2024; minimal:
  ``first_process(); start_process(); put(n=1, to='http://127.0.0.1:9/a', which=0);
  exit(which=1); worker_round(codes=['ok'], which=0); start_process(); crash(torn=0, which=0);
  start_process(); put(n=1, ...); close(which=0); teardown()`` -> "P5 claimed m1, which was
  delivered already, outside the at-least-once window".

And the code before the full-disk fixes: at the default seed the full-disk test fails with "a
put on a full disk raised OSError: [Errno 28] No space left on device" before puts raised
``RecordsUnavailableError``, and with "m4 (pending) was put and acknowledged, but a crash now
would lose it" while close() on a full disk still removed its journal before the COMMIT failed.

Reproducing a failure: the run is derandomized from ``OUTBOX_MODEL_SEED`` (default below);
a failure prints the seed, the minimal sequence of steps, and a ``@reproduce_failure`` blob.
Run again with ``OUTBOX_MODEL_SEED=<seed> .venv/bin/python -m pytest tests/test_outbox_model.py``;
other seeds explore other sequences.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule, run_state_machine_as_test

from nexus_otel.cli import main as cli
from nexus_otel.outbox import DEFAULT_LEASE, journal
from nexus_otel.outbox import owners as claimer

from . import small_disk as small_disk_tools
from .outbox_processes import MAX_ATTEMPTS, OUTCOMES, Proc, forkserver_preloading, serve

SEED = int(os.environ.get("OUTBOX_MODEL_SEED", "2024"))
EXAMPLES = int(os.environ.get("OUTBOX_MODEL_EXAMPLES", "40"))
STEPS = 30
DESTINATIONS = ("http://127.0.0.1:9/a", "http://127.0.0.1:9/b")  # never contacted: deliveries are the model's
DISK_MB = 8

PENDING, IN_FLIGHT, DELIVERED, DEAD = "pending", "in flight", "delivered", "dead"


@dataclass(eq=False)
class Msg:
    """One message in the model."""

    mid: str
    owner: int
    put_no: int
    acked: bool
    state: str = PENDING
    holder: int | None = None
    received: bool = False
    """A receiver answered OK to it at least once."""
    owner_settled: bool = False
    """Its owner settled it (its journal line no longer holds the owner's note back)."""
    again: int = 0
    """Sends allowed though it is settled (the at-least-once window)."""
    unsure: bool = False
    """A settlement of it failed part-way (the disk full): at least once from here on, in any state."""


# -- the full disk ---------------------------------------------------------------------------------
@contextlib.contextmanager
def small_disk() -> Iterator[tuple[Path, str | None]]:
    """A tmpfs of a few megabytes (root, or none: then the reason) under which each example gets a folder."""
    root = Path(tempfile.mkdtemp(prefix="outbox-model-"))
    problem = small_disk_tools.mount(root, DISK_MB)
    try:
        yield root, problem
    finally:
        if problem is None:
            small_disk_tools.unmount(root)
        shutil.rmtree(root, ignore_errors=True)


# -- the machine -----------------------------------------------------------------------------------
def _step(method: Callable[..., None]) -> Callable[..., None]:
    """A rule, then the check of what is on disk; a failure marks the machine broken (the end's check is skipped)."""

    @functools.wraps(method)
    def run(self: OutboxModel, *args: Any, **kwargs: Any) -> None:
        try:
            method(self, *args, **kwargs)
            self.check_the_files()
        except BaseException:
            self.broken = True
            raise

    return run


class OutboxModel(RuleBasedStateMachine):
    """Random sequences of outbox operations, each checked against the model (see the module's docstring)."""

    def __init__(self, root: Path, disk_full_enabled: bool) -> None:
        super().__init__()
        self.root = root
        self.dir = Path(tempfile.mkdtemp(dir=root))
        self.path = self.dir / "outbox.sqlite"
        self.ctx = multiprocessing.get_context("forkserver")
        self.procs: dict[int, Proc] = {}
        self.live: list[int] = []
        self.msgs: dict[str, Msg] = {}
        self.next_msg = 0
        self.disk_full_enabled = disk_full_enabled
        self.full = False
        self.broken = False
        self._peek: sqlite3.Connection | None = None

    # -- helpers ----------------------------------------------------------------------------------
    def _start(self) -> Proc:
        number = len(self.procs) + 1
        parent, child = self.ctx.Pipe()
        process = self.ctx.Process(target=serve, args=(child, str(self.path), DEFAULT_LEASE), daemon=True)
        process.start()
        child.close()
        proc = Proc(number, process, parent, claimer.identity(process.pid))
        assert proc.call("ready?") == ("ok", "ready"), f"process P{number} did not start"
        self.procs[number] = proc
        self.live.append(number)
        return proc

    def _proc(self, which: int) -> Proc:
        return self.procs[self.live[which % len(self.live)]]

    def _live(self) -> list[Proc]:
        return [self.procs[n] for n in self.live]

    def _due(self) -> bool:
        """Something a claim may hand out: a message waiting, or one in flight at a process that ended."""
        return any(m.acked and (m.state == PENDING or m.state == IN_FLIGHT and m.holder not in self.live)
                   for m in self.msgs.values())

    def _ended(self, proc: Proc, handed_over: bool) -> None:
        """``proc`` has ended; its journal was handed to the table (an exit) or left as it was (a crash)."""
        self.live.remove(proc.number)
        proc.hung.clear()
        mine = [m for m in self.msgs.values() if m.owner == proc.number and m.acked and m.put_no > proc.handed_over]
        if handed_over:  # what waited went to the table; deliveries in flight stay in the journal
            for m in mine:
                if not (m.state == IN_FLIGHT and m.holder == proc.number):
                    m.owner_settled = True
        # A settlement that could not be written (the disk full) may have left the journal's note behind it.
        open_puts = [m.put_no for m in mine if not m.owner_settled or m.unsure]
        if open_puts:
            first = min(open_puts)
            for m in mine:
                if m.put_no >= first and m.state in (DELIVERED, DEAD):
                    m.again = max(m.again, 1)

    def _sent(self, mid: str, by: Proc, how: str) -> Msg:
        """A deliverer got ``mid``: check that it may, and mark it in flight."""
        m = self.msgs.get(mid)
        assert m is not None, f"P{by.number} {how} {mid}, which was never put"
        assert m.acked, f"P{by.number} {how} {mid}, whose put raised (the caller was told it failed)"
        if m.unsure or m.state == PENDING:
            pass
        elif m.state == IN_FLIGHT:
            assert m.holder is None or m.holder not in self.live, (
                f"P{by.number} {how} {mid} while P{m.holder}'s delivery of it is still in flight")
        else:
            assert m.again > 0, (f"P{by.number} {how} {mid}, which was {m.state} already, outside the "
                                 "at-least-once window")
            m.again -= 1
        m.state, m.holder = IN_FLIGHT, by.number
        return m

    def _settled(self, m: Msg, by: Proc, state: str) -> None:
        m.state, m.holder = state, None
        if m.owner == by.number:
            m.owner_settled = True

    def _unsure(self, ms: list[Msg], by: Proc) -> None:
        """A settlement failed part-way (the disk full): these may be anywhere, and sent again."""
        for m in ms:
            m.unsure = True
            if m.state == IN_FLIGHT and m.holder == by.number:
                m.state, m.holder = PENDING, None

    def _settle(self, proc: Proc, outcome: str, handles: list[tuple[int, Msg]]) -> None:
        """Settle deliveries of ``proc`` as the worker would: ``ok``, ``fail`` (retry), ``reject`` (dead)."""
        if not handles:
            return
        if outcome == "ok":
            for _, m in handles:
                m.received = True
            status, _ = proc.call("delivered", [h for h, _ in handles])
            for _, m in handles:
                self._settled(m, proc, DELIVERED)
                if status != "ok":
                    m.unsure = True
            return
        for handle, m in handles:
            status, error = proc.call(*(("retry", (handle, 0.0)) if outcome == "fail" else ("dead", handle)))
            if status == "ok":
                self._settled(m, proc, PENDING if outcome == "fail" else DEAD)
            else:
                self._unsure([m], proc)

    def _disk(self) -> tuple[dict[str, list[str]], set[str]]:
        """What a process would recover from the files now: table rows by message, and journal lines not settled."""
        rows: dict[str, list[str]] = {}
        if not self.path.exists():
            return rows, set()
        if self._peek is None:
            self._peek = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        for mid, state in self._peek.execute("SELECT message_id, state FROM outbox"):
            rows.setdefault(mid, []).append(state)
        taken = dict(self._peek.execute("SELECT name, taken FROM outbox_journal").fetchall())
        lines = set()
        for name in journal.journals(self.path):
            data = journal.read_from(self.dir / name, taken.get(name, 0))
            for _, items in journal.decode(data).entries:
                lines.update(mid for mid, _, _ in items)
        return rows, lines

    # -- rules ------------------------------------------------------------------------------------
    @initialize()
    @_step
    def first_process(self) -> None:
        """Every sequence starts with one process on the outbox."""
        self._start()

    @precondition(lambda self: len(self.live) < 2)
    @rule()
    @_step
    def start_process(self) -> None:
        """A restart (after a crash or an exit), or a second process on the same outbox."""
        self._start()

    @precondition(lambda self: self.live)
    @rule(which=st.integers(0, 1), n=st.integers(1, 3), to=st.sampled_from(DESTINATIONS))
    @_step
    def put(self, which: int, n: int, to: str) -> None:
        proc = self._proc(which)
        proc.puts += 1
        items = []
        for _ in range(n):
            self.next_msg += 1
            items.append((f"m{self.next_msg}", to, {"n": self.next_msg}))
        status, value = proc.call("put", items)
        assert status == "ok" or self.full, f"a put failed with room on the disk: {value}"
        assert status == "ok" or value.startswith("RecordsUnavailableError"), f"a put on a full disk raised {value}"
        for mid, _, _ in items:
            self.msgs[mid] = Msg(mid, proc.number, proc.puts, acked=status == "ok")

    @precondition(lambda self: self.live and self._due())
    @rule(which=st.integers(0, 1), limit=st.integers(1, 8),
          decisions=st.lists(st.sampled_from(["ok", "fail", "reject", "hang", "not attempted"]), min_size=1,
                             max_size=4))
    @_step
    def deliver(self, which: int, limit: int, decisions: list[str]) -> None:
        """Claim due messages and deliver each: answered OK, failed (retried), rejected (dead), hanging, not tried."""
        proc = self._proc(which)
        status, claimed = proc.call("claim", limit)
        if status != "ok":
            assert self.full, f"a claim failed with room on the disk: {claimed}"
            return
        by: dict[str, list[tuple[int, Msg]]] = {}
        for i, (handle, mid, _) in enumerate(claimed):
            decision = decisions[i % len(decisions)]
            m = self._sent(mid, proc, "claimed")
            if decision == "hang":
                proc.hung[handle] = mid
            by.setdefault(decision, []).append((handle, m))
        for outcome in ("ok", "fail", "reject"):
            self._settle(proc, outcome, by.get(outcome, []))
        if by.get("not attempted"):
            status, _ = proc.call("release", [h for h, _ in by["not attempted"]])
            for _, m in by["not attempted"]:
                m.state, m.holder = PENDING, None
                if status != "ok":
                    m.unsure = True

    @precondition(lambda self: any(self.procs[n].hung for n in self.live))
    @rule(which=st.integers(0, 1), outcome=st.sampled_from(["ok", "fail", "reject"]))
    @_step
    def finish_hung(self, which: int, outcome: str) -> None:
        """A delivery that hung returns at last."""
        proc = next(p for p in (self._proc(which), *(self.procs[n] for n in self.live)) if p.hung)
        handles = [(h, self.msgs[mid]) for h, mid in proc.hung.items()]
        proc.hung.clear()
        self._settle(proc, outcome, handles)

    @precondition(lambda self: self.live and self._due())
    @rule(which=st.integers(0, 1), codes=st.lists(st.sampled_from(sorted(OUTCOMES)), min_size=1, max_size=3))
    @_step
    def worker_round(self, which: int, codes: list[str]) -> None:
        """One batch of ``OutboxWorker.run_once`` (probes, circuit breaker, retries up to MAX_ATTEMPTS)."""
        proc = self._proc(which)
        status, value = proc.call("worker", codes)
        assert status == "ok", value
        sent, error = value
        assert error is None or self.full, f"a worker's batch failed with room on the disk: {error}"
        done = [(self._sent(mid, proc, "delivered"), code, attempts) for _, mid, code, attempts in sent]
        if error is not None:
            for m, code, _ in done:
                m.received = m.received or code == "ok"
            self._unsure([m for m, _, _ in done], proc)
            return
        for m, code, attempts in done:
            if code == "ok":
                m.received = True
                self._settled(m, proc, DELIVERED)
            elif code == "not attempted":
                m.state, m.holder = PENDING, None
            elif code == "fail" and attempts + 1 < MAX_ATTEMPTS:
                self._settled(m, proc, PENDING)
            else:
                self._settled(m, proc, DEAD)

    @precondition(lambda self: any(m.state == DEAD for m in self.msgs.values()))
    @rule(all_of_them=st.booleans())
    @_step
    def replay(self, all_of_them: bool) -> None:
        """``nexus-otel webhooks replay`` (every dead letter, or the first one by id)."""
        if not self.path.exists():
            return
        args = ["webhooks", "replay", "--outbox", str(self.path)]
        dead: list[str] = []
        if all_of_them:
            args.append("--all")
        else:
            self._disk()
            assert self._peek is not None
            row = self._peek.execute("SELECT id, message_id FROM outbox WHERE state = 'dead' ORDER BY id").fetchone()
            if row is None:
                return
            args.append(str(row[0]))
            dead = [row[1]]
        done = CliRunner().invoke(cli, args)
        if done.exit_code != 0:
            assert self.full, f"replay failed with room on the disk: {done.output}"
            return
        if all_of_them:
            dead = [m.mid for m in self.msgs.values() if m.state == DEAD]
        for mid in dead:
            m = self.msgs[mid]
            if m.state == DEAD:
                m.state = PENDING

    @precondition(lambda self: any(p.puts > p.handed_over or p.hung for p in self._live()))
    @rule(which=st.integers(0, 1))
    @_step
    def close(self, which: int) -> None:
        """``Outbox.close()``: its messages go to the table (the object stays usable)."""
        busy = [p for p in self._live() if p.puts > p.handed_over or p.hung]
        proc = busy[which % len(busy)]
        status, value = proc.call("close")
        assert status == "ok", value
        if not self.full:
            for m in self.msgs.values():
                if m.owner == proc.number:
                    m.owner_settled = True
            proc.handed_over = proc.puts

    @precondition(lambda self: self.live and self.msgs)
    @rule(which=st.integers(0, 1))
    @_step
    def exit(self, which: int) -> None:
        """The process ends without close(): the outbox object is dropped (its finalizer hands over)."""
        proc = self._proc(which)
        status, value = proc.call("exit")
        assert status == "ok", value
        proc.stop(kill=False)
        self._ended(proc, handed_over=not self.full)

    @precondition(lambda self: self.live and self.msgs)
    @rule(which=st.integers(0, 1), torn=st.integers(0, 60))
    @_step
    def crash(self, which: int, torn: int) -> None:
        """SIGKILL; with ``torn`` > 0, killed while writing a put: that many bytes of its line are in the journal."""
        proc = self._proc(which)
        proc.stop(kill=True)
        self._ended(proc, handed_over=False)
        if not torn or self.full:
            return
        self.next_msg += 1
        mid = f"m{self.next_msg}"
        line = journal.encode(time.time(), [(mid, DESTINATIONS[0], "{}")])
        pid = proc.identity.split("/")[1]
        own = [n for n in journal.journals(self.path) if journal.owner_of(n).split("/")[1:2] == [pid]]
        name = max(own, key=lambda n: (self.dir / n).stat().st_mtime_ns) if own else (
            f"{journal.prefix_of(self.path)}{proc.identity.replace('/', '+')}+0badf00d")
        with open(self.dir / name, "ab") as f:
            f.write(line[:min(torn, len(line) - 1)])
        self.msgs[mid] = Msg(mid, proc.number, proc.puts + 1, acked=False)

    @precondition(lambda self: self.disk_full_enabled and not self.full)
    @rule()
    @_step
    def disk_full(self) -> None:
        """The disk fills up (a ballast file): puts raise, table writes may fail, nothing acknowledged may go."""
        small_disk_tools.fill(self.root)
        self.full = True

    @precondition(lambda self: self.full)
    @rule()
    @_step
    def disk_freed(self) -> None:
        """Space returns: the next put is written, with no restart."""
        (self.root / "ballast").unlink()
        self.full = False

    # -- the check after every step -----------------------------------------------------------------
    def check_the_files(self) -> None:
        """A crash now loses nothing acknowledged, and re-queues nothing settled outside the window."""
        rows, lines = self._disk()
        for mid, states in rows.items():
            m = self.msgs.get(mid)
            assert m is not None and m.acked, f"the table has {mid}, whose put {'raised' if m else 'never happened'}"
            assert len(states) == 1, f"the table has {mid} {len(states)} times: {states}"
            if m.unsure or m.again:
                continue
            assert not (m.state == DELIVERED), f"{mid} was delivered, yet the table has it again ({states[0]})"
            assert not (m.state == DEAD and states[0] == "pending"), f"{mid} was dead-lettered, yet it is pending"
        for mid in lines:
            m = self.msgs.get(mid)
            assert m is not None and m.acked, f"a journal holds a whole line for {mid}, whose put raised"
        for m in self.msgs.values():
            if not m.acked or m.received or m.unsure:
                continue
            where = rows.get(m.mid, [])
            if m.state == DEAD:
                assert where == ["dead"], f"{m.mid} was dead-lettered but the table has {where or 'no row for it'}"
            else:
                assert where == ["pending"] or (not where and m.mid in lines), (
                    f"{m.mid} ({m.state}) was put and acknowledged, but a crash now would lose it: "
                    f"table {where or 'no row'}, {'a' if m.mid in lines else 'no'} journal line after the note")

    def teardown(self) -> None:
        """Every process ends; a new one must deliver every acknowledged message no receiver has, and list the dead."""
        try:
            if self.broken:  # a step failed: that is the report
                return
            if self.full:
                self.disk_freed()
            for number in list(self.live):
                proc = self.procs[number]
                proc.call("exit")
                proc.stop(kill=False)
                self._ended(proc, handed_over=True)
            last = self._start()
            for _ in range(50):
                status, claimed = last.call("claim", 100)
                assert status == "ok", claimed
                if not claimed:
                    break
                for _, mid, _ in claimed:
                    self._sent(mid, last, "claimed")
                status, value = last.call("delivered", [h for h, _, _ in claimed])
                assert status == "ok", value
                for _, mid, _ in claimed:
                    self.msgs[mid].state, self.msgs[mid].received = DELIVERED, True
            status, _ = last.call("exit")
            last.stop(kill=False)
            self.live.clear()
            dead = set()
            if self.path.exists():
                with contextlib.closing(sqlite3.connect(str(self.path))) as db:
                    dead = {row[0] for row in db.execute("SELECT message_id FROM outbox WHERE state = 'dead'")}
            for m in self.msgs.values():
                if not m.acked or m.unsure:
                    continue
                if m.state == DEAD:
                    assert m.mid in dead, f"{m.mid} was dead-lettered but is not among the dead letters"
                else:
                    assert m.received, f"{m.mid} was put and acknowledged but never delivered ({m.state})"
        finally:
            for number in list(self.live):
                self.procs[number].stop(kill=True)
            if self._peek is not None:
                self._peek.close()
            with contextlib.suppress(FileNotFoundError):
                (self.root / "ballast").unlink()
            shutil.rmtree(self.dir, ignore_errors=True)


def run_model(root: Path, *, disk_full: bool, examples: int = EXAMPLES, at_seed: int = SEED,
              preload: Sequence[str] = ()) -> None:
    """Run the machine on a folder under ``root`` (raises Hypothesis's report of the minimal failing steps).

    ``preload``: modules the outbox's processes import first, after this one (a mutation of the outbox, say).
    """
    def factory() -> OutboxModel:
        return OutboxModel(root, disk_full)

    # Shrinking a failure to its fewest steps takes minutes of processes: asked for, not by default.
    phases = list(Phase) if os.environ.get("OUTBOX_MODEL_SHRINK") == "1" else [Phase.explicit, Phase.generate]
    with forkserver_preloading([__name__, *preload]):
        try:
            run_state_machine_as_test(
                seed(at_seed)(factory),
                settings=settings(max_examples=examples, stateful_step_count=STEPS, deadline=None, database=None,
                                  print_blob=True, suppress_health_check=list(HealthCheck), phases=phases))
        except BaseException as exc:
            exc.add_note(f"outbox model: seed {at_seed}; reproduce with OUTBOX_MODEL_SEED={at_seed} "
                         ".venv/bin/python -m pytest tests/test_outbox_model.py")
            raise


def test_outbox_keeps_every_acknowledged_message_and_sends_settled_ones_only_in_the_window(tmp_path):
    """Random puts, deliveries, crashes, restarts and second processes never lose an acknowledged message."""
    with small_disk() as (root, no_mount):  # a tmpfs where it can be had: a disk's syncs cost ten times the time
        run_model(root if no_mount is None else tmp_path, disk_full=False)


def test_a_full_disk_between_the_steps_loses_nothing_acknowledged_either():
    """The same sequences with the disk filling up and freed between steps: still nothing acknowledged is lost."""
    with small_disk() as (root, no_mount):
        if no_mount is not None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"cannot mount a small tmpfs for the full-disk steps: {no_mount}")
            pytest.skip(f"cannot mount a small tmpfs for the full-disk steps: {no_mount}")
        run_model(root, disk_full=True, examples=EXAMPLES * 2 // 3)
