"""The outbox's processes for the model-based tests: each one real, forked, driven over a pipe.

A process opens the outbox its target names (a file: the local outbox; a ``postgresql://`` URL: the
shared one), releases the leases of processes that ended (as a starting worker does), and then runs
the model's commands one at a time until it is told to exit or is killed. Deliveries are the model's:
an ``OutboxWorker`` in the process hands its batches to a function that answers with the codes the
model chose, and reports what it was given. The processes fork from a server that has the model's
module imported (:func:`forkserver_preloading`): a start costs milliseconds, not a second of imports.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from nexus_otel.outbox import WEBHOOK_SCOPE, CircuitBreaker, OutboxWorker, Outcome, RetryPolicy, open_outbox

MAX_ATTEMPTS = 3
OUTCOMES = {"ok": Outcome(True), "fail": Outcome(False, "HTTP 503"), "reject": Outcome(False, "HTTP 400", retry=False),
            "not attempted": Outcome(False, "not attempted", attempted=False)}
"""What the model's delivery codes stand for, as a webhook delivery would report them."""


def serve(conn: Connection, target: str, lease: float) -> None:
    """One outbox process: runs the parent's commands on the outbox at ``target`` until told to exit (or killed).

    Leases (``claim`` and the worker's) last ``lease`` seconds. Every command answers ``("ok", result)`` or
    ``("error", "ExceptionType: message")``.
    """
    logging.getLogger("nexus_otel").setLevel(logging.CRITICAL + 1)  # the model checks behaviour, not log lines
    gc.freeze()  # what the server imported: the collection at exit looks only at this process's objects
    outbox: Any = open_outbox(target)
    with contextlib.suppress(Exception):
        outbox.release_orphans()  # as a starting worker does
    conn.send(("ok", "ready"))
    sent: list[tuple[int, str, str, int]] = []
    codes: list[str] = []

    def deliver(batch: list[Any], deadline: float | None) -> list[Outcome]:
        out = []
        for message in batch:
            code = codes[len(sent) % len(codes)]
            sent.append((message.id, message.message_id, code, message.attempts))
            out.append(OUTCOMES[code])
        return out

    worker: Any = OutboxWorker(outbox.view(WEBHOOK_SCOPE), deliver, policy=RetryPolicy(MAX_ATTEMPTS, 0.0, 0.0),
                               breaker=CircuitBreaker(base=0.0, cap=0.0), linger=0, lease=lease)
    while True:
        cmd, arg = conn.recv()
        result: Any = None
        try:
            if cmd == "put":
                result = outbox.put(arg)
            elif cmd == "claim":
                result = [(m.id, m.message_id, m.attempts) for m in outbox.lease(arg, lease)]
            elif cmd == "delivered":
                outbox.delivered(arg)
            elif cmd == "retry":  # (handle, delay)
                outbox.retry(arg[0], arg[1], "HTTP 503")
            elif cmd == "dead":
                outbox.dead(arg, "HTTP 400")
            elif cmd == "release":
                outbox.release(arg)
            elif cmd == "release_orphans":
                result = outbox.release_orphans()
            elif cmd == "dead_letters":
                result = [m.message_id for m in outbox.dead_letters()]
            elif cmd == "worker":
                sent.clear()
                codes[:] = arg
                try:
                    worker.run_once()
                except Exception as exc:
                    conn.send(("ok", (list(sent), f"{type(exc).__name__}: {exc}")))
                    continue
                result = (list(sent), None)
            elif cmd == "close":
                outbox.close()
            elif cmd == "exit":  # the process ends without close(): the object is dropped, as at exit
                worker = outbox = None
                gc.collect()
                conn.send(("ok", None))
                return
            else:
                raise ValueError(f"unknown command {cmd}")
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            continue
        conn.send(("ok", result))


@dataclass(eq=False)
class Proc:
    """A running outbox process, as the model sees it."""

    number: int
    process: Any
    conn: Connection
    identity: str
    """What the process writes as a lease's owner (``host/pid/start``)."""
    puts: int = 0
    handed_over: int = 0
    """Puts up to this one were handed to the table by a close() (no window after a crash)."""
    hung: dict[int, str] = field(default_factory=dict)
    """Deliveries in flight that have not returned: claim handle -> message id."""

    def call(self, cmd: str, arg: Any = None) -> tuple[str, Any]:
        """Send a command and wait for its answer; ``ready?`` only waits (for the answer to the start)."""
        if cmd != "ready?":
            self.conn.send((cmd, arg))
        return self.answer(cmd)

    def answer(self, cmd: str) -> tuple[str, Any]:
        """The answer to the command sent last."""
        if not self.conn.poll(60):
            raise AssertionError(f"process P{self.number} did not answer {cmd!r} within 60 s")
        status, value = self.conn.recv()
        return status, value

    def stop(self, kill: bool) -> None:
        if kill:
            self.process.kill()
        self.process.join(30)
        assert self.process.exitcode is not None, f"process P{self.number} did not end"
        self.conn.close()


@contextlib.contextmanager
def forkserver_preloading(modules: Sequence[str]) -> Iterator[multiprocessing.context.BaseContext]:
    """The forkserver context, its server to import ``modules`` (the model's, and any the caller adds) and the
    shared outbox's driver (if installed) before it forks a process.

    A server already running (an earlier model in this process) is kept, with what it imported: hence the driver
    for every model (else each process of the next one imports it, a tenth of a second a start). The server starts
    in the current folder, which a test may have changed: it finds the tests by the path (``PYTHONPATH``, restored
    on exit).
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([*modules, "psycopg"])  # (a module it cannot import, it leaves out)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), *filter(None, [old])])
    try:
        yield ctx
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old
