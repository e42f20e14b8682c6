"""An app guarded by API keys for the CLI tests: the key's hash comes from ``GUARDED_API_KEY_HASH``.

Only the ``hash_api_key()`` form is configured, so the plain key never sits
in this module or its environment; ``refund`` requires scope ``orders:write``.
"""

import os

from nexus_otel import Nexus
from nexus_otel.plugins import AuthPlugin


def create_app():
    app = Nexus("guarded")
    app.add_plugin(AuthPlugin(
        strategy="api_key",
        api_keys={"ci": {"hash": os.environ["GUARDED_API_KEY_HASH"], "scopes": ["orders:write"]}},
        required_scopes={"refund": ["orders:write"]},
    ))

    @app.workflow("refund")
    def refund(inputs):
        return {"refunded": inputs.get("order")}

    return app


app = create_app
