"""Execution middleware runs inside the workflow span, on the sync and async paths alike."""

import asyncio
import threading

import pytest

from nexus_otel import Middleware, NexusPlugin


class Memo(Middleware):
    """A tiny cache: a hit returns early, and marks the span."""

    def __init__(self):
        self.store = {}

    def handle(self, call, call_next):
        key = (call.name, tuple(sorted(call.inputs.items())))
        if key in self.store:
            call.set_attribute("nexus.cache.hit", True)
            return self.store[key]
        call.set_attribute("nexus.cache.hit", False)
        result = call_next(call)
        self.store[key] = result
        return result


def test_short_circuit_still_makes_a_span_and_runs_hooks(capture):
    """A middleware that returns early: function not run, span and completed hook still there."""
    app = capture.app()
    runs, completed = [], []
    app.use(Memo())
    app.on_workflow_completed(lambda e: completed.append(e.result))

    @app.workflow("double")
    def double(inputs):
        runs.append(1)
        return inputs["x"] * 2

    assert app.execute_workflow("double", {"x": 2}) == 4
    assert app.execute_workflow("double", {"x": 2}) == 4
    assert len(runs) == 1
    assert completed == [4, 4]
    hits = [s.attributes["nexus.cache.hit"] for s in capture.spans_named("workflow double")]
    assert hits == [False, True]


def test_middleware_order_and_input_rewrite(capture):
    """First added is outermost; a middleware may replace the inputs the function sees."""
    app = capture.app()
    order = []

    def outer(call, call_next):
        order.append("outer")
        return call_next(call)

    def inner(call, call_next):
        order.append("inner")
        call.inputs = {**call.inputs, "added": True}
        return call_next(call)

    app.use(outer)
    app.use(inner)
    app.register("w", lambda inputs: inputs)
    assert app.execute_workflow("w", {"a": 1}) == {"a": 1, "added": True}
    assert order == ["outer", "inner"]


def test_middleware_rejection_is_a_workflow_failure(capture):
    """A middleware that raises fails the workflow: error span and failed hooks, function not run."""
    app = capture.app()
    failed = []

    class Deny(Middleware):
        def handle(self, call, call_next):
            raise PermissionError("no entry")

    app.use(Deny())
    app.on_workflow_failed(lambda e: failed.append(type(e.error).__name__))
    app.register("w", lambda inputs: pytest.fail("must not run"))
    with pytest.raises(PermissionError):
        app.execute_workflow("w")
    assert failed == ["PermissionError"]
    assert capture.span("workflow w").attributes["error.type"] == "PermissionError"


def test_sync_middleware_on_the_async_path_is_bridged(capture):
    """A sync-only middleware works for aexecute_workflow (run on a worker thread)."""
    app = capture.app()
    memo = Memo()
    app.use(memo)
    loop_thread = []

    @app.workflow("aw")
    async def aw(inputs):
        loop_thread.append(threading.get_ident())
        return inputs["x"] + 1

    async def main():
        first = await app.aexecute_workflow("aw", {"x": 1})
        second = await app.aexecute_workflow("aw", {"x": 1})
        return first, second, threading.get_ident()

    first, second, main_thread = asyncio.run(main())
    assert (first, second) == (2, 2)
    assert loop_thread == [main_thread]  # the async workflow ran on the loop, once
    spans = capture.spans_named("workflow aw")
    assert [s.attributes["nexus.cache.hit"] for s in spans] == [False, True]


def test_async_middleware_on_the_sync_path_is_bridged(capture):
    """An async-only middleware works for execute_workflow (run on a private loop)."""
    app = capture.app()
    seen = []

    class Tracker(Middleware):
        async def ahandle(self, call, call_next):
            await asyncio.sleep(0)
            seen.append(call.name)
            return await call_next(call)

    app.use(Tracker())
    app.register("w", lambda inputs: "done")
    assert app.execute_workflow("w") == "done"
    assert asyncio.run(app.aexecute_workflow("w")) == "done"
    assert seen == ["w", "w"]


def test_plugin_adds_middleware_and_unregister_removes_it(capture):
    """Middleware added in a plugin's setup belongs to it and leaves with it."""
    app = capture.app()

    class Upper(NexusPlugin):
        name = "upper"

        def setup(self, nexus_app):
            nexus_app.use(lambda call, call_next: call_next(call).upper())

    app.register("w", lambda inputs: "quiet")
    app.add_plugin(Upper())
    assert app.execute_workflow("w") == "QUIET"
    app.plugins.unregister("upper")
    assert app.execute_workflow("w") == "quiet"


def test_async_app_runs_sync_workflows_off_the_loop(capture):
    """aexecute_workflow of a sync workflow runs it on a worker thread, inside the workflow span."""
    app = capture.app()
    from opentelemetry import trace

    @app.workflow("sync")
    def sync(inputs):
        return threading.get_ident(), trace.get_current_span().get_span_context().span_id

    async def main():
        return await app.aexecute_workflow("sync"), threading.get_ident()

    (worker, span_id), loop_thread = asyncio.run(main())
    assert worker != loop_thread
    assert span_id == capture.span("workflow sync").context.span_id
