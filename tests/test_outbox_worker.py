"""The outbox worker's batching: with ``refill``, batches fill under a steady load; never a wait after a full one."""

import threading
import time

from nexus_otel.outbox import OK, Outbox, OutboxWorker


class SlowSink:
    """Delivers every message after ``seconds`` (a receiver's answer time); keeps the batch sizes."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.batches: list[int] = []
        self.delivered = 0
        self.lock = threading.Lock()

    def __call__(self, batch, deadline=None):
        time.sleep(self.seconds)
        with self.lock:
            self.batches.append(len(batch))
            self.delivered += len(batch)
        return [OK] * len(batch)


def _wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def _steady_load(tmp_path, **worker_options) -> list[int]:
    """One message every 10 ms for 1 s to a sink taking 50 ms a batch; the sizes of the batches it got."""
    outbox = Outbox(tmp_path / "outbox.sqlite")
    sink = SlowSink(0.05)
    worker = OutboxWorker(outbox, sink, batch_size=500, name="steady", **worker_options).start()
    for i in range(100):
        outbox.enqueue([(f"m{i}", "sink", {"i": i})])
        worker.notify()
        time.sleep(0.01)
    assert _wait_for(lambda: sink.delivered == 100, 10)
    assert worker.stop(5)
    outbox.close()
    return sink.batches


def test_under_a_steady_load_batches_fill_instead_of_following_each_other_half_empty(tmp_path):
    """One message every 10 ms for 1 s to a sink taking 50 ms a batch: a handful of batches, not one per turn.

    Without waiting after a partial batch (``refill=0``, the default), the worker takes what
    arrived during each 50 ms delivery at once: about 20 batches of 5.
    """
    batches = _steady_load(tmp_path, linger=0.3, refill=0.3)
    assert len(batches) <= 10, batches


def test_without_refill_what_is_due_goes_at_once(tmp_path):
    """The default keeps a slow receiver busy: the same load goes in many small batches, none waiting."""
    batches = _steady_load(tmp_path, linger=0.0)
    assert len(batches) >= 12, batches


def test_a_full_batch_is_followed_at_once_by_the_next(tmp_path):
    """A backlog of 3.5 batches goes out back to back: the wait is only after a batch that was not full."""
    outbox = Outbox(tmp_path / "outbox.sqlite")
    outbox.enqueue([(f"m{i}", "sink", {"i": i}) for i in range(35)])
    sink = SlowSink(0.0)
    worker = OutboxWorker(outbox, sink, batch_size=10, linger=5.0, refill=5.0, name="backlog").start()
    started = time.monotonic()
    assert _wait_for(lambda: sink.delivered == 35, 4.5)  # a wait after each full batch would take 15 s
    assert time.monotonic() - started < 4.5
    assert sink.batches == [1, 9, 10, 10, 5]  # a destination not yet known to be up gets one message first
    assert worker.stop(1)  # stopping cuts the wait short
    outbox.close()
