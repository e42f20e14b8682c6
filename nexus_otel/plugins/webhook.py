"""``WebhookPlugin``: Kailash Nexus's webhook example, off the workflow's thread and durable.

Kailash Nexus's example posted synchronously inside the workflow hook, so a
slow receiver slowed every workflow and a failed post was lost. Here a
:class:`~nexus_otel.exporters.webhook.WebhookExporter` is one of the app's
record processors: every execution (whatever the trace sampling) has its
payload written to a durable outbox before the caller gets the result;
workflows never wait on the network; a worker delivers each payload or, after
the retry limit, dead-letters it (``dead_letters()``, ``replay()``; or
``nexus-otel webhooks`` on the command line). Redirects are not followed: a 3xx
answer, like a 4xx, is a failed delivery and a dead letter at once. The URLs
may hold credentials (``https://user:PASSWORD@host/hook?api_key=...``): logs and
errors show them masked (:func:`nexus_otel.urls.mask_url`).

Webhooks go through the forward proxy that ``HTTP_PROXY`` / ``HTTPS_PROXY`` name,
but to the hosts ``NO_PROXY`` lists, as curl, requests and httpx do (``proxy=``
overrides that: :mod:`nexus_otel.exporters.proxies`); ``ca_file=`` and
``client_cert=`` / ``client_key=`` set the CA bundle and the client certificate
for ``https`` receivers (:mod:`nexus_otel.exporters.tls`; ``docs/records.md``,
"Proxies and TLS").

Each attempt sent is a span of its own (``POST``, a CLIENT span in a trace of
its own, linked to the execution's workflow span; the request carries its
``traceparent``) made through the app's tracer provider, so its sampling,
redaction and exporters apply: ``NEXUS_OTEL_DELIVERY_SPANS=false`` (or
``Nexus(delivery_spans=False)``) turns them off (:mod:`nexus_otel.exporters.delivery_spans`,
``docs/records.md``, "Delivery spans").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import settings
from ..errors import ConfigurationError, PluginNotSetUpError
from ..exporters.delivery_spans import SCRUBBED
from ..exporters.gate import MIN_RATE
from ..exporters.outbox_exporter import ON_UNAVAILABLE
from ..exporters.proxies import ProxyRoutes
from ..exporters.request_head import check_headers, check_url
from ..exporters.tls import client_context
from ..exporters.webhook import WebhookExporter, reserved_headers
from ..outbox import WEBHOOK_SCOPE, Message, OutboxView, RetryPolicy, default_outbox_path, open_outbox
from ..plugin_base import NexusPlugin
from ..telemetry import contract

log = logging.getLogger("nexus_otel.webhooks")
STATUSES = ("completed", "failed", "rejected")
LEGACY_OUTBOX = "webhook-outbox.sqlite"
"""The data directory's webhook outbox before the built-in sinks shared ``outbox.sqlite``."""


def _check_url(setting: str, url: Any) -> str:
    """``url`` as given, once the request head's rules accept it (the error shows it with credentials masked)."""
    check_url(setting, url)
    return url


class WebhookPlugin(NexusPlugin):
    """Posts a signed JSON payload for each finished workflow to one or more URLs.

    Proxies and TLS: ``proxy`` is None (the default: ``HTTP_PROXY``, ``HTTPS_PROXY``,
    ``ALL_PROXY`` and ``NO_PROXY`` from the environment), an ``http://`` proxy URL for
    every receiver (credentials in it become ``Proxy-Authorization``), or False (never a
    proxy). ``ca_file`` is a PEM CA bundle trusted instead of the system's
    (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` apply without it); ``client_cert`` (PEM, with the
    key unless ``client_key`` names the key's PEM file) is presented to receivers that
    require mutual TLS. Bad values and unreadable files fail at setup, naming the setting.

    ``headers``: extra headers sent with every payload (``{"Authorization": "Bearer ..."}``).
    Checked at setup as h11 and RFC 9110 say (token names; visible-ASCII values without line
    breaks, control characters or whitespace at either end; each name once); ``Host``,
    ``Content-Length``, ``Transfer-Encoding`` and the signature's ``webhook-id``,
    ``webhook-timestamp``, ``webhook-signature`` are refused (nexus-otel writes those), and so are
    ``traceparent`` and ``tracestate`` while delivery spans are on (each attempt sends its own). A
    ``Content-Type``, ``User-Agent``, ``Accept`` or ``Authorization`` replaces the default (an
    ``Authorization`` the URL's credentials would give, too). Errors name a header, never show its value.
    """

    name = "webhook"
    version = "1.0.0"

    def __init__(self, webhook_url: str | Sequence[str], *, secret: str | None = None,
                 workflows: Any = None, statuses: Sequence[str] = ("completed",),
                 outbox_path: str | os.PathLike[str] | None = None, max_attempts: int = 8,
                 backoff_base: float = 0.5, backoff_max: float = 300.0, timeout: float = 5.0,
                 max_in_flight: int = 128, on_unavailable: str = "fail", proxy: str | bool | None = None,
                 ca_file: str | os.PathLike[str] | None = None, client_cert: str | os.PathLike[str] | None = None,
                 client_key: str | os.PathLike[str] | None = None, connect_timeout: float = 5.0,
                 max_rate: float | None = None, headers: Mapping[str, str] | None = None) -> None:
        self.webhook_url = webhook_url
        self.headers = headers
        """Extra headers for every payload (checked at setup; see the class's docstring)."""
        self.connect_timeout = connect_timeout
        """Seconds a receiver may take to accept a connection (apart from ``timeout``, for its answer)."""
        self.max_rate = max_rate
        """Deliveries per second at most, to each URL (for receivers that publish a rate limit), at least
        ``MIN_RATE``; None: no limit."""
        self.secret = secret
        self.workflows = workflows
        self.statuses = statuses
        self.outbox_path = outbox_path
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.on_unavailable = on_unavailable
        """``"fail"`` (default): an execution whose payload cannot be written to the outbox (a full
        disk) fails with RecordsUnavailableError; ``"drop"``: it goes on, its payload lost (docs/records.md)."""
        self.proxy = proxy
        """None: the environment's proxies; an ``http://`` proxy URL for every receiver; False: none."""
        self.ca_file = ca_file
        """A PEM CA bundle for ``https`` receivers, trusted instead of the system's."""
        self.client_cert = client_cert
        """A PEM client certificate (with its key, unless ``client_key``) for receivers requiring mutual TLS."""
        self.client_key = client_key
        """The client certificate's private key (PEM, unencrypted), when not in ``client_cert``'s file."""
        self.exporter: WebhookExporter | None = None
        self._outbox_file: Path | str | None = None
        self._app: Any = None

    def setup(self, nexus_app: Any) -> None:
        urls = [self.webhook_url] if isinstance(self.webhook_url, str) else list(self.webhook_url or [])
        if not urls:
            raise ConfigurationError("WebhookPlugin.webhook_url", self.webhook_url, "a URL or a list of URLs")
        urls = [_check_url("WebhookPlugin.webhook_url", u) for u in urls]
        telemetry = nexus_app.telemetry
        # Each attempt's span, through the app's provider (its sampling, redaction and exporters): on by default.
        tracer = telemetry.delivery_tracer(contract.DELIVERY_TRACER, scrubbed=SCRUBBED)
        headers = check_headers("WebhookPlugin.headers", self.headers, reserved=reserved_headers(tracer is not None))
        statuses = self.statuses
        if isinstance(statuses, str) or not statuses:
            raise ConfigurationError("WebhookPlugin.statuses", statuses,
                                     'a list drawn from "completed", "failed", "rejected"')
        for status in statuses:
            settings.choice("WebhookPlugin.statuses", status, STATUSES)
        if self.secret is not None and not isinstance(self.secret, str):
            raise ConfigurationError("WebhookPlugin.secret", "<hidden>", "a Standard Webhooks secret string")
        if self.secret:
            from standardwebhooks.webhooks import Webhook

            try:
                Webhook(self.secret)
            except Exception:
                raise ConfigurationError("WebhookPlugin.secret", "<hidden>",
                                         "a base64 secret, optionally prefixed whsec_") from None
        else:
            log.warning("WebhookPlugin: no secret set; payloads are sent unsigned")
        policy = RetryPolicy(
            max_attempts=int(settings.number("WebhookPlugin.max_attempts", self.max_attempts, minimum=1,
                                             integer=True)),
            base=float(settings.number("WebhookPlugin.backoff_base", self.backoff_base, strictly_positive=True)),
            cap=float(settings.number("WebhookPlugin.backoff_max", self.backoff_max, strictly_positive=True)),
        )
        timeout = float(settings.number("WebhookPlugin.timeout", self.timeout, strictly_positive=True,
                                        maximum=300))
        max_in_flight = int(settings.number("WebhookPlugin.max_in_flight", self.max_in_flight, minimum=1,
                                            maximum=1024, integer=True))
        on_unavailable = settings.choice("WebhookPlugin.on_unavailable", self.on_unavailable, ON_UNAVAILABLE)
        connect_timeout = float(settings.number("WebhookPlugin.connect_timeout", self.connect_timeout,
                                                strictly_positive=True, maximum=300))
        max_rate = None if self.max_rate is None else float(
            settings.number("WebhookPlugin.max_rate", self.max_rate, minimum=MIN_RATE))
        # Checked here, so a bad proxy URL or certificate file fails the start, naming the setting.
        routes = ProxyRoutes(self.proxy, setting="WebhookPlugin.proxy")
        tls = client_context(ca_file=self.ca_file, client_cert=self.client_cert, client_key=self.client_key,
                             owner="WebhookPlugin")
        path = Path(self.outbox_path) if self.outbox_path else default_outbox_path(
            nexus_app.telemetry.config.data_dir, LEGACY_OUTBOX)
        self._outbox_file = nexus_app.records.shared_outbox or path  # what to open again after teardown
        self.exporter = WebhookExporter(
            urls, nexus_app.records.outbox(path), secret=self.secret,
            workflows=settings.names("WebhookPlugin.workflows", self.workflows),
            statuses=frozenset(s.lower() for s in statuses), policy=policy, timeout=timeout,
            meter=telemetry.meter if telemetry.enabled else None, max_in_flight=max_in_flight,
            on_unavailable=on_unavailable, connect_timeout=connect_timeout, max_rate=max_rate,
            proxy=routes, tls=tls, headers=headers,  # built and checked above: not built again
            tracer=tracer, propagate="tracecontext" in telemetry.config.propagators, redactor=telemetry.redactor,
            lease=telemetry.config.outbox_lease,
        )
        self._app = nexus_app
        nexus_app.records.add(self.exporter)

    @property
    def outbox(self) -> OutboxView:
        """The live outbox while running; a fresh handle on the same file after teardown."""
        if self.exporter is not None and self._app is not None:
            return self.exporter.outbox
        if self._outbox_file is None:
            raise PluginNotSetUpError(self.name, "WebhookPlugin is not set up: add it to an app first")
        return open_outbox(self._outbox_file).view(WEBHOOK_SCOPE)

    def dead_letters(self) -> list[Message]:
        """Payloads given up on, with their last error."""
        return self.outbox.dead_letters()

    def replay(self, ids: Sequence[int] | None = None) -> int:
        """Queue dead letters (all, or by id) for delivery again; returns how many."""
        count = self.outbox.replay(ids)
        if self.exporter is not None and self._app is not None:
            self.exporter.worker.notify()
        return count

    def stats(self) -> dict[str, int]:
        """Deliveries so far in this process, and what waits in the outbox."""
        if self.exporter is None:
            return {}
        return {**self.exporter.counts, **{f"outbox_{k}": v for k, v in self.outbox.counts().items()}}

    def teardown(self) -> None:
        if self._app is not None and self.exporter is not None:
            # Stops the worker within the app's shutdown deadline; undelivered payloads stay on disk.
            self._app.records.remove(self.exporter)
            self._app = None
