"""What one outbox object enqueued and has not finished with: its own workers deliver it from memory.

Every enqueue is appended to the object's journal (:mod:`.journal`: durable on
return) and kept here, by destination, until it is *done*: acked (delivered),
or moved into the outbox's SQLite table (a retry, a dead letter, a circuit held
open, a spill, a close). A worker of the same object leases these messages
without touching SQLite, so the common case (enqueued, delivered at the first
attempt) costs the table nothing but a *checkpoint*, once per batch: the
journal's offset up to which every line's messages are done (the column
``outbox_journal.taken``). The journal of a running process is its own; once
the process has ended, whoever reads the outbox next *recovers* the journal's
lines from that checkpoint on into the table (at least once: what was
delivered after the last checkpoint is delivered again, with the same id).
"""

from __future__ import annotations

import os
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .journal import JournalWriter
from .message import LocalHandle

WAITING, LEASED, DONE = 0, 1, 2
"""A local message's states: waiting to be leased, leased by a worker (in delivery), done (acked or in the table)."""


@dataclass(slots=True, eq=False)
class Line:
    """One enqueue's line in a journal: where it ends, and how many of its messages are not done."""

    journal: str
    end: int
    open: int


@dataclass(slots=True, eq=False)
class LocalMessage:
    """One message enqueued and not yet done; ``handle`` names it while this object holds it."""

    handle: LocalHandle
    message_id: str
    destination: str
    payload: str
    created_at: float
    line: Line
    state: int = WAITING
    lease_until: float = 0.0
    """While leased: when its lease ends (``time.time()``), should it be handed to the table meanwhile."""


class LocalMessages:
    """This object's journal writer and the messages in it not yet done; safe to share between threads."""

    def __init__(self, writer: JournalWriter) -> None:
        self.writer = writer
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._lines: deque[Line] = deque()
        self._waiting: dict[str, deque[LocalMessage]] = {}
        self._held: dict[LocalHandle, LocalMessage] = {}  # every message not done, by handle
        self._next = 1
        self._ended: dict[str, int] = {}  # retired journal -> its size: removed once checkpointed to there

    def _forked(self) -> None:
        """In a forked child (call with the lock): the parent's messages are the parent's, not the child's to send."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._lines.clear()
            self._waiting.clear()
            self._held.clear()
            self._ended.clear()

    # -- the workflow's side ---------------------------------------------------------
    def enqueue(self, created_at: float, items: Sequence[tuple[str, str, str]]) -> None:
        """Append one line and hold its messages (the line and the memory in the same order as the file).

        Raises what the write raised (``OSError``); then nothing of this enqueue is held, and the file
        holds none of its line (see :meth:`~.journal.JournalWriter.append`).
        """
        with self._lock:
            self._forked()
            try:
                name, end = self.writer.append(created_at, items)
            except OSError:
                # A file the writer could not cut back after a torn write: retired at its last whole line.
                self._ended.update(self.writer.take_abandoned())
                raise
            line = Line(name, end, len(items))
            self._lines.append(line)
            for message_id, destination, payload in items:
                item = LocalMessage(LocalHandle(self._next), message_id, destination, payload, created_at, line)
                self._next += 1
                self._held[item.handle] = item
                queue = self._waiting.get(destination)
                if queue is None:
                    queue = self._waiting[destination] = deque()
                queue.append(item)

    # -- the workers' side -----------------------------------------------------------
    def lease(self, matches: Callable[[str], bool], room: int, lease_until: float = 0.0) -> list[LocalMessage]:
        """Up to ``room`` waiting messages whose destination ``matches``, oldest first per destination."""
        out: list[LocalMessage] = []
        if room <= 0:
            return out
        with self._lock:
            self._forked()
            for destination in list(self._waiting):
                if not matches(destination):
                    continue
                queue = self._waiting[destination]
                while queue and len(out) < room:
                    item = queue.popleft()
                    item.state = LEASED
                    item.lease_until = lease_until
                    out.append(item)
                if not queue:
                    del self._waiting[destination]
                if len(out) >= room:
                    break
        return out

    def held(self, handles: Iterable[LocalHandle]) -> list[LocalMessage]:
        """The messages of these handles not yet done (others are ignored: done already, or never ours)."""
        with self._lock:
            self._forked()
            return [item for h in handles if (item := self._held.get(h)) is not None]

    def release(self, items: Iterable[LocalMessage]) -> None:
        """Leased messages back to waiting, first in line again (they were not attempted)."""
        with self._lock:
            for item in reversed(list(items)):
                if item.state != LEASED:
                    continue
                item.state = WAITING
                queue = self._waiting.get(item.destination)
                if queue is None:
                    queue = self._waiting[item.destination] = deque()
                queue.appendleft(item)

    def take_waiting(self, matches: Callable[[str], bool] | None = None, keep: int = 0) -> list[LocalMessage]:
        """Waiting items (of destinations ``matches`` accepts; all if None) beyond the newest ``keep``, oldest first.

        They are marked leased: the caller moves them into the table, then finishes them (or
        releases them if it could not).
        """
        with self._lock:
            self._forked()
            if keep and sum(len(queue) for queue in self._waiting.values()) <= keep:
                return []  # the common case: well under the cap
            waiting = [item for dest, queue in self._waiting.items() if matches is None or matches(dest)
                       for item in queue]
            if len(waiting) <= keep:
                return []
            waiting.sort(key=lambda item: item.handle.key)  # enqueue order
            out = waiting[:len(waiting) - keep]
            chosen = {id(item) for item in out}
            for dest in list(self._waiting):
                queue = self._waiting[dest]
                rest = deque(item for item in queue if id(item) not in chosen)
                if rest:
                    self._waiting[dest] = rest
                else:
                    del self._waiting[dest]
            for item in out:
                item.state = LEASED
            return out

    def take_leased(self) -> list[LocalMessage]:
        """Every leased message (in delivery), in enqueue order: the caller hands them to the table, then finishes
        them."""
        with self._lock:
            self._forked()
            return sorted((item for item in self._held.values() if item.state == LEASED), key=lambda i: i.handle.key)

    def checkpoint_after(self, items: Iterable[LocalMessage]) -> dict[str, int]:
        """Each journal's checkpoint once ``items`` are done (only those that would move).

        Changes nothing: the caller writes it in a transaction, and finishes the items once that commits.
        """
        with self._lock:
            closing = Counter(item.line for item in set(items) if item.state != DONE)
            progress: dict[str, int] = {}
            for line in self._lines:
                if line.open > closing[line]:
                    break
                progress[line.journal] = line.end
            return progress

    def finish(self, items: Iterable[LocalMessage]) -> dict[str, int]:
        """Mark items done; each journal's checkpoint now (only those that moved)."""
        progress: dict[str, int] = {}
        with self._lock:
            for item in items:
                if item.state == DONE:
                    continue
                if item.state == WAITING:  # done without a lease (a message read with due() and acked)
                    queue = self._waiting.get(item.destination)
                    if queue is not None and item in queue:
                        queue.remove(item)
                        if not queue:
                            del self._waiting[item.destination]
                item.state = DONE
                item.line.open -= 1
                self._held.pop(item.handle, None)
            lines = self._lines
            while lines and lines[0].open == 0:
                line = lines.popleft()
                progress[line.journal] = line.end
        return progress

    # -- reads ----------------------------------------------------------------------
    def waiting(self, matches: Callable[[str], bool] | None = None) -> list[LocalMessage]:
        with self._lock:
            self._forked()
            return [item for dest, queue in self._waiting.items() if matches is None or matches(dest)
                    for item in queue]

    def count(self, matches: Callable[[str], bool] | None = None) -> int:
        """Messages not yet done (waiting or in delivery) whose destination ``matches``."""
        with self._lock:
            self._forked()
            return sum(1 for item in self._held.values() if matches is None or matches(item.destination))

    def oldest(self, matches: Callable[[str], bool] | None = None) -> float | None:
        """When the oldest message not yet done (whose destination ``matches``) was enqueued; None if none."""
        with self._lock:
            self._forked()
            return min((item.created_at for item in self._held.values()
                        if matches is None or matches(item.destination)), default=None)

    def has_waiting(self, matches: Callable[[str], bool]) -> bool:
        with self._lock:
            self._forked()
            return any(queue and matches(dest) for dest, queue in self._waiting.items())

    @property
    def all_done(self) -> bool:
        with self._lock:
            self._forked()
            return not self._lines

    # -- files -----------------------------------------------------------------------
    def rotate(self) -> tuple[str, int] | None:
        """Start a new journal file at the next enqueue; the old one's name and size (removed once checkpointed
        to there)."""
        with self._lock:
            ended = self.writer.retire()
            if ended is not None:
                self._ended[ended[0]] = ended[1]
            return ended

    def finished(self) -> list[str]:
        """Retired journals with no line left not done (their checkpoint written): their files and rows can go."""
        with self._lock:
            if not self._ended:
                return []
            open_journals = {line.journal for line in self._lines}
            done = [name for name in self._ended if name not in open_journals]
            for name in done:
                del self._ended[name]
            return done

    def retired(self) -> dict[str, int]:
        with self._lock:
            return dict(self._ended)
