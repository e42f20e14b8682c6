"""Delivering an outbox's messages: one worker thread per sink, retries with backoff, a circuit breaker.

An :class:`OutboxWorker` thread leases due messages, delivers them, and ends
each lease: ack (delivered), retry with exponential backoff and jitter (a
failed attempt), dead letter after ``max_attempts`` or a final answer (from
where it can be listed and replayed), or release (not attempted). A
destination that fails trips its :class:`~.breaker.CircuitBreaker`. Messages
given up on are logged as one line per batch and destination, not one each,
with credentials and secret query values masked (:func:`~nexus_otel.urls.mask_url`).
Only the worker's thread delivers, also while stopping, so a drain never
sends a payload twice.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..urls import mask_url
from .breaker import CircuitBreaker
from .message import Handle, Message
from .queue import DEFAULT_LEASE, Outbox, OutboxView

log = logging.getLogger("nexus_otel.outbox")
ORPHAN_CHECK = 10.0
"""Seconds between two looks for the leases of processes that ended (besides one as the worker starts)."""
_ERROR_PAUSE = 1.0
"""Seconds the delivery loop waits after an error it cannot act on (a full disk, a broken outbox file)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one delivery attempt came to: ``ok``, or retry (with an optional delay hint), or give up.

    ``attempted=False`` means the message was not tried at all (the deadline
    came first, or its destination is held): it stays as it was, with no attempt
    spent. ``held_until`` (a ``time.time()``) holds the whole destination: the
    receiver asked for a pause (``Retry-After`` with a 429 or 503), for ``hold_reason``.
    """

    ok: bool
    error: str = ""
    retry: bool = True
    retry_after: float | None = None
    attempted: bool = True
    held_until: float | None = None
    hold_reason: str = ""


OK = Outcome(True)
NOT_ATTEMPTED = Outcome(False, "not attempted", attempted=False)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits ``min(cap, base * 2**n)``, scaled by 0.5-1.0."""

    max_attempts: int = 8
    base: float = 0.5
    cap: float = 300.0

    def delay(self, attempts: int, hint: float | None = None, rng: random.Random | None = None) -> float:
        backoff = min(self.cap, self.base * (2 ** min(attempts, 60)))
        delay = backoff / 2 + (rng.uniform if rng is not None else random.uniform)(0, backoff / 2)
        if hint is not None:
            delay = max(delay, min(hint, self.cap))
        return delay


Deliver = Callable[[list[Message], float | None], list[Outcome]]
"""Deliver a batch; the second argument is a ``time.monotonic()`` deadline (or None) no attempt may pass."""


class OutboxWorker:
    """Delivers due messages on one thread; wakes at once on new messages, else when the next retry is due.

    Only this thread ever delivers, also while stopping: a payload is never
    sent twice by a drain racing the worker. Workers of other processes sharing
    the outbox lease their batches too (:meth:`Outbox.lease`), so each message
    has one deliverer at a time. Call :meth:`start` before use.
    """

    def __init__(self, outbox: Outbox | OutboxView, deliver: Deliver, *, policy: RetryPolicy = RetryPolicy(),
                 batch_size: int = 50, name: str = "outbox",
                 on_outcome: Callable[[str, int], None] | None = None, idle_poll: float = 1.0,
                 breaker: CircuitBreaker | None = None, linger: float = 0.2, refill: float = 0.0,
                 on_exit: Callable[[], None] | None = None, lease: float = DEFAULT_LEASE,
                 on_tick: Callable[[], None] | None = None) -> None:
        self.outbox = outbox
        self.lease = lease
        """Seconds a leased batch is this worker's alone (see :meth:`Outbox.lease`)."""
        self.deliver = deliver
        self.policy = policy
        self.batch_size = batch_size
        self.name = name
        self.on_outcome = on_outcome or (lambda outcome, n: None)
        self.idle_poll = idle_poll
        self.linger = linger
        """Seconds to wait after a wake-up so that messages queued meanwhile go in the same batch."""
        self.refill = refill
        """Seconds to wait after a batch that was not full before the next, so that it fills: for sinks
        where a batch costs much more than a message (a database transaction). 0 takes what is due at once,
        which keeps a slow receiver's requests in flight."""
        self.on_exit = on_exit
        self.on_tick = on_tick
        """Called on the worker's thread after each batch's leases are ended, and at least once an ``idle_poll`` when
        idle: to publish what the worker knows (each destination's state)."""
        """Called on the worker's thread as it ends (after the drain): to release what only it used."""
        self.breaker = breaker or CircuitBreaker(base=min(policy.base, 1.0), cap=min(policy.cap, 30.0), name=name)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._drain_until: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"nexus-otel-{name}", daemon=True)
        self._started = False

    def start(self) -> OutboxWorker:
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def notify(self) -> None:
        """New messages were queued."""
        if not self._wake.is_set():
            self._wake.set()

    def _release_orphans(self) -> None:
        """Messages a process that ended had leased: due now, not at their lease's end."""
        try:
            released = self.outbox.release_orphans()
            if released:
                log.warning("%s: %d messages claimed by a process that has ended are due again", self.name, released)
        except Exception as exc:
            log.error("%s: cannot release the claims of ended processes: %s", self.name, exc)

    def _run(self) -> None:
        self._release_orphans()
        orphans_at = time.monotonic() + ORPHAN_CHECK
        while not self._stop.is_set():
            if time.monotonic() >= orphans_at:  # a peer killed meanwhile (another worker, a replica on this host)
                self._release_orphans()
                orphans_at = time.monotonic() + ORPHAN_CHECK
            if self.on_tick is not None:
                try:
                    self.on_tick()
                except Exception as exc:
                    log.debug("%s: on_tick failed: %s", self.name, exc)
            try:
                worked, full = self._run_batch()
            except Exception as exc:  # never let the worker die; a broken batch waits and retries
                log.error("%s: delivery loop error: %s", self.name, exc)
                # The outbox cannot be written (a full disk), say: pause, so the loop neither spins nor logs
                # more than a line a second (a wake-up for new messages does not cut the pause short).
                self._stop.wait(_ERROR_PAUSE)
                continue
            if worked:
                if not full and self.refill:
                    self._stop.wait(self.refill)  # under a steady load: let the next batch fill
                continue
            try:
                wait = self.outbox.next_due_in()
            except Exception:
                wait = None
            woken = self._wake.wait(self.idle_poll if wait is None else min(wait, self.idle_poll))
            self._wake.clear()
            if woken and self.linger and not self._stop.is_set():
                self._stop.wait(self.linger)
        # Stopping: deliver what is due now until the deadline, on this thread only.
        deadline = self._drain_until
        while deadline is not None and time.monotonic() < deadline:
            try:
                if not self.run_once(deadline):
                    break
            except Exception as exc:
                log.error("%s: drain error: %s", self.name, exc)
                break
        if self.on_exit is not None:
            try:
                self.on_exit()
            except Exception as exc:
                log.error("%s: error while closing: %s", self.name, exc)

    def run_once(self, deadline: float | None = None) -> bool:
        """Deliver one batch of due messages; true if any was delivered or retried.

        A destination not known to be up (new, or after a failure) gets one
        message first; the rest of its share of the batch goes only if that
        one was delivered. So an outage costs one attempt, not one per message.
        """
        return self._run_batch(deadline)[0]

    def _run_batch(self, deadline: float | None = None) -> tuple[bool, bool]:
        """:meth:`run_once`, and whether the batch was full (more may be due now)."""
        now = time.time()
        groups: dict[str, list[Message]] = {}
        waiting: set[str] = set()
        unsent: list[Handle] = []
        # Leased: another process sharing the outbox does not take these meanwhile.
        # Deliveries start only in the lease's first half, so none is still running when it ends.
        lease_end = time.monotonic() + self.lease / 2
        deadline = lease_end if deadline is None else min(deadline, lease_end)
        claimed = self.outbox.lease(self.batch_size, self.lease)
        full = len(claimed) >= self.batch_size
        for message in claimed:
            dest = message.destination
            if self.breaker.is_open(dest, now):
                waiting.add(dest)  # postponed below, without spending an attempt
                unsent.append(message.handle)
                continue
            groups.setdefault(dest, []).append(message)
        if unsent:
            self.outbox.release(unsent)
        if waiting:
            self._hold_open(now, waiting)
        if not groups:
            return False, full
        worked = False
        given_up: list[tuple[Message, str]] = []
        try:
            for dest, messages in groups.items():
                if not self.breaker.is_up(dest) and len(messages) > 1:
                    worked = self._deliver(messages[:1], deadline, given_up) or worked
                    if not self.breaker.is_up(dest):
                        self.outbox.release([m.handle for m in messages[1:]])
                        continue  # the probe failed (its circuit is open) or was not attempted
                    messages = messages[1:]
                worked = self._deliver(messages, deadline, given_up) or worked
        finally:
            if given_up:
                self._log_given_up(given_up)
        failed = {dest for dest in groups if not self.breaker.is_up(dest)}
        if failed:
            self._hold_open(time.time(), failed)
        return worked, full

    def _deliver(self, batch: list[Message], deadline: float | None, given_up: list[tuple[Message, str]]) -> bool:
        """Deliver ``batch`` and settle each outcome; true if any was attempted. Dead-lettered messages are
        added to ``given_up`` with their error, for :meth:`_log_given_up`.

        A destination that delivered or answered any message of the batch is up: its failures
        in the batch (an overloaded receiver's 503s) are retried, its circuit stays closed; one
        that asked for a pause (``Retry-After``) is held, not broken. One with no answer at all
        fails once per batch, not once per message.
        """
        outcomes = self.deliver(batch, deadline)
        done: list[Handle] = []
        unsent: list[Handle] = []
        worked = False
        now = time.time()
        # Reachable: it delivered, gave a final answer (a 3xx, a 4xx), or asked for a pause (Retry-After).
        answered = {m.destination for m, o in zip(batch, outcomes)
                    if o.ok or (o.attempted and (not o.retry or o.held_until is not None))}
        opened: dict[str, float] = {}  # destinations that failed in this batch: their next probe
        for message, outcome in zip(batch, outcomes):
            dest = message.destination
            if outcome.held_until is not None:
                self.breaker.hold(dest, outcome.held_until, outcome.hold_reason, now)
            if not outcome.attempted:
                unsent.append(message.handle)
                continue
            worked = True
            if outcome.ok:
                done.append(message.handle)
                continue
            if outcome.retry and dest not in answered and dest not in opened:
                opened[dest] = self.breaker.failed(dest, outcome.error, now)
            if outcome.retry and message.attempts + 1 < self.policy.max_attempts:
                delay = max(self.policy.delay(message.attempts, outcome.retry_after), opened.get(dest, now) - now)
                self.outbox.retry(message.handle, delay, outcome.error)
                self.on_outcome("retried", 1)
            else:
                self.outbox.dead_letter(message.handle, outcome.error)
                self.on_outcome("failed", 1)
                given_up.append((message, outcome.error))
        for dest in answered:  # delivered, or a final answer (a 3xx, a 4xx): reachable, its outage is over
            self.breaker.succeeded(dest, now)
        if done:
            self.outbox.ack(done)
            self.on_outcome("delivered", len(done))
        if unsent:
            self.outbox.release(unsent)
        return worked

    def _log_given_up(self, given_up: list[tuple[Message, str]]) -> None:
        """One ERROR line per destination and error for the messages a batch dead-lettered (a receiver that
        redirects or rejects everything gives one line a batch, not one a message)."""
        groups: dict[tuple[str, str], list[Message]] = {}
        for message, error in given_up:
            groups.setdefault((message.destination, error), []).append(message)
        for (destination, error), messages in groups.items():
            first = messages[0]
            if len(messages) == 1:
                log.error("%s: giving up on %s to %s after %d attempts: %s", self.name, first.message_id,
                          mask_url(destination), first.attempts + 1, error)
            else:
                log.error("%s: giving up on %d messages to %s (%s, ... %s), after up to %d attempts: %s",
                          self.name, len(messages), mask_url(destination), first.message_id,
                          messages[-1].message_id, max(m.attempts for m in messages) + 1, error)

    def _hold_open(self, now: float, destinations: set[str]) -> None:
        """Postpone the due messages of these destinations, if their circuit is open, to their next probe."""
        for dest, until in self.breaker.open_circuits(now):
            if dest in destinations:
                held = self.outbox.hold(dest, until)
                if held:
                    self.breaker.held(dest, held)

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the thread, letting it deliver what is due for up to ``timeout`` seconds; true if it ended.

        What is not delivered stays queued on disk for the next process. A
        delivery still in flight at the deadline is left to finish on its own.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        self._drain_until = deadline
        self._stop.set()
        self._wake.set()
        if self._started:
            self._thread.join(max(0.0, deadline - time.monotonic()) + 0.05)
        alive = self._thread.is_alive()
        try:
            left = self.outbox.left() if not alive else None  # this process's: not those another one delivers
        except Exception:
            left = None
        if alive:
            log.warning("%s: stopped with a delivery still in flight; undelivered messages stay in %s",
                        self.name, self.outbox.path)
        elif left:
            log.warning("%s: %d messages left in %s for the next start", self.name, left, self.outbox.path)
        return not alive
