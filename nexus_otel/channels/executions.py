"""What ``GET /executions`` answers: the executions in flight now, on every worker of the server.

A trace arrives when its workflow ends; this is how a person (or ``nexus-otel top``) sees
the ones that have not ended yet: each entry is
:meth:`~nexus_otel.running.RunningExecution.as_dict`, longest running first.

Under ``nexus-otel serve --workers N`` a request reaches one worker, so that worker asks
the others over the socket they already share for ``/metrics``
(:meth:`~nexus_otel.telemetry.worker_metrics.WorkerMetrics.ask`) and lists the union.
Then, and only then, every entry has a ``worker`` field (the process id that runs it,
what ``kill`` and ``py-spy dump`` need), and the body says which workers answered
(``workers``) and which did not within :data:`~nexus_otel.telemetry.worker_metrics.ASK_TIMEOUT`
(``unanswered``: their executions are left out, the request never waits longer).
A single process has neither, so the shape tells one server from several.

Access is the workflows': with auth middleware (``AuthPlugin``) on the channel, the
caller is verified exactly as for a workflow (401 or 403 alike). The endpoint then
needs the scopes workflows need by default (``AuthPlugin(scopes=...)``), or the ones
given for ``"/executions"`` in ``required_scopes``, and lists only executions of
workflows the caller may run itself. Failures count in ``nexus.auth.failures`` under
``workflow="/executions"``. Inputs are in an entry only when asked for (``?inputs=1``),
and only as the app records them: redacted (``inputs`` is null when it records none).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from opentelemetry.trace import INVALID_SPAN

from ..app import Nexus
from ..caller import Caller
from ..events import WorkflowEvent
from ..execution_middleware import WorkflowCall
from ..middlewares.auth import AuthMiddleware
from ..workflows import Workflow

ENDPOINT = "/executions"
"""The path, and the name auth middleware sees for it (no workflow can have it: names have no ``/``)."""
TOPIC = "executions"
"""What workers ask each other for (:meth:`~nexus_otel.telemetry.worker_metrics.WorkerMetrics.answer`)."""


def answer_peers(nexus: Nexus) -> None:
    """Let the other workers of ``nexus``'s server ask this one for its executions (no-op in one process)."""
    peers = nexus.telemetry.worker_metrics
    if peers is not None:
        peers.answer(TOPIC, lambda question: _local(nexus, question.get("inputs") is True))


def _local(nexus: Nexus, inputs: bool) -> list[dict[str, Any]]:
    return [execution.as_dict(inputs=inputs) for execution in nexus.running()]


def asks_peers(nexus: Nexus) -> bool:
    """True when :func:`gather` asks other workers (it then blocks up to their timeout: run it off the loop)."""
    return nexus.telemetry.worker_metrics is not None


def gather(nexus: Nexus, *, inputs: bool = False) -> dict[str, Any]:
    """The body of ``GET /executions`` before access is applied: this process's executions, and under
    ``serve --workers`` every worker's that answered in time (see the module docstring)."""
    own = _local(nexus, inputs)
    peers = nexus.telemetry.worker_metrics
    if peers is None:
        return {"executions": own}
    answers, unanswered = peers.ask(TOPIC, inputs=inputs)
    entries = [{**entry, "worker": peers.pid} for entry in own]
    for pid, listed in answers.items():
        if isinstance(listed, list):
            entries.extend({**entry, "worker": pid} for entry in listed if isinstance(entry, dict))
    entries.sort(key=_elapsed, reverse=True)
    return {"executions": entries, "workers": sorted([peers.pid, *answers]), "unanswered": unanswered}


def _elapsed(entry: dict[str, Any]) -> float:
    value = entry.get("elapsed_seconds")
    return float(value) if isinstance(value, (int, float)) else 0.0


async def authorize(nexus: Nexus, caller: Caller, channel: str) -> Callable[[str], bool]:
    """Verify ``caller`` as each of ``nexus``'s auth middleware verifies a workflow's caller on ``channel``
    (raising its :class:`~nexus_otel.errors.AccessError`); returns which workflows' executions it may see."""
    granted: list[tuple[AuthMiddleware, frozenset[str]]] = []
    for middleware in nexus.middleware:
        if not isinstance(middleware, AuthMiddleware):
            continue
        call = WorkflowCall(
            workflow=Workflow(name=ENDPOINT, fn=_nothing),
            event=WorkflowEvent(workflow_name=ENDPOINT, workflow_id="", session_id=None, channel=channel,
                                inputs={}, timestamp=time.time()),
            inputs={}, span=INVALID_SPAN, caller=caller,
        )
        await middleware.ahandle(call, _through)
        principal = call.event.principal
        if principal is not None:  # None: this middleware does not guard the channel
            granted.append((middleware, frozenset(principal.scopes)))

    def may_see(workflow: str) -> bool:
        return all(mw.required_scopes.get(workflow, mw.default_scopes) <= scopes for mw, scopes in granted)

    return may_see


def _nothing(inputs: Any) -> None:
    return None


async def _through(call: WorkflowCall) -> None:
    return None
