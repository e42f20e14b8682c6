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

The same socket answers other questions a request needs every worker for (``GET /executions``:
the executions each one has in flight). The protocol, one question per connection:

- the asker sends one line, a JSON object ``{"ask": TOPIC, ...}``, and reads to the end;
- ``{"ask": "metrics"}`` is answered with the samples, as above;
- another topic is answered with ``{"pid": PID, "answer": VALUE}`` (what the worker registered
  for it with :meth:`WorkerMetrics.answer`), or ``{"pid": PID, "error": ...}`` if it has none;
- a connection that sends no line within :data:`REQUEST_WAIT` seconds (a worker from before
  questions, which only ever asked for samples) gets the samples. A worker from before
  questions answers every question with its samples; an asker that expected an object
  leaves that worker out, as it does a worker that does not answer within its timeout.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import orjson
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Exemplar, Sample

from ..errors import ConfigurationError, InvalidDataError
from .metrics_hub import MetricsHub
from .prometheus import ReadingFamily
from .shared_counts import CountsFile, read_counts

log = logging.getLogger("nexus_otel.metrics")

REFRESH_SECONDS = 5.0
"""How often a running worker rewrites its ``.json`` file (what a worker killed outright can lose of the
counters that are not in its ``.counts`` file)."""
PEER_TIMEOUT = 3.0
"""Seconds a scrape waits for one peer's samples before using its file instead."""
REQUEST_WAIT = 0.25
"""Seconds a worker waits for a peer's question before taking the connection for a scrape from a worker
that asks none (an older version, during a rolling restart) and answering with its samples."""
ASK_TIMEOUT = 1.0
"""Seconds :meth:`WorkerMetrics.ask` waits for all peers' answers (asked at once); later ones are left out."""
REQUEST_MAX = 4096
"""Bytes of a question a worker reads at most."""
METRICS = "metrics"
"""The topic of the samples (what a connection without a question gets too)."""
INSTANCE_LABEL = "service_instance_id"
_SUM, _MAX, _INFO = "sum", "max", "info"
_CUMULATIVE = ("counter", "histogram", "summary", "gaugehistogram")
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS
WORKERS_DIR_MAX = _SOCKET_PATH_MAX - len("/4194304.sock")
"""The longest shared directory path whose sockets (``<pid>.sock``) still have valid names."""


class Collectable(Protocol):
    def collect(self) -> Iterable[Metric]: ...


Answer = Callable[[dict[str, Any]], Any]
"""What a worker answers a peer's question with: called with the question (its ``ask`` and arguments),
returns a JSON-serialisable value. Runs on the thread that answers peers: keep it quick."""


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
        raise InvalidDataError("worker metrics: expected a list of families")
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
        self._answers: dict[str, Answer] = {}
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
                    question = _read_question(conn)
                    conn.settimeout(self.peer_timeout)
                    conn.sendall(self._reply(question))
                except Exception as exc:  # a peer that went away, or a collection that failed
                    log.debug("worker metrics: could not answer a peer: %s", exc)

    def answer(self, topic: str, fn: Answer) -> None:
        """Answer peers that :meth:`ask` about ``topic`` with ``fn(question)`` (replacing any earlier one)."""
        if topic == METRICS:
            raise ConfigurationError("topic", topic, f"another name than {METRICS!r} (the samples)")
        self._answers[topic] = fn

    def _reply(self, question: dict[str, Any] | None) -> bytes:
        """The bytes that answer one peer's question (None: the samples; see the module docstring)."""
        topic = METRICS if question is None else question.get("ask")
        if topic == METRICS:
            return self._samples()
        fn = self._answers.get(topic) if isinstance(topic, str) else None
        if fn is None:
            return orjson.dumps({"pid": self.pid, "error": f"unknown question {str(topic)[:100]!r}"})
        try:
            return orjson.dumps({"pid": self.pid, "answer": fn(question or {})}, default=str)
        except Exception as exc:
            log.warning("worker metrics: cannot answer a peer's %r: %s", topic, exc)
            return orjson.dumps({"pid": self.pid, "error": type(exc).__name__})

    def peers(self) -> list[int]:
        """The process ids of the other workers that listen now (a socket in the shared directory)."""
        pids = {int(p.stem) for p in self.directory.glob("*.sock") if p.stem.isdigit()}
        pids.discard(self.pid)
        return sorted(pids)

    def ask(self, topic: str, timeout: float = ASK_TIMEOUT, **arguments: Any) -> tuple[dict[int, Any], list[int]]:
        """Ask every other live worker about ``topic``, all at once: their answers by process id, and the ids
        of the workers that did not answer within ``timeout`` seconds (or could not: an older version, a
        worker without an answer for ``topic``). Blocks up to ``timeout``: call it off an event loop."""
        if topic == METRICS:
            raise ConfigurationError("topic", topic,
                                     f"another name than {METRICS!r} (ask for the samples with collect())")
        question = orjson.dumps({**arguments, "ask": topic}) + b"\n"
        deadline = time.monotonic() + timeout
        answers: dict[int, Any] = {}
        missing: list[int] = []
        reading: dict[socket.socket, tuple[int, list[bytes]]] = {}
        with selectors.DefaultSelector() as selector:
            for pid in self.peers():
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    conn.settimeout(max(0.001, deadline - time.monotonic()))
                    conn.connect(str(self.directory / f"{pid}.sock"))
                    conn.sendall(question)
                    conn.setblocking(False)
                except (ConnectionRefusedError, FileNotFoundError):  # a worker gone: nobody to ask
                    conn.close()
                    continue
                except OSError as exc:  # a full backlog, say
                    log.debug("worker metrics: cannot ask worker %s: %s", pid, exc)
                    conn.close()
                    missing.append(pid)
                    continue
                reading[conn] = (pid, [])
                selector.register(conn, selectors.EVENT_READ)
            while reading and (left := deadline - time.monotonic()) > 0:
                for key, _ in selector.select(left):
                    conn = key.fileobj  # type: ignore[assignment]
                    pid, chunks = reading[conn]
                    try:
                        chunk = conn.recv(1 << 16)
                    except BlockingIOError:
                        continue
                    except OSError:  # reset: an older worker that closed without reading the question
                        chunk = b""
                    if chunk:
                        chunks.append(chunk)
                        continue
                    selector.unregister(conn)
                    conn.close()
                    del reading[conn]
                    value = _answer_of(b"".join(chunks))
                    if value is _NO_ANSWER:
                        missing.append(pid)
                    else:
                        answers[pid] = value
            for conn, (pid, _) in reading.items():
                if pid not in answers:
                    log.warning("worker metrics: worker %s did not answer %r within %s s", pid, topic, timeout)
                missing.append(pid)
                conn.close()
        return answers, sorted(missing)

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
                    try:
                        conn.sendall(_METRICS_QUESTION)
                    except BrokenPipeError:  # an older worker that sent its samples and closed already
                        pass
                    chunks: list[bytes] = []
                    while True:
                        try:
                            chunk = conn.recv(1 << 16)
                        except ConnectionResetError:  # an older worker closes without reading the question
                            if not chunks:
                                raise
                            break
                        if not chunk:
                            break
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


_METRICS_QUESTION = orjson.dumps({"ask": METRICS}) + b"\n"
_NO_ANSWER = object()


def _read_question(conn: socket.socket) -> dict[str, Any] | None:
    """A peer's question (None: it sent none within :data:`REQUEST_WAIT`, or not a JSON object)."""
    deadline = time.monotonic() + REQUEST_WAIT
    data = b""
    try:
        while b"\n" not in data and len(data) < REQUEST_MAX:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            conn.settimeout(left)
            chunk = conn.recv(REQUEST_MAX - len(data))
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        pass
    line = data.split(b"\n", 1)[0].strip()
    if not line:
        return None
    try:
        question = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return question if isinstance(question, dict) else None


def _answer_of(data: bytes) -> Any:
    """The value in a peer's answer to a question, or ``_NO_ANSWER`` (an error, or an older worker's samples)."""
    try:
        reply = orjson.loads(data)
    except orjson.JSONDecodeError:
        return _NO_ANSWER
    if not isinstance(reply, dict) or "answer" not in reply:
        return _NO_ANSWER
    return reply["answer"]
