"""Serving an app over HTTP with uvicorn: in the foreground, on a background thread, or as N worker processes.

With ``workers > 1`` (``nexus-otel serve --workers N``) a supervisor process
binds the port and runs N workers on it (uvicorn's multiprocess supervisor,
which replaces a worker that dies). Each worker imports the app itself from
its ``MODULE:APP`` (an app object cannot cross into a new process), and
learns from ``NEXUS_OTEL_WORKERS`` / ``NEXUS_OTEL_WORKERS_DIR`` that it is one
of several: it gets its own ``service.instance.id`` and its ``/metrics``
answers with every worker's totals, a dead worker's counts included
(:mod:`nexus_otel.telemetry.worker_metrics`). Signals to the supervisor:

- ``SIGTERM`` / ``SIGINT``: every worker stops accepting, finishes its requests
  in flight (up to :data:`DRAIN_TIMEOUT`), then stops its app (records and
  telemetry flushed, up to the app's stop timeout);
- ``SIGHUP``: each worker in turn is replaced by a new one, which serves
  before the old one drains and stops: a rolling restart without dropped requests;
- ``SIGTTIN`` / ``SIGTTOU``: one worker more / fewer.

``X-Forwarded-For`` (and ``X-Forwarded-Proto``) are believed only from the
proxies named in ``forwarded_allow_ips`` (``serve --forwarded-allow-ips``);
by default from nobody, not even loopback (uvicorn's own default trusts
127.0.0.1), so a caller cannot pick the client address that rate limits and
the request log see.

HTTP/1.1 is parsed by uvicorn's httptools protocol (llhttp, in C) wherever
httptools is installed, else by its pure-Python h11 one (``http="h11"`` /
``serve --http h11`` chooses it). Both drain alike when a server stops
(:mod:`nexus_otel.http_protocols`): requests in flight finish, and a
connection accepted but not read yet still gets its request answered.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE  # a worker's exit code that stops its supervisor instead of a restart

from . import settings
from .app import Nexus
from .channels import DEFAULT_THREADS
from .channels.http import create_http_app
from .errors import ConfigurationError, NexusOtelError, ServerError
from .http_protocols import FRESH_GRACE as FRESH_GRACE  # both still importable from here, as before
from .http_protocols import DrainingH11Protocol as DrainingH11Protocol
from .http_protocols import protocol_class
from .telemetry.config import WORKERS, WORKERS_DIR, TelemetryConfig
from .telemetry.worker_metrics import WORKERS_DIR_MAX
from .terminal import InertFormatter

DRAIN_TIMEOUT = 10
"""Seconds a stopping server gives requests in flight to finish before they are cancelled."""


def free_port(host: str = "127.0.0.1", candidates: Sequence[int] | None = None) -> int:
    """A TCP port that was free a moment ago on ``host``, below the kernel's ephemeral range if it can.

    Ports the kernel hands out for port 0 come from the range outgoing connections take theirs
    from, so one may be taken by a connection before the caller binds it; ports below that
    range are only ever taken by a listener. ``candidates``: draw from these instead (a test
    runner gives each of its parallel workers ports of its own). Falls back to the kernel's choice.
    """
    if candidates is None:
        low = _ephemeral_low()
        candidates = range(max(1024, low - 12_000), low)
    rng = random.SystemRandom()
    for _ in range(64):
        port = rng.choice(candidates)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux's ``ip_local_port_range``; IANA's 49152 elsewhere)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 49152


def trusted_proxies(value: str | None) -> list[str]:
    """The addresses and networks ``value`` (comma-separated, or ``*``) names; ``ConfigurationError`` for others.

    uvicorn would take a misspelt address as a literal that never matches, and trust nobody silently.
    """
    hosts = [part.strip() for part in (value or "").split(",") if part.strip()]
    if "*" in hosts:
        return ["*"]
    for host in hosts:
        try:
            if "/" in host:
                ipaddress.ip_network(host, strict=False)
            else:
                ipaddress.ip_address(host)
        except ValueError:
            raise ConfigurationError("forwarded_allow_ips", value, "IP addresses or networks (such as 10.0.0.0/8) "
                                     "of the proxies to trust for X-Forwarded-For, comma-separated, or *") from None
    return hosts


def uvicorn_config(app: Nexus | Any, host: str, port: int, *, threads: int = DEFAULT_THREADS,
                   forwarded_allow_ips: str | None = None, http: str = "auto", **kwargs: object) -> uvicorn.Config:
    """How a :class:`Nexus` (through :func:`create_http_app`), or any ASGI app or factory given as is, is served.

    ``forwarded_allow_ips``: the proxies whose ``X-Forwarded-For`` is believed (see the module doc); none by default.
    ``http``: the HTTP/1.1 protocol, ``"auto"``, ``"httptools"`` or ``"h11"``
    (:func:`~nexus_otel.http_protocols.protocol_class`).
    """
    protocol = protocol_class(http)  # a bad value fails before the app is built
    proxies = trusted_proxies(forwarded_allow_ips)
    asgi = create_http_app(app, threads=threads) if isinstance(app, Nexus) else app
    return uvicorn.Config(
        asgi, host=host, port=port, lifespan="on", proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None,
        log_level=str(kwargs.pop("log_level", "warning")), access_log=False, http=protocol,
        timeout_graceful_shutdown=kwargs.pop("timeout_graceful_shutdown", DRAIN_TIMEOUT),  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port``, or ``OSError`` (say, the port is in use).

    Binding before anything else starts lets a server fail with one clear line, not after the app
    and its plugins announced themselves.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(app: Nexus | str, host: str = "127.0.0.1", port: int = 8000, *, sock: socket.socket | None = None,
          workers: int = 1, threads: int = DEFAULT_THREADS, plugins_dir: str | None = None,
          log_level: str = "warning", forwarded_allow_ips: str | None = None, http: str = "auto") -> int:
    """Serve until interrupted (on ``sock`` if given, from :func:`bind`); the app starts and stops with the server.

    ``app`` is a :class:`Nexus` or its ``"MODULE:APP"``; ``workers > 1`` needs the string (each
    worker process imports it). ``threads`` run sync workflows, per worker. ``forwarded_allow_ips``
    names the proxies trusted for ``X-Forwarded-For`` (none by default); ``http`` the HTTP/1.1
    protocol (``"auto"``: httptools when installed, else h11). Returns the exit
    status: 0, or :data:`STARTUP_FAILURE` when a worker could not start the app.
    """
    settings.number("workers", workers, minimum=1, maximum=1024, integer=True)
    settings.number("threads", threads, minimum=1, maximum=4096, integer=True)
    if workers > 1:
        if not isinstance(app, str):
            raise ConfigurationError("workers", workers, "1 when serving an app object: pass its \"MODULE:APP\" "
                                     "string instead, which each worker process imports")
        return serve_workers(app, workers, host, port, sock=sock, threads=threads, plugins_dir=plugins_dir,
                             log_level=log_level, forwarded_allow_ips=forwarded_allow_ips, http=http)
    trusted_proxies(forwarded_allow_ips)  # a bad value fails before the app is loaded
    protocol_class(http)
    nexus = WorkerApp(app, plugins_dir).load() if isinstance(app, str) else app
    server = uvicorn.Server(uvicorn_config(nexus, host, port, threads=threads, log_level=log_level,
                                           forwarded_allow_ips=forwarded_allow_ips, http=http))
    server.run(sockets=[sock] if sock is not None else None)
    return 0 if server.started else STARTUP_FAILURE


class WorkerApp:
    """What a worker process runs (an ASGI app factory for uvicorn): the app imported from ``target``.

    Picklable, so the supervisor can hand it to each new process. An app that cannot be
    loaded ends the worker with :data:`STARTUP_FAILURE` and one line saying why; the
    supervisor then stops instead of restarting workers that would fail the same way.
    """

    def __init__(self, target: str, plugins_dir: str | None = None, threads: int = DEFAULT_THREADS,
                 log_level: str = "warning") -> None:
        self.target = target
        self.plugins_dir = plugins_dir
        self.threads = threads
        self.log_level = log_level

    def load(self) -> Nexus:
        from .loading import load_app

        app = load_app(self.target)
        if self.plugins_dir:
            for error in app.load_plugins(self.plugins_dir).errors:
                logging.getLogger("nexus_otel").warning("%s", error)
        return app

    def __call__(self) -> object:
        handler = logging.StreamHandler()
        handler.setFormatter(InertFormatter("%(levelname)s %(name)s: %(message)s"))  # log lines quote data
        logging.basicConfig(level=self.log_level.upper(), handlers=[handler])
        try:
            app = self.load()
        except NexusOtelError as exc:
            print(f"error: worker {os.getpid()}: {exc}", file=sys.stderr, flush=True)
            sys.exit(STARTUP_FAILURE)
        except Exception:  # the app's own module failed: its traceback, then no restart loop
            traceback.print_exc()
            print(f"error: worker {os.getpid()}: cannot load {self.target}", file=sys.stderr, flush=True)
            sys.exit(STARTUP_FAILURE)
        return create_http_app(app, threads=self.threads)


def serve_workers(target: str, workers: int, host: str = "127.0.0.1", port: int = 8000, *,
                  sock: socket.socket | None = None, threads: int = DEFAULT_THREADS, plugins_dir: str | None = None,
                  log_level: str = "warning", forwarded_allow_ips: str | None = None, http: str = "auto") -> int:
    """Run ``workers`` processes serving ``target`` on one port until ``SIGTERM``/``SIGINT``; see the module doc."""
    from uvicorn.supervisors import Multiprocess

    TelemetryConfig.from_env()  # a bad variable: one error here, not one per worker
    trusted_proxies(forwarded_allow_ips)
    protocol_class(http)
    sock = sock if sock is not None else bind(host, port)
    directory = tempfile.mkdtemp(prefix="nexus-otel-workers-")
    if len(directory) > WORKERS_DIR_MAX:  # each worker's Unix socket is named after it
        shutil.rmtree(directory, ignore_errors=True)
        raise ConfigurationError("TMPDIR", tempfile.gettempdir(),
                                 f"a directory whose path is short enough for Unix socket names (under "
                                 f"{WORKERS_DIR_MAX - 28} characters): the workers' sockets are made there")
    settings = {WORKERS: str(workers), WORKERS_DIR: directory}
    previous = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)  # each worker is a new process that inherits the environment
    try:
        config = uvicorn_config(WorkerApp(target, plugins_dir, threads, log_level), host, port, factory=True,
                                workers=workers, log_level=log_level, forwarded_allow_ips=forwarded_allow_ips,
                                http=http)
        supervisor = Multiprocess(config, sockets=[sock])
        supervisor.run()
        failed = any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes)
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(directory, ignore_errors=True)
    return STARTUP_FAILURE if failed else 0


class BackgroundServer:
    """A uvicorn server on a thread, for demos and tests: ``with BackgroundServer(app) as url: ...``.

    ``app`` is a :class:`Nexus`, or any ASGI app (a Kailash Nexus app's ``fastapi_app``, say);
    ``http`` the HTTP/1.1 protocol, as :func:`uvicorn_config` takes it.
    """

    def __init__(self, app: Nexus | Any, host: str = "127.0.0.1", port: int | None = None, *,
                 forwarded_allow_ips: str | None = None, http: str = "auto") -> None:
        self.host = host
        self.port = port or free_port(host)
        self.server = uvicorn.Server(uvicorn_config(app, self.host, self.port,
                                                    forwarded_allow_ips=forwarded_allow_ips, http=http))
        self.thread = threading.Thread(target=self.server.run, name="nexus-otel-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise ServerError(f"HTTP server did not start on {self.url}")
            time.sleep(0.01)
        return self.url

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
