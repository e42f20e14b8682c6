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
difference. Before the rounds a check shows both sides redact (a sensitive key's value masked by each, a
credential in a URL by keys + values only). It reports; it does not gate.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from typing import Any

from harness import add_smoke_option, rotated, smoke_verdict
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


def check(redactors: dict[str, Redactor]) -> list[str]:
    """Both sides really redact: the sensitive key's value is masked by each; the value that only its shape
    gives away (a credential in a URL) is masked by keys + values and kept by keys only."""
    problems = []
    shaped = {"callback": "https://bench:s3cr3t-Passw0rd@shop.example.com/orders"}
    for side, redactor in redactors.items():
        if INPUTS["password"] in redactor.to_attribute(INPUTS):
            problems.append(f"{side}: the password key's value was not masked")
        scrubbed = "s3cr3t-Passw0rd" not in redactor.to_attribute(shaped)
        if scrubbed != (side == "keys + values"):
            problems.append(f"{side}: a credential in a URL was {'masked' if scrubbed else 'kept'}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--number", type=int, default=2000, help="calls per round and side")
    add_smoke_option(parser, "2 rounds of 20 calls")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.number = 2, 20
    redactors = {"keys only": Redactor(scrub_credentials=False), "keys + values": Redactor()}
    problems = check(redactors)
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    sides = {side: _cases(redactor) for side, redactor in redactors.items()}
    times: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.rounds):
        for side in rotated(list(sides), round_):
            for case, call in sides[side].items():
                spent = timeit.Timer(call, timer=time.thread_time).timeit(args.number)
                times.setdefault((case, side), []).append(spent / args.number * 1e6)
    for case in ("inputs", "span", "error"):
        before = statistics.median(times[(case, "keys only")])
        after = statistics.median(times[(case, "keys + values")])
        print(f"{case:7s} keys only {before:7.2f} µs   keys + values {after:7.2f} µs   "
              f"difference {after - before:+7.2f} µs")
    return smoke_verdict(problems) if args.smoke else 0


if __name__ == "__main__":
    sys.exit(main())
