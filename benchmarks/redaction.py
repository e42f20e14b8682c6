"""CPU time per execution of redaction: masking by key only, against masking by key and by value shape.

Run::

    python benchmarks/redaction.py            # about 10 s
    python benchmarks/redaction.py --rounds 5 # shorter, noisier

Value scrubbing (:mod:`nexus_otel.secret_patterns`) runs on every string of an
execution's inputs and of every span's attributes, on the workflow's thread.
Two per-execution steps are timed, each with ``Redactor(scrub_credentials=False)``
(keys only: the cost before values were scrubbed) and the default ``Redactor()``:

* **inputs**: ``to_attribute`` of a typical inputs dict (ten values, seven strings:
  a name, an e-mail address, two SKUs, a sentence, a URL, a UUID; one sensitive key);
* **span**: ``RedactingSpanProcessor.redact`` of a workflow span with the
  attributes the host sets (its own names, a session id, the inputs attribute);
* **error**: ``scrub_text`` of an 80-character exception message (failures only).

The two sides run in alternating rounds (the order flips each round), timed with
``time.thread_time``; per side the median over rounds of µs per call, and the
difference. It reports; it does not gate.
"""

from __future__ import annotations

import argparse
import statistics
import time
import timeit
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

from nexus_otel.processors.span_redaction import RedactingSpanProcessor
from nexus_otel.redaction import Redactor

INPUTS: dict[str, Any] = {
    "user": "ada", "email": "ada@example.com", "order_id": 123456, "amount": 42.5,
    "items": [{"sku": "A-100", "qty": 2}, {"sku": "B-200", "qty": 1}],
    "note": "please deliver before noon", "password": "hunter2",
    "callback": "https://shop.example.com/orders/123456/done", "request_id": "3f2a9c1e-8d4b-4c2a-9f1e-2b3c4d5e6f70",
}
ERROR = "ValueError: could not connect to db at host db.internal port 5432 after 3 attempts"


def _cases(redactor: Redactor) -> dict[str, Callable[[], Any]]:
    span_redaction = RedactingSpanProcessor(redactor, [])
    with TracerProvider().get_tracer("benchmark").start_as_current_span("workflow greet") as span:
        span.set_attributes({
            "nexus.workflow.name": "greet", "nexus.workflow.id": "3f2a9c1e-8d4b-4c2a-9f1e-2b3c4d5e6f70",
            "session.id": "sess-20261206-ada", "nexus.channel": "api",
            "nexus.workflow.inputs": redactor.to_attribute(INPUTS),
        })
    return {
        "inputs": lambda: redactor.to_attribute(INPUTS),
        "span": lambda: span_redaction.redact(span),
        "error": lambda: redactor.scrub_text("status.description", ERROR),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--number", type=int, default=2000, help="calls per round and side")
    args = parser.parse_args()
    sides = {"keys only": _cases(Redactor(scrub_credentials=False)), "keys + values": _cases(Redactor())}
    times: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.rounds):
        order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
        for side in order:
            for case, call in sides[side].items():
                spent = timeit.Timer(call, timer=time.thread_time).timeit(args.number)
                times.setdefault((case, side), []).append(spent / args.number * 1e6)
    for case in ("inputs", "span", "error"):
        before = statistics.median(times[(case, "keys only")])
        after = statistics.median(times[(case, "keys + values")])
        print(f"{case:7s} keys only {before:7.2f} µs   keys + values {after:7.2f} µs   "
              f"difference {after - before:+7.2f} µs")


if __name__ == "__main__":
    main()
