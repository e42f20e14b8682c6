"""Kailash Nexus pieces for tests: imported without their side effect on logging, and a workflow whose node
blocks until released (to catch an execution inside a Kailash node)."""

from __future__ import annotations

import logging
import threading
import warnings
from types import SimpleNamespace
from typing import Any


def import_kailash() -> SimpleNamespace:
    """``PythonCodeNode``, ``WorkflowBuilder``, ``LocalRuntime`` and Kailash Nexus's ``Nexus``, with the root
    logger as it was before (importing ``nexus`` sets it to INFO and adds a handler)."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    from kailash.nodes.code import PythonCodeNode
    from kailash.runtime.local import LocalRuntime
    from kailash.workflow.builder import WorkflowBuilder
    from nexus import Nexus

    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    return SimpleNamespace(PythonCodeNode=PythonCodeNode, WorkflowBuilder=WorkflowBuilder, LocalRuntime=LocalRuntime,
                           Nexus=Nexus)


def blocking_workflow(kailash: SimpleNamespace, release: threading.Event, timeout: float, name: str = "slow") -> Any:
    """A workflow of one node, ``waiter``, that waits for ``release`` (at most ``timeout`` seconds)."""

    def waits(x: int) -> dict:
        release.wait(timeout)
        return {"value": x}

    builder = kailash.WorkflowBuilder()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Kailash prefers node type names; a function node is an instance
        builder.add_node(kailash.PythonCodeNode.from_function(waits, name="waits"), "waiter")
    return builder.build(name=name)
