"""The lifecycle example of Kailash Nexus's plugin API: logs each stage of a plugin's life, in order.

Copy it to see when your own plugin's code runs: instantiate, setup, startup
hooks, workflows, shutdown hooks, teardown. Kailash Nexus's example prints;
a plugin in a deployment's folder logs (at INFO: ``nexus-otel --log-level INFO``
shows the stages), so the app's own output stays the app's.
"""

import logging

from nexus_otel.plugins import NexusPlugin

log = logging.getLogger("plugins.lifecycle")


class PluginLifecycle(NexusPlugin):
    @property
    def name(self):
        return "lifecycle_demo"

    @property
    def version(self):
        return "1.0.0"

    def __init__(self):
        self.ran = False
        log.info("1. Plugin instantiated")

    def setup(self, nexus_app):
        log.info("2. Plugin setup called")
        self.app = nexus_app

        @nexus_app.on_startup
        def on_startup():
            log.info("3. Nexus started, plugin running")

        @nexus_app.on_workflow_completed
        def on_first_workflow(event):
            if not self.ran:
                self.ran = True
                log.info("4. Workflows run (first: %s); their hooks fire for each", event.workflow_name)

        @nexus_app.on_shutdown
        def on_shutdown():
            log.info("5. Nexus shutting down")

    def teardown(self):
        log.info("6. Plugin teardown called")
