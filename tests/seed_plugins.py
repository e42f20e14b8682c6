"""The example plugins of Kailash Nexus's plugin API, verbatim but for the import line."""

from nexus_otel.plugins import NexusPlugin


class MyCustomPlugin(NexusPlugin):
    @property
    def name(self):
        return "my_custom_plugin"

    @property
    def description(self):
        return "My custom Nexus plugin"

    @property
    def version(self):
        return "1.0.0"

    def setup(self, nexus_app):
        """Called when plugin is added to Nexus"""
        self.app = nexus_app
        print(f"Setting up {self.name}")

    def teardown(self):
        """Called when Nexus is stopped"""
        print(f"Tearing down {self.name}")


class RequestLoggerPlugin(NexusPlugin):
    @property
    def name(self):
        return "request_logger"

    def setup(self, nexus_app):
        self.app = nexus_app

        # Hook into request lifecycle
        @nexus_app.on_workflow_started
        def log_request(event):
            self.log_request(event)

        @nexus_app.on_workflow_completed
        def log_response(event):
            self.log_response(event)

    def log_request(self, event):
        print(f"[REQUEST] {event.workflow_name} - {event.channel}")
        print(f"  Inputs: {event.inputs}")

    def log_response(self, event):
        print(f"[RESPONSE] {event.workflow_name}")
        print(f"  Duration: {event.duration}s")
        print(f"  Success: {event.result is not None}")


class MetricsPlugin(NexusPlugin):
    @property
    def name(self):
        return "metrics"

    def setup(self, nexus_app):
        self.app = nexus_app
        self.metrics = {
            "requests_total": 0,
            "requests_success": 0,
            "requests_failed": 0,
            "total_duration": 0
        }

        @nexus_app.on_workflow_started
        def count_request(event):
            self.metrics["requests_total"] += 1

        @nexus_app.on_workflow_completed
        def count_success(event):
            self.metrics["requests_success"] += 1
            self.metrics["total_duration"] += event.duration

        @nexus_app.on_workflow_failed
        def count_failure(event):
            self.metrics["requests_failed"] += 1

    def get_metrics(self):
        avg_duration = (
            self.metrics["total_duration"] / self.metrics["requests_success"]
            if self.metrics["requests_success"] > 0
            else 0
        )

        return {
            **self.metrics,
            "avg_duration": avg_duration,
            "success_rate": (
                self.metrics["requests_success"] / self.metrics["requests_total"]
                if self.metrics["requests_total"] > 0
                else 0
            )
        }


class PluginLifecycle(NexusPlugin):
    @property
    def name(self):
        return "lifecycle_demo"

    def __init__(self):
        print("1. Plugin instantiated")

    def setup(self, nexus_app):
        print("2. Plugin setup called")
        self.app = nexus_app

        # Register hooks
        @nexus_app.on_startup
        def on_startup():
            print("3. Nexus started, plugin running")

        @nexus_app.on_shutdown
        def on_shutdown():
            print("5. Nexus shutting down")

    def teardown(self):
        print("6. Plugin teardown called")


class ConfigurablePlugin(NexusPlugin):
    def __init__(self, config=None):
        self.config = config or {}

    @property
    def name(self):
        return "configurable"

    def setup(self, nexus_app):
        self.app = nexus_app

        # Use configuration
        enabled = self.config.get("enabled", True)
        log_level = self.config.get("log_level", "INFO")
        max_retries = self.config.get("max_retries", 3)

        if enabled:
            print(f"Plugin enabled with log_level={log_level}")
