"""A process that runs workflows with webhooks and an audit trail, then dies by SIGKILL.

Run as ``python -m tests.apps.crashing DATA_DIR WEBHOOK_URL COUNT MODE``. It prints
``returned N`` (flushed) as each ``execute_workflow`` returns. MODE ``self`` kills
itself with SIGKILL right after the last one returns (0 ms); ``wait`` prints
``done`` and waits to be killed.
"""

import os
import signal
import sys
import time

from nexus_otel import Nexus
from nexus_otel.plugins import DatabasePlugin, WebhookPlugin


def main() -> None:
    data_dir, url, count, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    app = Nexus("crashing", environ={"NEXUS_OTEL_DATA_DIR": data_dir, "OTEL_TRACES_EXPORTER": "none"})
    app.add_plugin(WebhookPlugin(url, statuses=("completed", "failed"), backoff_base=0.05, backoff_max=0.2,
                                 max_attempts=1000))
    app.add_plugin(DatabasePlugin())
    app.register("ship", lambda inputs: {"shipped": inputs["n"]})
    app.start()
    for n in range(count):
        app.execute_workflow("ship", {"n": n}, session_id=f"s{n}")
        if n == count - 1 and mode == "self":
            os.kill(os.getpid(), signal.SIGKILL)
        sys.stdout.write(f"returned {n}\n")
        sys.stdout.flush()
    sys.stdout.write("done\n")
    sys.stdout.flush()
    time.sleep(60)


if __name__ == "__main__":
    main()
