"""The shared outbox (PostgreSQL) against a reference model: random puts, leases, deliveries, crashes and outages.

The same kind of test as ``tests/test_outbox_model.py`` for the local outbox, on
:class:`~nexus_otel.outbox.PostgresOutbox`: Hypothesis's ``RuleBasedStateMachine`` drives up to two real
processes (forked from a server that has the outbox imported; the commands and the processes are
``tests/outbox_processes.py``, shared with the local model) on one table of a real PostgreSQL server. A crash is
a ``SIGKILL``; the database stopping and starting between steps (``PostgresServer.stop()``/``start()``) is the
shared outbox's full disk. Leases last :data:`LEASE` seconds, and a rule waits for them to end. The model is
what the documentation promises (``docs/records.md``, "The shared outbox"), message by message:

* **Nothing acknowledged is lost.** After every step the table, read on a connection of its own, holds every
  message whose ``put`` returned and that no deliverer has acked: pending (or leased), or dead if it was given
  up on, once, with the attempts it was given, leased by the process that leased it last while its lease
  lasts, and due when a release, a retry's delay or a replay says. A put that raised
  (``RecordsUnavailableError``, the database stopped) leaves no row. At the end every process stops, a new one
  starts, and it must deliver every pending message and list every dead letter.
* **Nothing settled is sent again outside the at-least-once window.** An acked message is never leased again;
  a dead one only after ``nexus-otel webhooks replay``; a message leased by a process is leased by nobody else
  until its lease ends, or its process ended and a starting process's ``release_orphans`` (this host: it sees
  the pid gone) freed it; a message retried is not due before its delay ends, and is due once it has. A lease
  that took fewer messages than its limit took every message that was surely due. A retry or dead letter from
  a process whose lease ran out and that another process leased since changes nothing (an ack still deletes
  it: the receiver has it). Two processes leasing at the same moment never take the same message.

Times are the database's clock, which on this host is the clock the model reads (``time.time()``): the model
knows each lease began between the moments before and after the call that took it, and counts a lease as
surely running, or surely over, only outside that doubt (plus :data:`SLACK`). An operation may fail only while
the database is down, or as the first statement on a connection the database closed as it stopped (that one
fails once, and is opened again); one that failed changed nothing.

What it catches: deliberate mutations of the shared outbox, each applied only inside the outbox's processes (a
module the fork server imports after this one, monkeypatching ``PostgresOutbox``; the source untouched;
``run_model(..., preload=[module])``), fail at the default seed 2024 within the first examples (steps shrunk
with ``OUTBOX_MODEL_SHRINK=1``):

* **Two deliverers of one message.** ``lease`` naming the process but leaving ``next_attempt_at`` (the message
  stays due). Seed 2024; minimal: ``first_process(); start_process(); put(n=1, to='http://127.0.0.1:9/a',
  which=0); lease_at_once(...)`` -> "P2 leased m1 while P1's lease of it was running (it began at most 0.00 s
  before, and lasts 0.5 s): two deliverers of one message" (and ``first_process(); put(n=1, ...);
  deliver(decisions=['hang'], limit=1, which=0)`` -> "m1 is leased by P1 for 0.50 s more, yet its row is claimed
  by P1, due in -0.00 s").
* **A retry that ignores the lease's owner.** ``retry`` and ``dead_letter`` without ``claimed_by = me OR NULL``:
  a delivery that hung past its lease retries the message another process leased since. Seed 2024; shrunk (the
  shrinker stopped at five minutes): ``first_process(); database_stops(); start_process(); put(n=1, ...,
  which=0); database_starts(); end(kill=False, which=0); start_process(); put(n=1, ..., which=0);
  deliver(decisions=['hang'], limit=1, which=0); finish_hung(late=True, limit=1, outcome='fail', which=0)`` ->
  "m2 is leased by P3 for 0.50 s more, yet its row is claimed by nobody, due in -0.00 s".
* **An ack that deletes nothing.** ``ack`` a no-op. Seed 2024, first example: "m1 was acked, yet the table has
  it (pending)".
* **Orphans kept.** ``release_orphans`` releasing nothing. Seed 2024, within the first ten examples: "P3's
  release_orphans left P1's running lease of m6, though P1 ended".

Without ``FOR UPDATE SKIP LOCKED`` alone (the ``next_attempt_at`` still moved) two leases must overlap in the
database to take one message twice: ``lease_at_once`` tries that, but a race of microseconds is not a mutation
the model is shown to catch.

Reproducing a failure: as for the local model (``OUTBOX_MODEL_SEED``, ``OUTBOX_MODEL_SHRINK``); a failure prints
the seed, the minimal steps and a ``@reproduce_failure`` blob.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule, run_state_machine_as_test

from nexus_otel.cli import main as cli
from nexus_otel.outbox import PostgresOutbox
from nexus_otel.outbox import owners as claimer
from nexus_otel.outbox.postgres import TABLE

from .outbox_processes import MAX_ATTEMPTS, Proc, forkserver_preloading, serve
from .postgres_server import PostgresServer

SEED = int(os.environ.get("OUTBOX_MODEL_SEED", "2024"))
EXAMPLES = int(os.environ.get("OUTBOX_MODEL_PG_EXAMPLES", "25"))
STEPS = 30
LEASE = 0.5
"""Seconds a lease lasts: short, so that a sequence sees leases end."""
RETRY_DELAY = 0.2
"""The delay of a retry the model asks to be later (the other retries are due at once, as the worker's)."""
OUTAGES = 1
"""Database outages in one sequence at most (each costs a third of a second; the steps go to deliveries)."""
SLACK = 0.05
"""Seconds of doubt around a moment the database reads its clock (scheduling between the call and the read)."""
DESTINATIONS = ("http://127.0.0.1:9/a", "http://127.0.0.1:9/b")  # never contacted: deliveries are the model's

PENDING, LEASED, DELIVERED, DEAD = "pending", "leased", "delivered", "dead"
ENQUEUE, READER = "enqueue", "reader"
"""A process's two connections: its puts', and the one its leases, settlements and reads share."""


@dataclass(eq=False)
class Msg:
    """One message in the model."""

    mid: str
    acked: bool
    state: str = PENDING
    claimer: int | None = None
    """The process its row names as claimed_by (leased: the holder; a lease that ran out keeps it)."""
    lease_from: float = 0.0
    lease_to: float = 0.0
    """Its lease began between these two moments: it ends between ``lease_from + LEASE`` and ``lease_to + LEASE``."""
    due_from: float = 0.0
    due_by: float = 0.0
    """Pending and not leased: due at a moment between these two (a retry's delay counted on either side)."""
    attempts: int = 0
    received: bool = False
    """A deliverer acked it at least once (a receiver has it)."""


def _step(method: Callable[..., None]) -> Callable[..., None]:
    """A rule, then the check of the table; a failure marks the machine broken (the end's check is skipped)."""

    @functools.wraps(method)
    def run(self: SharedOutboxModel, *args: Any, **kwargs: Any) -> None:
        try:
            method(self, *args, **kwargs)
            self.check_the_table()
        except BaseException:
            self.broken = True
            raise

    return run


class SharedOutboxModel(RuleBasedStateMachine):
    """Random sequences of shared-outbox operations, each checked against the model (see the module's docstring)."""

    def __init__(self, server: PostgresServer) -> None:
        super().__init__()
        self.server = server
        self.url = server.dsn
        self.ctx = multiprocessing.get_context("forkserver")
        self.procs: dict[int, Proc] = {}
        self.live: list[int] = []
        self.msgs: dict[str, Msg] = {}
        self.next_msg = 0
        self.down = False
        self.outages = 0
        self.stale: dict[int, set[str]] = {}
        """Per process, its connections the database closed as it stopped: each fails its next statement."""
        self.broken = False
        self._peek: Any = None
        self._query(f"TRUNCATE {TABLE} RESTART IDENTITY")  # each sequence starts on an empty table

    # -- helpers ----------------------------------------------------------------------------------
    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A statement on the model's own connection (opened again after an outage)."""
        for attempt in (1, 2):
            try:
                if self._peek is None or self._peek.closed:
                    self._peek = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
                cur = self._peek.execute(sql, params)
                return cur.fetchall() if cur.description else []
            except psycopg.OperationalError:
                with contextlib.suppress(Exception):
                    self._peek.close()
                self._peek = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _start(self) -> Proc:
        """A new process on the outbox; once it answers, it releases the leases of the processes that ended."""
        number = len(self.procs) + 1
        parent, child = self.ctx.Pipe()
        process = self.ctx.Process(target=serve, args=(child, self.url, LEASE), daemon=True)
        process.start()
        child.close()
        proc = Proc(number, process, parent, claimer.identity(process.pid))
        assert proc.call("ready?") == ("ok", "ready"), f"process P{number} did not start"
        self.procs[number] = proc
        self.live.append(number)
        status, value = proc.call("release_orphans")
        t1 = time.time()
        if status != "ok":
            assert self._may_fail(proc, READER), f"release_orphans failed with the database up: {value}"
            return proc
        # A lease of an ended process that was running is released (due now); one that ran out may keep its name.
        ended = [m for m in self.msgs.values() if m.state == LEASED and m.claimer not in self.live]
        self._learn(ended, t1, f"P{number}'s release_orphans", surely_freed=lambda m: t1 < m.lease_from + LEASE - SLACK)
        return proc

    def _learn(self, candidates: list[Msg], t1: float, by: str, surely_freed: Callable[[Msg], bool]) -> None:
        """``candidates`` may have been released (claimed_by NULL, due by ``t1``) or left as they were: read which."""
        if not candidates:
            return
        names = {mid: who for mid, who in self._query(f"SELECT message_id, claimed_by FROM {TABLE} WHERE "
                                                       "message_id = ANY(%s)", ([m.mid for m in candidates],))}
        for m in candidates:
            who = names.get(m.mid)
            if who is None:
                m.state, m.claimer, m.due_from, m.due_by = PENDING, None, 0.0, t1
                continue
            assert m.claimer is not None and self._holds(who, m.claimer), (
                f"{m.mid} was leased by P{m.claimer} last, yet after {by} its row is claimed by {self._name(who)}")
            assert not surely_freed(m), f"{by} left P{m.claimer}'s running lease of {m.mid}, though P{m.claimer} ended"

    def _holds(self, owner: str | None, number: int) -> bool:
        """Whether a row's ``claimed_by`` names process ``number`` (its identity, and what else the outbox adds)."""
        mine = self.procs[number].identity
        return owner is not None and (owner == mine or owner.startswith(mine + "/"))

    def _name(self, owner: str | None) -> str:
        """A lease owner as the model names it (P1, P2, ...; nobody for NULL), or as the row has it."""
        return "nobody" if owner is None else next((f"P{n}" for n in self.procs if self._holds(owner, n)), owner)

    def _may_fail(self, proc: Proc, connection: str) -> bool:
        """Whether a statement of ``proc`` on ``connection`` may fail now: the database is down, or it closed that
        connection as it stopped (it is opened again after the failure)."""
        stale = self.stale.get(proc.number, set())
        was = connection in stale
        stale.discard(connection)
        return self.down or was

    def _waiting(self) -> bool:
        """Something acknowledged waits for a deliverer (due now, or once a lease or a delay ends)."""
        return any(m.acked and m.state in (PENDING, LEASED) for m in self.msgs.values())

    def _proc(self, which: int) -> Proc:
        return self.procs[self.live[which % len(self.live)]]

    def _surely_due(self, m: Msg, at: float) -> bool:
        """Whether ``m`` was due at ``at`` whatever the doubt about the moments the database read its clock."""
        if not m.acked:
            return False
        if m.state == PENDING:
            return at > m.due_by + SLACK
        return m.state == LEASED and at > m.lease_to + LEASE + SLACK

    def _leased(self, mid: str, by: Proc, t0: float, t1: float, how: str) -> Msg:
        """``by`` leased ``mid`` between ``t0`` and ``t1``: check that it may, and mark it leased."""
        m = self.msgs.get(mid)
        assert m is not None, f"P{by.number} {how} {mid}, which was never put"
        assert m.acked, f"P{by.number} {how} {mid}, whose put raised (the caller was told it failed)"
        assert m.state != DELIVERED, f"P{by.number} {how} {mid}, which was acked already"
        assert m.state != DEAD, f"P{by.number} {how} {mid}, a dead letter not replayed"
        if m.state == LEASED:
            assert t1 >= m.lease_from + LEASE - SLACK, (
                f"P{by.number} {how} {mid} while P{m.claimer}'s lease of it was running (it began at most "
                f"{t1 - m.lease_from:.2f} s before, and lasts {LEASE} s): two deliverers of one message")
        else:
            assert t1 >= m.due_from - SLACK, (
                f"P{by.number} {how} {mid} {m.due_from - t1:.2f} s before its retry's delay ended")
        m.state, m.claimer, m.lease_from, m.lease_to = LEASED, by.number, t0, t1
        return m

    def _took_every_due(self, got: set[str], limit: int, at: float, who: str) -> None:
        """A lease that took fewer than its limit took every message surely due when it began."""
        missed = sorted((m.mid for m in self.msgs.values() if self._surely_due(m, at) and m.mid not in got),
                        key=lambda mid: int(mid[1:]))
        assert not missed, (f"{who} leased {sorted(got) or 'nothing'} (limit {limit}) while {missed} were due "
                            f"({', '.join(f'{mid} {self.msgs[mid].state}' for mid in missed)})")

    def _settle(self, proc: Proc, outcome: str, handles: list[tuple[int, Msg]]) -> None:
        """End ``proc``'s deliveries as a worker would: ``ok`` (ack), ``fail``/``later`` (retry), ``reject`` (dead)."""
        if not handles:
            return
        if outcome == "ok":
            status, value = proc.call("delivered", [h for h, _ in handles])
            if status != "ok":
                assert self._may_fail(proc, READER), f"an ack failed with the database up: {value}"
                return  # nothing changed: the leases run out, and the messages are delivered again
            for _, m in handles:
                m.state, m.claimer, m.received = DELIVERED, None, True  # deleted, whoever leased it since
            return
        for handle, m in handles:
            delay = RETRY_DELAY if outcome == "later" else 0.0
            t0 = time.time()
            status, value = proc.call(*(("dead", handle) if outcome == "reject" else ("retry", (handle, delay))))
            t1 = time.time()
            if status != "ok":
                assert self._may_fail(proc, READER), f"a {outcome} failed with the database up: {value}"
                continue
            if m.state not in (PENDING, LEASED) or m.claimer not in (proc.number, None):
                continue  # another process leased it since (or it was acked): not this process's to settle
            m.attempts += 1
            if outcome == "reject":
                m.state, m.claimer = DEAD, None
            else:
                m.state, m.claimer, m.due_from, m.due_by = PENDING, None, t0 + delay, t1 + delay

    def _release(self, proc: Proc, handles: list[tuple[int, Msg]]) -> None:
        """Not attempted: ``proc``'s leases end, the messages are due now."""
        if not handles:
            return
        status, value = proc.call("release", [h for h, _ in handles])
        t1 = time.time()
        if status != "ok":
            assert self._may_fail(proc, READER), f"a release failed with the database up: {value}"
            return
        for _, m in handles:
            if m.state in (PENDING, LEASED) and m.claimer == proc.number:
                m.state, m.claimer, m.due_from, m.due_by = PENDING, None, 0.0, t1

    def _ended(self, proc: Proc) -> None:
        self.live.remove(proc.number)
        proc.hung.clear()

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
        """A restart (after a crash or an exit), or a second process (a replica) on the same outbox."""
        self._start()

    @precondition(lambda self: self.live)
    @rule(which=st.integers(0, 1), n=st.integers(1, 3), to=st.sampled_from(DESTINATIONS))
    @_step
    def put(self, which: int, n: int, to: str) -> None:
        proc = self._proc(which)
        items = []
        for _ in range(n):
            self.next_msg += 1
            items.append((f"m{self.next_msg}", to, {"n": self.next_msg}))
        status, value = proc.call("put", items)
        t1 = time.time()
        assert status == "ok" or self._may_fail(proc, ENQUEUE), f"a put failed with the database up: {value}"
        assert status == "ok" or value.startswith("RecordsUnavailableError"), f"a failed put raised {value}"
        for mid, _, _ in items:
            self.msgs[mid] = Msg(mid, acked=status == "ok", due_by=t1)

    @precondition(lambda self: self.live and self._waiting())
    @rule(which=st.integers(0, 1), limit=st.integers(1, 6),
          decisions=st.lists(st.sampled_from(["ok", "fail", "later", "reject", "hang", "not attempted"]), min_size=1,
                             max_size=4))
    @_step
    def deliver(self, which: int, limit: int, decisions: list[str]) -> None:
        """Lease due messages and end each lease: acked, retried (now or later), dead, hanging, not attempted."""
        proc = self._proc(which)
        t0 = time.time()
        status, leased = proc.call("claim", limit)
        t1 = time.time()
        if status != "ok":
            assert self._may_fail(proc, READER), f"a lease failed with the database up: {leased}"
            return
        if len(leased) < limit:
            self._took_every_due({mid for _, mid, _ in leased}, limit, t0, f"P{proc.number}")
        by: dict[str, list[tuple[int, Msg]]] = {}
        for i, (handle, mid, attempts) in enumerate(leased):
            m = self._leased(mid, proc, t0, t1, "leased")
            assert attempts == m.attempts, f"P{proc.number} leased {mid} with {attempts} attempts, not {m.attempts}"
            decision = decisions[i % len(decisions)]
            if decision == "hang":
                proc.hung[handle] = mid
            by.setdefault(decision, []).append((handle, m))
        for outcome in ("ok", "fail", "later", "reject"):
            self._settle(proc, outcome, by.get(outcome, []))
        self._release(proc, by.get("not attempted", []))

    @precondition(lambda self: len(self.live) == 2 and self._waiting())
    @rule(limits=st.tuples(st.integers(1, 6), st.integers(1, 6)))
    @_step
    def lease_at_once(self, limits: tuple[int, int]) -> None:
        """Both processes lease at the same moment (two replicas' workers): no message goes to both; each is acked."""
        procs = [self.procs[n] for n in self.live]
        t0 = time.time()
        for proc, limit in zip(procs, limits):
            proc.conn.send(("claim", limit))
        answers = [proc.answer("claim") for proc in procs]
        t1 = time.time()
        for proc, (status, value) in zip(procs, answers):
            assert status == "ok" or self._may_fail(proc, READER), f"a lease failed with the database up: {value}"
        got = [leased if status == "ok" else [] for status, leased in answers]
        if all(status == "ok" for status, _ in answers) and all(len(g) < n for g, n in zip(got, limits)):
            self._took_every_due({mid for g in got for _, mid, _ in g}, sum(limits), t0, "P1 and P2 together")
        handles = [[(h, self._leased(mid, proc, t0, t1, "leased")) for h, mid, _ in leased]
                   for proc, leased in zip(procs, got)]
        for proc, mine in zip(procs, handles):
            self._settle(proc, "ok", mine)

    @precondition(lambda self: any(self.procs[n].hung for n in self.live))
    @rule(which=st.integers(0, 1), outcome=st.sampled_from(["ok", "fail", "later", "reject", "not attempted"]),
          late=st.booleans(), limit=st.integers(1, 6))
    @_step
    def finish_hung(self, which: int, outcome: str, late: bool, limit: int) -> None:
        """A delivery that hung returns at last; ``late``: past its lease, and the other process (if there is one)
        leased the message meanwhile (the first one's retry, dead letter or release then changes nothing; its ack
        deletes the message)."""
        slow = next(p for p in (self._proc(which), *(self.procs[n] for n in self.live)) if p.hung)
        if late:
            self._lease_runs_out(slow, limit)
        handles = [(h, self.msgs[mid]) for h, mid in slow.hung.items()]
        slow.hung.clear()
        if outcome == "not attempted":
            self._release(slow, handles)
        else:
            self._settle(slow, outcome, handles)

    def _lease_runs_out(self, slow: Proc, limit: int) -> None:
        """Time passes until ``slow``'s leases have surely ended; the other live process leases (and hangs)."""
        ends = [m.lease_to + LEASE + SLACK for m in map(self.msgs.get, slow.hung.values())
                if m is not None and m.state == LEASED and m.claimer == slow.number]
        time.sleep(max(0.0, max(ends, default=0.0) - time.time()))
        other = next((self.procs[n] for n in self.live if n != slow.number), None)
        if other is None:
            return
        t0 = time.time()
        status, leased = other.call("claim", limit)
        t1 = time.time()
        if status != "ok":
            assert self._may_fail(other, READER), f"a lease failed with the database up: {leased}"
            leased = []
        if status == "ok" and len(leased) < limit:
            self._took_every_due({mid for _, mid, _ in leased}, limit, t0, f"P{other.number}")
        for handle, mid, _ in leased:
            self._leased(mid, other, t0, t1, "leased")
            other.hung[handle] = mid

    @precondition(lambda self: self.live and self._waiting())
    @rule(which=st.integers(0, 1), codes=st.lists(st.sampled_from(["ok", "fail", "reject", "not attempted"]),
                                                  min_size=1, max_size=3))
    @_step
    def worker_round(self, which: int, codes: list[str]) -> None:
        """One batch of ``OutboxWorker.run_once`` (its lease, probes, circuit breaker, retries up to MAX_ATTEMPTS)."""
        proc = self._proc(which)
        t0 = time.time()
        status, value = proc.call("worker", codes)
        t1 = time.time()
        assert status == "ok", value
        sent, error = value
        assert error is None or self._may_fail(proc, READER), f"a worker's batch failed with the database up: {error}"
        assert not (error and sent), f"a worker delivered {sent} though its batch failed: {error}"
        done = {mid for _, mid, _, _ in sent}
        # What the worker leased and did not send (a probe first, the rest released) is due now: learn which.
        maybe = [m for m in self.msgs.values() if m.mid not in done and m.state in (PENDING, LEASED)
                 and (m.state == PENDING or t1 > m.lease_from + LEASE - SLACK)]
        for _, mid, code, attempts in sent:
            m = self._leased(mid, proc, t0, t1, "delivered")
            assert attempts == m.attempts, f"P{proc.number}'s worker had {mid}, {attempts} attempts, not {m.attempts}"
            if code == "ok":
                m.state, m.claimer, m.received = DELIVERED, None, True
            elif code == "not attempted":
                m.state, m.claimer, m.due_from, m.due_by = PENDING, None, 0.0, t1
            elif code == "fail" and attempts + 1 < MAX_ATTEMPTS:
                m.state, m.claimer, m.due_from, m.due_by, m.attempts = PENDING, None, 0.0, t1, m.attempts + 1
            else:
                m.state, m.claimer, m.attempts = DEAD, None, m.attempts + 1
        if error is None:
            for m in maybe:
                if m.state == PENDING:  # leased and released by the worker, or left: due by the batch's end
                    m.due_by = max(m.due_by, t1)
            self._learn([m for m in maybe if m.state == LEASED], t1, f"P{proc.number}'s worker", lambda m: False)

    @precondition(lambda self: any(m.state == LEASED and time.time() < m.lease_to + LEASE + SLACK
                                   for m in self.msgs.values()))
    @rule()
    @_step
    def lease_ends(self) -> None:
        """Time passes until the earliest running lease has surely ended (and a retry's delay, likely)."""
        now = time.time()
        ends = [m.lease_to + LEASE + SLACK for m in self.msgs.values() if m.state == LEASED]
        time.sleep(max(0.0, min((e for e in ends if e > now), default=now) - now))

    @precondition(lambda self: any(m.state == DEAD for m in self.msgs.values()))
    @rule(all_of_them=st.booleans())
    @_step
    def replay(self, all_of_them: bool) -> None:
        """``nexus-otel webhooks replay`` (every dead letter, or the first one by id)."""
        args = ["webhooks", "replay", "--outbox", self.url]
        dead = [m.mid for m in self.msgs.values() if m.state == DEAD]
        if all_of_them:
            args.append("--all")
        else:
            if self.down:
                return
            row = self._query(f"SELECT id, message_id FROM {TABLE} WHERE state = 'dead' ORDER BY id LIMIT 1")
            assert row, f"no dead letter in the table, though {dead} were dead-lettered"
            args.append(str(row[0][0]))
            dead = [row[0][1]]
        done = CliRunner().invoke(cli, args)
        if done.exit_code != 0:
            assert self.down, f"replay failed with the database up: {done.output}"
            return
        t1 = time.time()
        for mid in dead:
            m = self.msgs[mid]
            if m.state == DEAD:
                m.state, m.claimer, m.attempts, m.due_from, m.due_by = PENDING, None, 0, 0.0, t1

    @precondition(lambda self: self.live and self.msgs)
    @rule(which=st.integers(0, 1), kill=st.booleans())
    @_step
    def end(self, which: int, kill: bool) -> None:
        """The process ends: a SIGKILL (mid-delivery or between two), or an exit without close() (the outbox object
        dropped); either way its leases stay until they run out or a starting process releases them."""
        proc = self._proc(which)
        if not kill:
            status, value = proc.call("exit")
            assert status == "ok", value
        proc.stop(kill=kill)
        self._ended(proc)

    @precondition(lambda self: not self.down and self.outages < OUTAGES)
    @rule()
    @_step
    def database_stops(self) -> None:
        """PostgreSQL stops (a fast shutdown): puts raise, leases and settlements fail, nothing acknowledged goes."""
        self.server.stop()
        self.down = True
        self.outages += 1
        self.stale = {n: {ENQUEUE, READER} for n in self.live}

    @precondition(lambda self: self.down)
    @rule()
    @_step
    def database_starts(self) -> None:
        """PostgreSQL is back, with its data: the processes carry on with no restart."""
        self.server.start()
        self.down = False

    # -- the check after every step -----------------------------------------------------------------
    def check_the_table(self) -> None:
        """The table holds every acknowledged message not acked, as the model says, and nothing else."""
        if self.down:
            return
        rows = self._query(f"SELECT message_id, state, claimed_by, next_attempt_at, attempts,"
                           f" extract(epoch from clock_timestamp())::float8 FROM {TABLE}")
        seen: dict[str, tuple[Any, ...]] = {}
        for row in rows:
            mid = row[0]
            m = self.msgs.get(mid)
            assert m is not None and m.acked, f"the table has {mid}, whose put {'raised' if m else 'never happened'}"
            assert mid not in seen, f"the table has {mid} twice: {seen[mid]} and {row}"
            seen[mid] = row
        for m in self.msgs.values():
            if not m.acked:
                continue
            found = seen.get(m.mid)
            if m.state == DELIVERED:
                assert found is None, f"{m.mid} was acked, yet the table has it ({found[1]})"
                continue
            assert found is not None, f"{m.mid} ({m.state}) was put and acknowledged, but the table has no row for it"
            _, state, who, next_at, attempts, now = found
            assert state == ("dead" if m.state == DEAD else "pending"), f"{m.mid} is {m.state}, the table has {state}"
            if m.state == LEASED and now < m.lease_from + LEASE - SLACK:
                holder = self.procs[m.claimer] if m.claimer is not None else None
                assert holder is not None and self._holds(who, holder.number) and next_at > now, (
                    f"{m.mid} is leased by P{m.claimer} for {m.lease_from + LEASE - now:.2f} s more, yet its row is "
                    f"claimed by {self._name(who)}, due in {next_at - now:.2f} s")
            elif m.state == PENDING:
                assert who is None, (f"{m.mid} was released, retried or replayed, yet its row is claimed by "
                                     f"{self._name(who)}")
                assert m.due_from - SLACK <= next_at <= m.due_by + SLACK, (
                    f"{m.mid} should be due between {m.due_from - now:+.2f} and {m.due_by - now:+.2f} s from now, "
                    f"its row says {next_at - now:+.2f} s")
            assert attempts == m.attempts, f"{m.mid} was given {m.attempts} attempts, the table says {attempts}"

    def teardown(self) -> None:
        """Every process ends; a new one must deliver every acknowledged message not acked, and list the dead."""
        try:
            if self.broken:  # a step failed: that is the report
                return
            if self.down:
                self.database_starts()
            for number in list(self.live):
                proc = self.procs[number]
                assert proc.call("exit") == ("ok", None), f"P{number} did not exit"
                proc.stop(kill=False)
                self._ended(proc)
            last = self._start()
            deadline = time.monotonic() + LEASE + RETRY_DELAY + 30
            while time.monotonic() < deadline:
                t0 = time.time()
                status, leased = last.call("claim", 100)
                t1 = time.time()
                assert status == "ok", leased
                if not leased:
                    if not self._query(f"SELECT 1 FROM {TABLE} WHERE state = 'pending' LIMIT 1"):
                        break
                    time.sleep(0.05)  # a retry's delay, or a lease of a process on no host here, still running
                    continue
                handles = [(h, self._leased(mid, last, t0, t1, "leased")) for h, mid, _ in leased]
                self._settle(last, "ok", handles)
            status, listed = last.call("dead_letters")
            assert status == "ok", listed
            assert last.call("exit") == ("ok", None), "the last process did not exit"
            last.stop(kill=False)
            self._ended(last)
            for m in self.msgs.values():
                if not m.acked:
                    assert m.mid not in listed, f"{m.mid}'s put raised, yet it is a dead letter"
                elif m.state == DEAD:
                    assert m.mid in listed, f"{m.mid} was dead-lettered but is not among the dead letters {listed}"
                else:
                    assert m.received and m.mid not in listed, (
                        f"{m.mid} was put and acknowledged but never delivered ({m.state})")
        finally:
            for number in list(self.live):
                self.procs[number].stop(kill=True)
            if self._peek is not None:
                self._peek.close()
            if self.down:  # the next sequence starts with the database up
                self.server.start()


def run_model(server: PostgresServer, *, examples: int = EXAMPLES, at_seed: int = SEED,
              preload: Sequence[str] = ()) -> None:
    """Run the machine on ``server``'s database (raises Hypothesis's report of the minimal failing steps).

    ``preload``: modules the outbox's processes import first, after this one (a mutation of the outbox, say).
    """
    outbox = PostgresOutbox(server.dsn)  # the table, created once: each sequence truncates it
    outbox.close()

    def factory() -> SharedOutboxModel:
        return SharedOutboxModel(server)

    phases = list(Phase) if os.environ.get("OUTBOX_MODEL_SHRINK") == "1" else [Phase.explicit, Phase.generate]
    with forkserver_preloading([__name__, *preload]):
        try:
            run_state_machine_as_test(
                seed(at_seed)(factory),
                settings=settings(max_examples=examples, stateful_step_count=STEPS, deadline=None, database=None,
                                  print_blob=True, suppress_health_check=list(HealthCheck), phases=phases))
        except BaseException as exc:
            exc.add_note(f"shared outbox model: seed {at_seed}; reproduce with OUTBOX_MODEL_SEED={at_seed} "
                         ".venv/bin/python -m pytest tests/test_outbox_model_postgres.py")
            raise


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


def test_shared_outbox_keeps_every_acknowledged_message_and_never_has_two_deliverers_of_one(postgres):
    """Random puts, leases, crashes, replicas and database outages never lose an acknowledged message."""
    run_model(postgres)
