"""Each webhook destination's concurrency limit, requests in flight and holds, as metrics.

Three instruments, read from the sender's :class:`~.destinations.DestinationState` list at each
collection, each series labelled with ``destination``, the URL with its credentials and secret query
values masked (:func:`~nexus_otel.urls.mask_url`):

- ``nexus.webhook.concurrency_limit`` (``nexus_webhook_concurrency_limit``): requests the sender may
  have in flight to the destination now, the limit it has adapted to (at most ``max_in_flight``);
- ``nexus.webhook.in_flight`` (``nexus_webhook_in_flight``): requests in flight to it now;
- ``nexus.webhook.held`` (``nexus_webhook_held``): one series per destination and ``reason``
  (``retry_after``: the receiver asked for a pause; ``breaker``: its circuit is open after failures),
  1 while that holds it, else 0. Both series are always there, as with a state set in
  kube-state-metrics, so a hold that ends reads 0 rather than vanishing, and
  ``max by (destination) (nexus_webhook_held)`` is 1 while a destination is held for any reason.

The limit and the in-flight count add up across the worker processes of ``serve --workers N`` (each
worker has its own limit for a receiver, and the receiver sees their sum), so they are observable
up-down counters, which the merged ``/metrics`` sums; a hold is a reading (the largest is kept).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from ..urls import mask_url
from .destinations import DestinationState

log = logging.getLogger("nexus_otel.webhooks")

CONCURRENCY_LIMIT = "nexus.webhook.concurrency_limit"
IN_FLIGHT = "nexus.webhook.in_flight"
HELD = "nexus.webhook.held"
HOLD_REASONS = ("retry_after", "breaker")
"""The ``reason`` label's values, in the order a status line names them."""

Source = Callable[[], Iterable[DestinationState]]
"""What the sender knows of each destination now (``WebhookExporter.destinations``)."""


def observe_destinations(meter: Meter, source: Source) -> None:
    """Register the three instruments on ``meter``; each collection calls ``source`` once per instrument."""
    masked = _Masks()

    def limits(options: CallbackOptions) -> list[Observation]:
        return [Observation(s.limit, {"destination": masked(s.destination)}) for s in _read(source)]

    def in_flight(options: CallbackOptions) -> list[Observation]:
        return [Observation(s.in_flight, {"destination": masked(s.destination)}) for s in _read(source)]

    def held(options: CallbackOptions) -> list[Observation]:
        now = time.time()
        out = []
        for state in _read(source):
            destination = masked(state.destination)
            out.append(Observation(int(state.held(now)), {"destination": destination, "reason": "retry_after"}))
            out.append(Observation(int(state.breaker == "open"), {"destination": destination, "reason": "breaker"}))
        return out

    meter.create_observable_up_down_counter(
        CONCURRENCY_LIMIT, callbacks=[limits], unit="{request}",
        description="Webhook requests a destination may have in flight now (its adaptive limit).")
    meter.create_observable_up_down_counter(
        IN_FLIGHT, callbacks=[in_flight], unit="{request}", description="Webhook requests in flight to a destination.")
    meter.create_observable_gauge(
        HELD, callbacks=[held], unit="1",
        description="1 while a webhook destination is held (reason: retry_after, breaker), else 0.")


def _read(source: Source) -> list[DestinationState]:
    """``source()``, or nothing if it fails: a collection must never break on the sender's state."""
    try:
        return list(source())
    except Exception as exc:
        log.debug("cannot read the webhook destinations' state: %s", exc)
        return []


class _Masks:
    """``mask_url`` of each destination, computed once: a collection runs every few seconds, on the same URLs."""

    def __init__(self, most: int = 1024) -> None:
        self._masked: dict[str, str] = {}
        self._most = most

    def __call__(self, url: str) -> str:
        masked = self._masked.get(url)
        if masked is None:
            masked = mask_url(url)
            if len(self._masked) < self._most:
                self._masked[url] = masked
        return masked
