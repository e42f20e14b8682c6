"""CPU per span of the local trace store's exporter (what the export thread pays), by batch size.

Run::

    python benchmarks/local_store.py            # 9 rounds
    python benchmarks/local_store.py --quick    # 3 rounds

The spans are this project's shape (an HTTP server span, ``workflow <name>``
and its hook spans: ``benchmarks/otlp_encoding.py``'s batches). Each side is a
real ``LocalSpanExporter`` writing to a temporary directory (rotation included);
the reference side writes the standard library's JSON (``spanfile.encode``),
the candidate the exporter as shipped (``spanfile.encode_lines``, orjson). The
figure is ``time.process_time`` per span, median over rounds, the two sides
alternating. Batch sizes: 5 (one HTTP request's spans: a quiet app), 64 and 512
(the batch processor's largest export: a busy one). Target: <= 8 us per span
on the export thread at the busy sizes. Before the rounds a check decodes both sides' lines for every batch:
they must hold the same JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

# benchmarks/otlp_encoding.py's project-shaped spans
from harness import add_smoke_option, rotated, smoke_verdict
from otlp_encoding import make_batches

from nexus_otel.exporters import spanfile
from nexus_otel.exporters.local import LocalSpanExporter

TARGET_US = 8.0
SIZES = (5, 64, 512)


class ReferenceExporter(LocalSpanExporter):
    """The exporter as it was: the standard library's JSON encoder."""

    def export(self, spans: Sequence[Any]) -> Any:
        real = spanfile.encode_lines
        spanfile.encode_lines = lambda batch: ("\n".join([spanfile.encode(batch)]) + "\n").encode()
        try:
            return super().export(spans)
        finally:
            spanfile.encode_lines = real


def _batches() -> list[Any]:
    return [span for batch in make_batches() for span in batch]


def per_span(exporter: LocalSpanExporter, spans: list[Any], size: int) -> float:
    chunks = [spans[i:i + size] for i in range(0, len(spans), size)]
    t0 = time.process_time()
    for chunk in chunks:
        exporter.export(chunk)
    return (time.process_time() - t0) / len(spans) * 1e6


def check(spans: list[Any]) -> list[str]:
    """The sides write the same records: the shipped lines decode to the reference's JSON, batch by batch."""
    for size in SIZES:
        for i in range(0, len(spans), size):
            chunk = spans[i:i + size]
            reference = [json.loads(line) for line in spanfile.encode(chunk).splitlines()]
            if [json.loads(line) for line in spanfile.encode_lines(chunk).splitlines()] != reference:
                return [f"the shipped encoder's lines differ from the reference's (batch size {size})"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    add_smoke_option(parser, "one round")
    args = parser.parse_args(argv)
    rounds = 1 if args.smoke else 3 if args.quick else 9
    spans = _batches()
    problems = check(spans)
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    results: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sides = {"reference (json)": ReferenceExporter(os.path.join(tmp, "ref"), max_bytes=64 << 20),
                 "shipped (orjson)": LocalSpanExporter(os.path.join(tmp, "new"), max_bytes=64 << 20)}
        for exporter in sides.values():
            per_span(exporter, spans[:512], 64)  # warm-up
        for r in range(rounds):
            for size in SIZES:
                for name, exporter in rotated(list(sides.items()), r):
                    results.setdefault((name, size), []).append(per_span(exporter, spans, size))
    print(f"LocalSpanExporter CPU per span, {len(spans)} project-shaped spans per round, {rounds} rounds (median)")
    print(f"{'batch':>6} " + " ".join(f"{name:>18}" for name in ("reference (json)", "shipped (orjson)")) +
          f" {'ratio':>6}")
    ok = True
    for size in SIZES:
        ref = statistics.median(results[("reference (json)", size)])
        new = statistics.median(results[("shipped (orjson)", size)])
        verdict = ""
        if size >= 64:
            verdict = "PASS" if new <= TARGET_US else "FAIL"
            ok = ok and new <= TARGET_US
        print(f"{size:>6} {ref:>15.1f} us {new:>15.1f} us {new / ref:>6.2f} {verdict}")
    print(f"target: <= {TARGET_US:g} us per span at batch sizes 64 and 512")
    if args.smoke:
        return smoke_verdict(problems)
    return 0 if ok and not problems else 2


if __name__ == "__main__":
    sys.exit(main())
