"""A user's app: three workflows and a plugin with three hooks."""

from nexus_otel import Nexus, NexusPlugin


class Audit(NexusPlugin):
    """Three hooks around every workflow."""

    name = "audit"
    version = "1.2.0"

    def setup(self, nexus_app):
        nexus_app.on_workflow_started(lambda event: None)
        nexus_app.on_workflow_completed(lambda event: None)
        nexus_app.on_workflow_failed(lambda event: None)
        nexus_app.on_workflow_completed(lambda event: None)


def create_app():
    app = Nexus("shop")
    app.add_plugin(Audit())

    @app.workflow("order")
    def order(inputs):
        """Place an order."""
        return {"ordered": inputs.get("sku"), "qty": inputs.get("qty", 1)}

    @app.workflow("explode")
    def explode(inputs):
        """Always fails, with a secret in its message."""
        raise RuntimeError("database password is hunter2")

    return app


app = create_app
