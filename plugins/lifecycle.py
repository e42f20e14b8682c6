"""The lifecycle example of Kailash Nexus's plugin API: prints each stage of a plugin's life, in order.

Copy it to see when your own plugin's code runs: instantiate, setup, startup
hooks, workflows, shutdown hooks, teardown.
"""

from nexus_otel.plugins import NexusPlugin


class PluginLifecycle(NexusPlugin):
    @property
    def name(self):
        return "lifecycle_demo"

    @property
    def version(self):
        return "1.0.0"

    def __init__(self):
        print("1. Plugin instantiated")

    def setup(self, nexus_app):
        print("2. Plugin setup called")
        self.app = nexus_app

        @nexus_app.on_startup
        def on_startup():
            print("3. Nexus started, plugin running")

        @nexus_app.on_shutdown
        def on_shutdown():
            print("5. Nexus shutting down")

    def teardown(self):
        print("6. Plugin teardown called")
