"""What one outbox object put and has not settled: its own workers deliver it from memory.

Every put is appended to the object's journal (:mod:`.journal`: durable on
return) and kept here, by destination, until it is *settled*: delivered, or
moved into the outbox's SQLite table (a retry, a dead letter, a circuit held
open, a spill, a close). A worker of the same object claims these messages
without touching SQLite, so the common case (put, delivered at the first
attempt) costs the table nothing but a note, once per batch, of how far the
journal is settled. That note is the journal's ``taken`` offset: the end of
the longest run of lines, from the start, whose every message is settled.
The journal of a running process is its own; once the process has ended,
whoever reads the outbox next takes the journal's lines from that offset on
into the table (at least once: what was delivered after the last note is
delivered again, with the same id).
"""

from __future__ import annotations

import os
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .journal import JournalWriter

WAITING, CLAIMED, SETTLED = 0, 1, 2


@dataclass(slots=True, eq=False)
class Line:
    """One put's line in a journal: where it ends, and how many of its messages are not settled."""

    journal: str
    end: int
    open: int


@dataclass(slots=True, eq=False)
class Item:
    """One message put and not yet settled; ``handle`` (negative) is its id while this object holds it."""

    handle: int
    message_id: str
    destination: str
    payload: str
    created_at: float
    line: Line
    state: int = WAITING
    lease_until: float = 0.0
    """While claimed: when its claim ends (``time.time()``), should it be handed to the table meanwhile."""


class OwnJournal:
    """This object's journal writer and the messages in it not yet settled; safe to share between threads."""

    def __init__(self, writer: JournalWriter) -> None:
        self.writer = writer
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._lines: deque[Line] = deque()
        self._waiting: dict[str, deque[Item]] = {}
        self._held: dict[int, Item] = {}  # every unsettled item, by handle
        self._next = -1
        self._ended: dict[str, int] = {}  # retired journal -> its size: removed once settled to there

    def _forked(self) -> None:
        """In a forked child (call with the lock): the parent's messages are the parent's, not the child's to send."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._lines.clear()
            self._waiting.clear()
            self._held.clear()
            self._ended.clear()

    # -- the workflow's side ---------------------------------------------------------
    def put(self, created_at: float, items: Sequence[tuple[str, str, str]]) -> None:
        """Append one line and hold its messages (the line and the memory in the same order as the file).

        Raises what the write raised (``OSError``); then nothing of this put is held, and the file
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
                item = Item(self._next, message_id, destination, payload, created_at, line)
                self._next -= 1
                self._held[item.handle] = item
                queue = self._waiting.get(destination)
                if queue is None:
                    queue = self._waiting[destination] = deque()
                queue.append(item)

    # -- the workers' side -----------------------------------------------------------
    def claim(self, matches: Callable[[str], bool], room: int, lease_until: float = 0.0) -> list[Item]:
        """Up to ``room`` waiting messages whose destination ``matches``, oldest first per destination."""
        out: list[Item] = []
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
                    item.state = CLAIMED
                    item.lease_until = lease_until
                    out.append(item)
                if not queue:
                    del self._waiting[destination]
                if len(out) >= room:
                    break
        return out

    def held(self, handles: Iterable[int]) -> list[Item]:
        """The unsettled items of these handles (others are ignored: settled already, or never ours)."""
        with self._lock:
            self._forked()
            return [item for h in handles if (item := self._held.get(h)) is not None]

    def release(self, items: Iterable[Item]) -> None:
        """Claimed items back to waiting, first in line again (they were not attempted)."""
        with self._lock:
            for item in reversed(list(items)):
                if item.state != CLAIMED:
                    continue
                item.state = WAITING
                queue = self._waiting.get(item.destination)
                if queue is None:
                    queue = self._waiting[item.destination] = deque()
                queue.appendleft(item)

    def take_waiting(self, matches: Callable[[str], bool] | None = None, keep: int = 0) -> list[Item]:
        """Waiting items (of destinations ``matches`` accepts; all if None) beyond the newest ``keep``, oldest first.

        They are marked claimed: the caller moves them into the table, then settles them (or
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
            waiting.sort(key=lambda item: -item.handle)  # put order
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
                item.state = CLAIMED
            return out

    def take_claimed(self) -> list[Item]:
        """Every claimed item (in delivery), in put order: the caller hands them to the table, then settles them."""
        with self._lock:
            self._forked()
            return sorted((item for item in self._held.values() if item.state == CLAIMED), key=lambda i: -i.handle)

    def settled_to(self, items: Iterable[Item]) -> dict[str, int]:
        """How far each journal would be settled from its start once ``items`` are (only those that would move).

        Changes nothing: the caller notes it in a transaction, and settles the items once that commits.
        """
        with self._lock:
            closing = Counter(item.line for item in set(items) if item.state != SETTLED)
            progress: dict[str, int] = {}
            for line in self._lines:
                if line.open > closing[line]:
                    break
                progress[line.journal] = line.end
            return progress

    def settle(self, items: Iterable[Item]) -> dict[str, int]:
        """Mark items settled; how far each journal is now settled from its start (only those that moved)."""
        progress: dict[str, int] = {}
        with self._lock:
            for item in items:
                if item.state == SETTLED:
                    continue
                if item.state == WAITING:  # settled without a claim (a look's message delivered by hand)
                    queue = self._waiting.get(item.destination)
                    if queue is not None and item in queue:
                        queue.remove(item)
                        if not queue:
                            del self._waiting[item.destination]
                item.state = SETTLED
                item.line.open -= 1
                self._held.pop(item.handle, None)
            lines = self._lines
            while lines and lines[0].open == 0:
                line = lines.popleft()
                progress[line.journal] = line.end
        return progress

    # -- looks ---------------------------------------------------------------------
    def waiting(self, matches: Callable[[str], bool] | None = None) -> list[Item]:
        with self._lock:
            self._forked()
            return [item for dest, queue in self._waiting.items() if matches is None or matches(dest)
                    for item in queue]

    def count(self, matches: Callable[[str], bool] | None = None) -> int:
        """Messages not yet settled (waiting or in delivery) whose destination ``matches``."""
        with self._lock:
            self._forked()
            return sum(1 for item in self._held.values() if matches is None or matches(item.destination))

    def has_waiting(self, matches: Callable[[str], bool]) -> bool:
        with self._lock:
            self._forked()
            return any(queue and matches(dest) for dest, queue in self._waiting.items())

    @property
    def settled_all(self) -> bool:
        with self._lock:
            self._forked()
            return not self._lines

    # -- files -----------------------------------------------------------------------
    def rotate(self) -> tuple[str, int] | None:
        """Start a new journal file at the next put; the old one's name and size (removed once settled to there)."""
        with self._lock:
            ended = self.writer.retire()
            if ended is not None:
                self._ended[ended[0]] = ended[1]
            return ended

    def finished(self) -> list[str]:
        """Retired journals with no line left unsettled (their progress noted): their files and rows can go."""
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
