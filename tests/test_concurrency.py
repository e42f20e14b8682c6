"""Concurrent executions keep their traces apart: no context leaks between threads or tasks."""

import asyncio
import random
import time
from concurrent.futures import ThreadPoolExecutor

from nexus_otel import NexusPlugin


class Tagger(NexusPlugin):
    """Hooks that record which workflow id they saw, to cross-check with their span's trace."""

    name = "tagger"

    def __init__(self):
        self.seen = {}

    def setup(self, nexus_app):
        @nexus_app.on_workflow_started
        def started(event):
            time.sleep(random.random() / 1000)
            self.seen.setdefault(event.workflow_id, []).append(event.trace_id)

        @nexus_app.on_workflow_completed
        async def completed(event):
            await asyncio.sleep(random.random() / 1000)
            self.seen[event.workflow_id].append(event.trace_id)


def _check_traces(capture, n, workflows=("work",)):
    """``n`` traces, each one workflow span (of one of ``workflows``) with its two hook spans as children."""
    traces = capture.traces()
    assert len(traces) == n
    for spans in traces.values():
        (wf,) = [s for s in spans if s.name.startswith("workflow ")]
        assert wf.name in {f"workflow {w}" for w in workflows}
        names = sorted(s.name for s in spans)
        assert names == sorted(["hook workflow_completed tagger", "hook workflow_started tagger", wf.name])
        assert wf.parent is None
        for hook in spans:
            if hook is not wf:
                assert hook.parent.span_id == wf.context.span_id
    ids = {s.attributes["nexus.workflow.id"] for w in workflows for s in capture.spans_named(f"workflow {w}")}
    assert len(ids) == n


def _app(capture):
    app = capture.app()
    plugin = Tagger()
    app.add_plugin(plugin)

    @app.workflow("work")
    def work(inputs):
        time.sleep(random.random() / 500)
        return inputs["i"]

    return app, plugin


def test_hundred_threads_give_hundred_separate_traces(capture):
    """100 executions on 16 threads: 100 traces, each with its own two hook spans."""
    app, plugin = _app(capture)
    capture.clear()
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: app.execute_workflow("work", {"i": i}), range(100)))
    assert results == list(range(100))
    _check_traces(capture, 100)
    assert len(plugin.seen) == 100
    assert all(len(set(tids)) == 1 and len(tids) == 2 for tids in plugin.seen.values())


def test_hundred_asyncio_tasks_give_hundred_separate_traces(capture):
    """100 concurrent aexecute_workflow tasks, half a sync workflow and half an async one: 100 traces, no span
    parented across tasks."""
    app, plugin = _app(capture)
    ran = []

    @app.workflow("awork")
    async def awork(inputs):
        await asyncio.sleep(random.random() / 500)
        ran.append(inputs["i"])
        return inputs["i"]

    capture.clear()

    async def main():
        return await asyncio.gather(*(app.aexecute_workflow("awork" if i % 2 else "work", {"i": i})
                                      for i in range(100)))

    assert asyncio.run(main()) == list(range(100))
    assert sorted(ran) == list(range(1, 100, 2)), "the async workflow ran for every odd i"
    _check_traces(capture, 100, ("work", "awork"))
    assert len(capture.spans_named("workflow awork")) == len(capture.spans_named("workflow work")) == 50
    assert len(plugin.seen) == 100
    assert all(len(set(tids)) == 1 and len(tids) == 2 for tids in plugin.seen.values())


def test_async_workflow_concurrency_keeps_traces_apart(capture):
    """100 interleaved async workflows on one loop: each trace holds exactly its own spans."""
    app = capture.app()

    @app.on_workflow_started
    async def started(event):
        await asyncio.sleep(0)

    @app.workflow("aw")
    async def aw(inputs):
        await asyncio.sleep(random.random() / 200)
        return inputs["i"] * 2

    capture.clear()

    async def main():
        return await asyncio.gather(*(app.aexecute_workflow("aw", {"i": i}) for i in range(100)))

    assert asyncio.run(main()) == [i * 2 for i in range(100)]
    traces = capture.traces()
    assert len(traces) == 100
    for spans in traces.values():
        assert sorted(s.name for s in spans) == ["hook workflow_started app", "workflow aw"]
