"""Group commit: concurrent callers' writes go to the database in one transaction, each caller waiting for its own.

A caller of :meth:`GroupCommit.submit` returns once its items are committed
(or raises what the commit raised). The first caller to arrive while no write
runs writes at once, on its own thread (no hand-off to another thread, so a
lone execution pays one commit and nothing more). Callers that arrive while
that write runs queue up; when it ends, the first of them writes everything
queued meanwhile in one transaction, and so on. Under load a commit carries as
many executions' items as arrived during the one before it: the database
sees one round trip and one commit per group instead of one per execution,
and no caller waits for more than the commit in progress and its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from ..errors import RecordsUnavailableError

T = TypeVar("T")

WAIT_LIMIT = 60.0
"""Seconds a caller waits for a commit another thread runs for it (far above a commit's own timeouts):
past that it gives up with an error rather than hang a workflow forever."""


class _Slot(Generic[T]):
    __slots__ = ("items", "done", "error", "lead")

    def __init__(self, items: list[T]) -> None:
        self.items = items
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.lead = False
        """Set (with ``done``) when this caller is to write the group queued behind the last write."""


class GroupCommit(Generic[T]):
    """Commits the items of concurrent :meth:`submit` calls together with ``write(items)`` (one transaction).

    ``write`` runs on one caller's thread at a time; it raises to fail every caller of its group. When
    ``alone(exc)`` says the failure may be one caller's doing (a value the database refuses), the group's
    callers are written one by one instead, so one bad item fails only its own caller.
    """

    def __init__(self, write: Callable[[list[T]], None], *, wait_limit: float = WAIT_LIMIT,
                 alone: Callable[[BaseException], bool] = lambda exc: False) -> None:
        self._write = write
        self._alone = alone
        self._wait_limit = wait_limit
        self._lock = threading.Lock()
        self._queue: list[_Slot[T]] = []
        self._writing = False
        self.commits = 0
        """Transactions written so far (items per commit = items submitted / commits)."""

    def submit(self, items: list[T]) -> None:
        """Return once ``items`` are committed; raise what their group's write raised."""
        slot = _Slot(items)
        with self._lock:
            if self._writing:
                self._queue.append(slot)
                lead = False
            else:
                self._writing = True
                lead = True
        if not lead:
            if not slot.done.wait(self._wait_limit):
                with self._lock:
                    queued = slot in self._queue
                    if queued:
                        self._queue.remove(slot)
                if queued:
                    raise RecordsUnavailableError("outbox", f"no commit within {self._wait_limit:.0f} s")
                slot.done.wait()  # taken into a write just now, or handed the writing: that ends soon
            if not slot.lead:
                if slot.error is not None:
                    raise slot.error
                return
            # The previous writer handed over: this thread writes its group (its own items among them).
            with self._lock:
                group, self._queue = self._queue, []
            self._commit([slot, *group])
        else:
            self._commit([slot])
        if slot.error is not None:
            raise slot.error

    def _commit(self, group: list[_Slot[T]]) -> None:
        """Write ``group`` in one transaction, tell each caller, and hand the writing to the next one queued."""
        error: BaseException | None = None
        try:
            self._write([item for slot in group for item in slot.items])
        except BaseException as exc:  # every caller of the group gets it
            error = exc
        self.commits += 1
        if error is not None and len(group) > 1 and self._alone(error):
            for slot in group:  # one caller's bad item: the others are written without it
                if error is not None and not self._alone(error):
                    slot.error = error  # the database itself failed meanwhile: no more tries
                else:
                    try:
                        self._write(slot.items)
                        error = None
                    except BaseException as exc:
                        slot.error = error = exc
                    self.commits += 1
                slot.done.set()
        else:
            for slot in group:
                slot.error = error
                slot.done.set()
        with self._lock:
            if not self._queue:
                self._writing = False
                return
            nxt = self._queue.pop(0)
        nxt.lead = True
        nxt.done.set()
