"""Running a coroutine to completion from synchronous code."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable
from typing import Any


def block_on(awaitable: Awaitable[Any]) -> Any:
    """Run ``awaitable`` to completion and return its result.

    With no event loop running in this thread a private loop runs it here;
    inside a running loop (sync code called from async code) it runs on a
    helper thread so the caller's loop is not re-entered. The current context
    (and so the current span) goes along either way.
    """

    async def main() -> Any:
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    return on_helper_thread(lambda: asyncio.run(main()), "nexus-otel-block-on")


def on_helper_thread(fn: Callable[[], Any], name: str) -> Any:
    """``fn()`` run to completion on a new thread, in a copy of the current context (so the current
    span goes along); its result returned, or its exception raised, here."""
    box: dict[str, Any] = {}
    ctx = contextvars.copy_context()

    def target() -> None:
        try:
            box["result"] = ctx.run(fn)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name=name)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")
