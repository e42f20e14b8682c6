"""Exact ``/metrics`` across the worker processes of one server (``nexus-otel serve --workers N``).

Each worker process has its own SDK and counts only what it ran, and the kernel
hands a scrape to any one of them. So every worker also answers its peers: it
listens on a Unix socket in the directory the workers share
(``NEXUS_OTEL_WORKERS_DIR``) and sends its current samples to whoever
connects. The worker serving a scrape asks every peer, adds its own samples,
and merges them the way Prometheus' client_python multiprocess mode merges
its own metrics:

- counters, histograms and summaries: summed per series;
- gauges from up-down counters (executions in flight): summed;
- gauges that read a state the workers share (a webhook outbox's depth,
  :class:`~nexus_otel.telemetry.prometheus.ReadingFamily`): the largest reading;
- ``target_info``: one series, the workers' resource without
  ``service.instance.id`` (which differs per worker; OTLP carries it per worker).

Counters never go backwards when a worker is replaced (``SIGHUP``) or dies,
even killed outright (``SIGKILL``): a worker's hot-path series (executions,
their durations, hooks, plugin errors, HTTP requests) are stored in
``<pid>.counts`` at every measurement (:mod:`nexus_otel.telemetry.shared_counts`),
so a dead worker's file holds every request it counted, and never less than
it answered a scrape with. Its other counters (telemetry about telemetry, an
app's own instruments) are in ``<pid>.json``, written as it stops and every
few seconds while it runs: a worker killed outright loses at most those
seconds of them. The totals keep a gone worker's counters, not its gauges.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import orjson
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Exemplar, Sample

from ..errors import ConfigurationError
from .metrics_hub import MetricsHub
from .prometheus import ReadingFamily
from .shared_counts import CountsFile, read_counts

log = logging.getLogger("nexus_otel.metrics")

REFRESH_SECONDS = 5.0
"""How often a running worker rewrites its ``.json`` file (what a worker killed outright can lose of the
counters that are not in its ``.counts`` file)."""
PEER_TIMEOUT = 3.0
"""Seconds a scrape waits for one peer's samples before using its file instead."""
INSTANCE_LABEL = "service_instance_id"
_SUM, _MAX, _INFO = "sum", "max", "info"
_CUMULATIVE = ("counter", "histogram", "summary", "gaugehistogram")
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS
WORKERS_DIR_MAX = _SOCKET_PATH_MAX - len("/4194304.sock")
"""The longest shared directory path whose sockets (``<pid>.sock``) still have valid names."""


class Collectable(Protocol):
    def collect(self) -> Iterable[Metric]: ...


def encode(families: Iterable[Metric]) -> bytes:
    """Families as the bytes a worker sends its peers (and writes to its file)."""
    return orjson.dumps(as_dicts(families))


def as_dicts(families: Iterable[Metric]) -> list[dict[str, Any]]:
    """Families in the form :func:`merge` takes (what :func:`decode` gives back from :func:`encode`)."""
    out = []
    for f in families:
        merge = _INFO if f.type == "info" else _MAX if isinstance(f, ReadingFamily) or f.type == "stateset" else _SUM
        samples = [[s.name, s.labels, s.value, s.timestamp,
                    None if s.exemplar is None else [s.exemplar.labels, s.exemplar.value, s.exemplar.timestamp]]
                   for s in f.samples]
        out.append({"n": f.name, "d": f.documentation, "t": f.type, "u": f.unit, "m": merge, "s": samples})
    return out


def decode(data: bytes) -> list[dict[str, Any]]:
    value = orjson.loads(data)
    if not isinstance(value, list):
        raise ValueError("worker metrics: expected a list of families")
    return value


def merge(workers: list[list[dict[str, Any]]]) -> list[Metric]:
    """The families of several workers as one set (see the module docstring for how each kind adds up)."""
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], list[Any]]] = {}
    modes: dict[str, str] = {}
    info_sets: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], Sample]] = {}
    for families in workers:
        for f in families:
            name, mode = f["n"], f["m"]
            if name not in merged:
                merged[name] = Metric(name, f["d"], f["t"], f["u"] if f["u"] and name.endswith("_" + f["u"]) else "")
                values[name] = {}
                modes[name] = mode
                info_sets[name] = {}
            if mode == _INFO:  # the same for every worker but its instance id: one series
                for sample_name, labels, *_ in f["s"]:
                    labels = {k: v for k, v in labels.items() if k != INSTANCE_LABEL}
                    info_sets[name][(sample_name, tuple(sorted(labels.items())))] = Sample(sample_name, labels, 1.0)
                continue
            series = values[name]
            for sample_name, labels, value, timestamp, exemplar in f["s"]:
                key = (sample_name, tuple(sorted(labels.items())))
                seen = series.get(key)
                if seen is None:
                    series[key] = [sample_name, labels, value, timestamp, exemplar]
                    continue
                if mode == _MAX or sample_name.endswith("_created"):
                    seen[2] = max(seen[2], value) if mode == _MAX else min(seen[2], value)
                else:
                    seen[2] += value
                if exemplar is not None and (seen[4] is None or (exemplar[2] or 0) >= (seen[4][2] or 0)):
                    seen[4] = exemplar
    out = []
    for name, family in merged.items():
        if modes[name] == _INFO:
            family.samples = list(info_sets[name].values())
        else:
            family.samples = [
                Sample(n, labels, value, timestamp, None if ex is None else Exemplar(ex[0], ex[1], ex[2]))
                for n, labels, value, timestamp, ex in values[name].values()
            ]
        out.append(family)
    return out


def counters_only(families: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a gone worker still adds to the totals: its cumulative families."""
    return [f for f in families if f["t"] in _CUMULATIVE or f["m"] == _INFO]


def overlay(snapshot: list[dict[str, Any]], exact: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``snapshot``'s families with every sample ``exact`` also has taken from ``exact`` (one worker's
    periodic snapshot, corrected by the values its counts file holds)."""
    by_name = {f["n"]: f for f in exact}
    out = []
    for f in snapshot:
        newer = by_name.pop(f["n"], None)
        if newer is None:
            out.append(f)
            continue
        keys = {(s[0], tuple(sorted(s[1].items()))) for s in newer["s"]}
        kept = [s for s in f["s"] if (s[0], tuple(sorted(s[1].items()))) not in keys]
        out.append({**f, "s": kept + newer["s"]})
    return out + list(by_name.values())


class WorkerMetrics:
    """This worker's side of the exchange: answers peers, writes its files, merges a scrape.

    ``local`` is what this worker would expose alone (the app's Prometheus registry); ``hub``, the
    app's metrics hub, is told to keep its hot-path series in this worker's counts file (give it
    before the hub's bound metrics are made), and turns a dead peer's counts file into families.
    Call :meth:`start` once, :meth:`close` when the worker's telemetry has flushed.
    """

    def __init__(self, directory: str | os.PathLike[str], local: Collectable, *, hub: MetricsHub | None = None,
                 refresh: float = REFRESH_SECONDS, peer_timeout: float = PEER_TIMEOUT) -> None:
        self.directory = Path(directory)
        self.local = local
        self.refresh = refresh
        self.peer_timeout = peer_timeout
        self.pid = os.getpid()
        self.socket_path = self.directory / f"{self.pid}.sock"
        self.file = self.directory / f"{self.pid}.json"
        self.hub = hub
        self._retired = False
        self._retire_lock = threading.Lock()
        self.counts = CountsFile(self.directory / f"{self.pid}.counts", before_open=self._retire_previous)
        if hub is not None and not hub.share_counts(self.counts):
            log.warning("worker metrics: the metrics hub's instruments were made before this worker's counts "
                        "file: a kill loses up to %s s of this worker's counts", refresh)
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._file_lock = threading.Lock()

    def start(self) -> WorkerMetrics:
        if len(str(self.directory)) > WORKERS_DIR_MAX:
            raise ConfigurationError("NEXUS_OTEL_WORKERS_DIR", str(self.directory),
                                     f"a path short enough for Unix socket names (at most {WORKERS_DIR_MAX} "
                                     "characters)")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._retire_previous()
        self.socket_path.unlink(missing_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(self.socket_path))
        server.listen(16)
        server.settimeout(self.refresh)
        self._server = server
        self._thread = threading.Thread(target=self._serve, name="nexus-otel-worker-metrics", daemon=True)
        self._thread.start()
        return self

    def _retire_previous(self) -> None:
        """Move aside the files a dead worker with this process id left (the kernel reuses ids), so that its
        counts stay in the totals under a name no live worker has."""
        with self._retire_lock:
            if self._retired:
                return
            self._retired = True
            tag = uuid.uuid4().hex[:8]
            for suffix in (".counts", ".json"):
                try:
                    (self.directory / f"{self.pid}{suffix}").rename(self.directory / f"{self.pid}-{tag}{suffix}")
                except FileNotFoundError:
                    pass

    def _samples(self) -> bytes:
        return encode(self.local.collect())

    def _serve(self) -> None:
        server = self._server
        assert server is not None
        written = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - written >= self.refresh:  # also when peers keep asking
                self._write_file()
                written = time.monotonic()
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by close()
                break
            with conn:
                try:
                    conn.settimeout(self.peer_timeout)
                    conn.sendall(self._samples())
                except Exception as exc:  # a peer that went away, or a collection that failed
                    log.debug("worker metrics: could not answer a peer: %s", exc)

    def _write_file(self) -> None:
        try:
            with self._file_lock:
                tmp = self.file.with_suffix(".tmp")
                tmp.write_bytes(self._samples())
                os.replace(tmp, self.file)
        except Exception as exc:
            log.warning("worker metrics: cannot write %s: %s", self.file, exc)

    def _peer(self, pid: str) -> list[dict[str, Any]]:
        """A peer's current families; a peer that does not answer counts with what its file says."""
        path = self.directory / f"{pid}.sock"
        if path.exists():
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                    conn.settimeout(self.peer_timeout)
                    conn.connect(str(path))
                    chunks = []
                    while chunk := conn.recv(1 << 16):
                        chunks.append(chunk)
                return decode(b"".join(chunks))
            except (ConnectionRefusedError, FileNotFoundError):
                path.unlink(missing_ok=True)  # a worker that died without closing: its files have its counts
            except (OSError, ValueError) as exc:
                log.warning("worker metrics: worker %s did not answer (%s); using its last written counts",
                            pid, exc)
        return self._gone(pid)

    def _gone(self, pid: str) -> list[dict[str, Any]]:
        """What a worker that does not answer adds: its counters, from its counts file where it has them,
        else from its last snapshot."""
        snapshot: list[dict[str, Any]] = []
        try:
            snapshot = counters_only(decode((self.directory / f"{pid}.json").read_bytes()))
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log.warning("worker metrics: cannot read the counts of worker %s: %s", pid, exc)
        if self.hub is None:
            return snapshot
        try:
            exact = as_dicts(self.hub.prometheus_families(read_counts(self.directory / f"{pid}.counts")))
        except FileNotFoundError:
            return snapshot
        except (OSError, ValueError) as exc:
            log.warning("worker metrics: cannot read the counts of worker %s: %s", pid, exc)
            return snapshot
        return overlay(snapshot, exact)

    def collect(self) -> list[Metric]:
        """Every worker's families, merged: what ``/metrics`` answers."""
        own = as_dicts(self.local.collect())
        peers = {p.stem for pattern in ("*.sock", "*.json", "*.counts") for p in self.directory.glob(pattern)}
        peers.discard(str(self.pid))
        return merge([own, *(self._peer(pid) for pid in sorted(peers))])

    def close(self) -> None:
        """Write the final counts, stop answering (idempotent); the files stay for the workers that remain."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._write_file()
        self.counts.close()
        if self._server is not None:
            try:
                self._server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            self._server.close()
            self.socket_path.unlink(missing_ok=True)
        if self._thread is not None:
            self._thread.join(2.0)
