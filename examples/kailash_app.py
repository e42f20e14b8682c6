"""A Kailash Nexus app made observable with nexus-otel (``pip install -e ".[kailash]"``).

Run it, call it, read the trace::

    .venv/bin/python examples/kailash_app.py &
    curl -s -X POST 127.0.0.1:8000/workflows/double_then_add/execute \\
         -H 'content-type: application/json' -d '{"inputs": {"x": 20}}'
    .venv/bin/nexus-otel traces

Each execution is a ``workflow double_then_add`` span with a ``node double``
and a ``node add_one`` span under it, counted on ``/metrics``
(``nexus_workflow_executions_total``) and logged by ``RequestLoggerPlugin``.
Set ``OTEL_EXPORTER_OTLP_ENDPOINT`` to send the spans to a Collector instead
of the local store. ``PORT`` changes the port (default 8000).
"""

import os

import uvicorn
from kailash.workflow.builder import WorkflowBuilder
from nexus import Nexus

from nexus_otel.kailash import NexusOtel
from nexus_otel.plugins import RequestLoggerPlugin

workflow = WorkflowBuilder()
workflow.add_node("PythonCodeNode", "double", {"code": "result = {'value': x * 2}"})
workflow.add_node("PythonCodeNode", "add_one", {"code": "result = {'value': v + 1}"})
workflow.add_connection("double", "result.value", "add_one", "v")

app = Nexus(enable_durability=False)
app.add_plugin(NexusOtel(plugins=[RequestLoggerPlugin()], service_name="kailash-example"))  # the telemetry
app.register("double_then_add", workflow)

if __name__ == "__main__":
    # app.start() would serve on 0.0.0.0; this serves Nexus's own FastAPI app on loopback only.
    uvicorn.run(app.fastapi_app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")), log_level="warning")
