"""Webhook delivery to receivers as users run them: what arrives, how fast, how often the receiver refused.

Run::

    python benchmarks/receivers.py            # every case, once
    python benchmarks/receivers.py --rounds 3 # medians of three

Each case is an app (``WebhookPlugin`` with its defaults, unsigned) executing a
burst of workflows through the Python API, delivering to a receiver on
loopback in this process (``tests/plain_receivers.py``), none of them tuned to
the sender:

- ``stock``: Python's stock ``http.server.ThreadingHTTPServer`` (accept queue
  5, a connection per request) answering at once; 500 executions, a 0.2 s
  pause, then ``app.stop()`` with its default deadline. Reported: delivered
  before ``stop()`` returned, distinct, left in the outbox. Target: all 500,
  each once, none left.
- ``stock-50ms``: the same server answering after 50 ms; 500 executions.
  Reported: seconds from the first execution to the 500th delivery. Target:
  <= 12 s.
- ``pool``: four workers (20 ms each) behind a front answering 503 beyond
  them; 1,000 executions. Reported: seconds to deliver all, and the share of
  attempts after the first 2 s answered 503. Target: all 1,000, < 5 %.

The figures are counts and a share, not absolute times, except the 12 s
target of ``stock-50ms``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import add_smoke_option, smoke_verdict

from nexus_otel.plugins import WebhookPlugin
from nexus_otel.testing import CapturedTelemetry
from tests.plain_receivers import PoolReceiver, StockReceiver


def _app(url: str, tmp: str) -> tuple[Any, WebhookPlugin]:
    app = CapturedTelemetry("receivers").app("receivers")
    webhook = WebhookPlugin(url, outbox_path=Path(tmp) / "outbox.sqlite", secret=None)
    app.add_plugin(webhook)
    app.register("ship", lambda inputs: inputs["n"])
    return app, webhook


def stock(n: int = 500) -> dict[str, float]:
    with StockReceiver() as receiver, tempfile.TemporaryDirectory() as tmp:
        app, webhook = _app(receiver.url, tmp)
        for i in range(n):
            app.execute_workflow("ship", {"n": i})
        time.sleep(0.2)
        started = time.monotonic()
        app.stop()
        stop = time.monotonic() - started
        delivered = receiver.delivered()
        left = webhook.outbox.counts()["pending"]
    return {"delivered": len(delivered), "distinct": len(set(delivered)), "left": left, "stop_s": stop}


def _burst(receiver: Any, n: int, timeout: float) -> tuple[float, float, list[str]]:
    """``n`` executions delivering to ``receiver``, waited for: (when they started, seconds until the ``n``-th
    delivery, what was delivered)."""
    with tempfile.TemporaryDirectory() as tmp:
        app, _ = _app(receiver.url, tmp)
        started = time.monotonic()
        for i in range(n):
            app.execute_workflow("ship", {"n": i})
        receiver.wait_for(n, timeout=timeout)
        took = time.monotonic() - started
        app.stop(timeout=2)
        return started, took, receiver.delivered()


def stock_slow(n: int = 500) -> dict[str, float]:
    with StockReceiver(delay=0.05) as receiver:
        _, took, delivered = _burst(receiver, n, timeout=30)
    return {"delivered": len(delivered), "distinct": len(set(delivered)), "seconds": took}


def pool(n: int = 1000) -> dict[str, float]:
    with PoolReceiver(capacity=4, work=0.02) as receiver:
        started, took, delivered = _burst(receiver, n, timeout=40)
        later = [a for a in receiver.attempts if a.at - started > 2.0]
    refused = sum(a.status == 503 for a in later) / len(later) if later else 0.0
    return {"delivered": len(delivered), "distinct": len(set(delivered)), "seconds": took,
            "refused_after_2s": refused, "attempts": len(receiver.attempts)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1)
    add_smoke_option(parser, "a tenth of the executions")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    n_stock, n_slow, n_pool = (50, 50, 100) if args.smoke else (500, 500, 1000)
    ok = True
    problems: list[str] = []
    runs = [stock(n_stock) for _ in range(args.rounds)]
    for r in runs:
        print(f"stock: {r['delivered']:.0f} of {n_stock} delivered before stop() returned ({r['stop_s']:.1f} s), "
              f"{r['distinct']:.0f} distinct, {r['left']:.0f} left")
    passed = all(r["delivered"] == r["distinct"] == n_stock and r["left"] == 0 for r in runs)
    ok &= passed
    problems += [] if passed else [f"stock: not all {n_stock} delivered once before stop() returned"]
    print(f"  target all {n_stock}, each once, none left: {'PASS' if passed else 'FAIL'}")
    runs = [stock_slow(n_slow) for _ in range(args.rounds)]
    for r in runs:
        print(f"stock-50ms: {r['delivered']:.0f} of {n_slow} in {r['seconds']:.1f} s, {r['distinct']:.0f} distinct")
    seconds = statistics.median(r["seconds"] for r in runs)
    delivered = all(r["distinct"] == n_slow for r in runs)
    problems += [] if delivered else [f"stock-50ms: not all {n_slow} delivered"]
    passed = delivered and seconds <= 12
    ok &= passed
    print(f"  median {seconds:.1f} s (target <= 12 s): {'PASS' if passed else 'FAIL'}")
    runs = [pool(n_pool) for _ in range(args.rounds)]
    for r in runs:
        print(f"pool of 4: {r['delivered']:.0f} of {n_pool} in {r['seconds']:.1f} s, {r['attempts']:.0f} attempts, "
              f"{100 * r['refused_after_2s']:.1f} % of the attempts after 2 s answered 503")
    share = statistics.median(r["refused_after_2s"] for r in runs)
    delivered = all(r["distinct"] == n_pool for r in runs)
    problems += [] if delivered else [f"pool: not all {n_pool} delivered"]
    passed = delivered and share < 0.05
    ok &= passed
    print(f"  median {100 * share:.1f} % refused (target < 5 %, all delivered): {'PASS' if passed else 'FAIL'}")
    if args.smoke:
        return smoke_verdict(problems)
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
