"""deploy/kubernetes/app.yaml runs the app deploy/Dockerfile builds, several workers a pod, and stops cleanly.

Read, not run (no cluster here): the container's command parses with `nexus-otel
serve`'s own options and serves the Dockerfile's app on all interfaces; the probes
and the Prometheus annotations reach the served port; the grace period covers the
drain and the flush; the data dir (the outbox) is the pod's own volume; the OTLP
endpoint reaches the gateway. Schema, namespace and Service wiring are checked with
the other manifests in tests/test_deploy_configs.py, the image tag in
tests/test_deploy_images.py. As there, the checker returns a list of problems, so
the negative tests can show it catches a broken copy.

The stateless variant, deploy/kubernetes-shared-outbox (a kustomize overlay: the
app as a Deployment whose outbox is in PostgreSQL), is held to the same serving
checks and to its own: the same pod as the StatefulSet's but for the outbox URL and
the data dir's volume; the data dir on an emptyDir and no volume claim;
NEXUS_OTEL_OUTBOX_URL from a Secret, never written in the manifest. The overlay is
rendered once with kustomize: the base with the Deployment for the StatefulSet.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import click
import pytest
import yaml

from nexus_otel.cli import serve as serve_command
from nexus_otel.errors import ConfigurationError
from nexus_otel.telemetry.config import TelemetryConfig

from .test_deploy_configs import (
    DEPLOY,
    K8S,
    K8S_MANIFESTS,
    NAMESPACE,
    ROOT,
    SDK_PROTOCOL_TO_RECEIVER,
    _container_port,
    _copy_deploy,
    _edit,
    _index,
    _kustomize_command,
    _pod_spec,
    _selects,
    component_type,
    kubernetes_schema_problems,
    load_docs,
    load_yaml,
    otlp_ports,
)

APP = "nexus-demo"
APP_MANIFEST = "app.yaml"
GATEWAY = "otel-gateway"
GATEWAY_MANIFEST = "otel-gateway.yaml"
GATEWAY_CONFIG = "otel-collector-gateway.yaml"
# On SIGTERM each worker drains in-flight requests (up to 10 s), then the app flushes
# records and telemetry (up to 10 s more); the kubelet kills what is left at the grace's end.
DRAIN_S, FLUSH_S, MIN_GRACE_S = 10, 10, 30
MEMORY_PER_WORKER = 256 * 2**20
# SQLite needs a volume that one pod mounts, never a filesystem shared between pods.
LOCAL_ACCESS_MODES = {"ReadWriteOnce", "ReadWriteOncePod"}
MEMORY_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
# The kustomize overlay that runs the app as a Deployment with its outbox in PostgreSQL, instead of the
# StatefulSet and the headless Service that gives its pods their names.
SHARED_OUTBOX_DIR = "kubernetes-shared-outbox"
SHARED_OUTBOX = DEPLOY / SHARED_OUTBOX_DIR
HEADLESS = "nexus-demo-headless"
OUTBOX_URL_ENV = "NEXUS_OTEL_OUTBOX_URL"
# What the kubelet fills in from the Secret, in the form nexus-otel validates (the real one is not in the kit).
SECRET_STAND_INS = {OUTBOX_URL_ENV: "postgresql://nexus@outbox-db.example/nexus"}
# A PostgreSQL URL or libpq keyword string written out in a manifest: its password would be in git.
LITERAL_DSN = re.compile(r"postgres(?:ql)?(?:\+\w+)?://|\bpassword\s*=", re.I)


# --- reading -----------------------------------------------------------------------------------

def dockerfile(path: Path) -> tuple[list[str], dict[str, str], int | None]:
    """The Dockerfile's CMD (exec form), its ENV settings and the uid its user is created with."""
    text = path.read_text()
    cmd = json.loads(re.search(r"^CMD\s+(\[.*\])\s*$", text, re.M).group(1))
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV\s+(.*)$", text, re.M):
        env.update(pair.split("=", 1) for pair in line.split() if "=" in pair)
    uid = re.search(r"--uid\s+(\d+)", text)
    return cmd, env, int(uid.group(1)) if uid else None


def serve_params(command: list[str]) -> tuple[dict | None, str | None]:
    """``nexus-otel serve ...`` parsed by the CLI's own options: (params, None), or (None, why not)."""
    if [str(c) for c in command[:2]] != ["nexus-otel", "serve"]:
        return None, f"{command[:2]} is not `nexus-otel serve`"
    try:
        ctx = serve_command.make_context("serve", [str(c) for c in command[2:]])
    except click.ClickException as exc:
        return None, exc.format_message()
    return ctx.params, None


def container_env(container: dict, image_env: dict[str, str]) -> dict[str, str]:
    """The environment the container starts with: the image's ENV, then the manifest's, $(VAR) expanded."""
    env = dict(image_env)
    for item in container.get("env") or []:
        if "valueFrom" in item:  # filled in by the kubelet; a Secret's value has the form the setting takes
            env[item["name"]] = SECRET_STAND_INS.get(item["name"], f"<{item['name']}>")
            continue
        env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), item.get("value", ""))
    return env


def cpu_cores(quantity) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def memory_bytes(quantity) -> int:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)([kMG]i?)?", str(quantity)).groups()
    return int(float(number) * MEMORY_UNITS[unit or ""])


def pre_stop_seconds(container: dict) -> int:
    """How long the preStop hook waits (``sleep N`` or the sleep action), 0 without one."""
    pre_stop = (container.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in pre_stop:
        return int(pre_stop["sleep"]["seconds"])
    command = [str(c) for c in (pre_stop.get("exec") or {}).get("command") or []]
    if len(command) == 2 and command[0].rsplit("/", 1)[-1] == "sleep":
        return int(float(command[1]))
    return 0


# --- the checker ---------------------------------------------------------------------------------

def app_problems(k8s_dir: Path, deploy_dir: Path) -> list[str]:
    """The app's StatefulSet serves what the Dockerfile runs, with several workers, reachable, durable, drained."""
    objects = _index(load_docs(k8s_dir / APP_MANIFEST))
    sts = objects.get(("StatefulSet", NAMESPACE, APP))
    if sts is None:
        return [f"{APP_MANIFEST} has no StatefulSet {APP} in namespace {NAMESPACE}"]
    return serving_problems(sts, objects, k8s_dir, deploy_dir) + local_outbox_problems(sts, deploy_dir)


def serving_problems(workload: dict, objects: dict, k8s_dir: Path, deploy_dir: Path) -> list[str]:
    """What either variant (StatefulSet or Deployment) must do: serve the Dockerfile's app, several workers a
    pod, reachable by probes, Prometheus and a Service, drained before it is killed, telemetry to the gateway."""
    pod = _pod_spec(workload)
    container = pod["containers"][0]
    image_cmd, image_env, image_uid = dockerfile(deploy_dir / "Dockerfile")
    problems: list[str] = []

    # The command: the Dockerfile's app, on every interface, several workers.
    if not container.get("command"):
        return [f"container {container['name']}: no command; give the serve command with --workers"]
    params, error = serve_params(list(container["command"]) + list(container.get("args") or []))
    if params is None:
        return [f"the command does not parse as nexus-otel serve: {error}"]
    image_params, _ = serve_params(image_cmd)
    for name in ("target", "plugins_dir"):
        if image_params and params[name] != image_params[name]:
            problems.append(f"serve {name} {params[name]!r} is not the one deploy/Dockerfile runs "
                            f"({image_params[name]!r})")
    if params["host"] != "0.0.0.0":
        problems.append(f"--host {params['host']}: the kubelet's probes and the Services cannot reach it; "
                        f"serve on --host 0.0.0.0")
    workers = params["workers"]
    if workers < 2:
        problems.append(f"the command runs {workers} worker per pod; this manifest is for several "
                        f"(--workers 2 or more)")
    port = params["port"]
    if _container_port(workload, port) != port:
        problems.append(f"the served port {port} is not a containerPort of {APP}")

    # Probes and Prometheus reach the served port.
    for probe in ("livenessProbe", "readinessProbe"):
        get = (container.get(probe) or {}).get("httpGet") or {}
        if get.get("path") != "/healthz" or _container_port(workload, get.get("port")) != port:
            problems.append(f"{probe} path {get.get('path')!r} port {get.get('port')!r}: "
                            f"should be /healthz on the served port {port}")
    annotations = workload["spec"]["template"]["metadata"].get("annotations") or {}
    wanted = {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}
    for key, value in wanted.items():
        if annotations.get(key) != value:
            problems.append(f"pod annotation {key} {annotations.get(key)!r}: should be {value!r}")
    labels = workload["spec"]["template"]["metadata"]["labels"]
    if not any(s["spec"].get("clusterIP") != "None" and _selects(s["spec"].get("selector") or {}, labels)
               and any(_container_port(workload, p.get("targetPort", p["port"])) == port for p in s["spec"]["ports"])
               for (kind, _, _), s in objects.items() if kind == "Service"):
        problems.append(f"no ClusterIP Service sends traffic to port {port} of the {APP} pods")

    # Stopping: the kubelet waits for preStop, the drain and the flush before it kills.
    grace = pod.get("terminationGracePeriodSeconds")
    needed = max(MIN_GRACE_S, pre_stop_seconds(container) + DRAIN_S + FLUSH_S)
    if grace is None or grace < needed:
        problems.append(f"terminationGracePeriodSeconds {grace}: should be at least {needed} (preStop "
                        f"{pre_stop_seconds(container)} s + drain {DRAIN_S} s + flush {FLUSH_S} s, and {MIN_GRACE_S})")

    # The data dir is writable by the image's user (its volume: local_outbox_problems, stateless_problems).
    env = container_env(container, image_env)
    mounts = container.get("volumeMounts") or []
    security = {**(pod.get("securityContext") or {}), **(container.get("securityContext") or {})}
    if security.get("runAsUser") != image_uid:
        problems.append(f"runAsUser {security.get('runAsUser')}: should be the image's user {image_uid}")
    if security.get("fsGroup") is None:
        problems.append("no fsGroup: the image's user cannot write to the data volume")
    if security.get("readOnlyRootFilesystem"):
        tmp = env.get("TMPDIR", "/tmp").rstrip("/")
        if not any(m["mountPath"].rstrip("/") == tmp for m in mounts):
            problems.append(f"readOnlyRootFilesystem with nothing writable at {tmp}, where the workers "
                            f"share a directory: mount an emptyDir there")

    # Resources for that many workers.
    resources = container.get("resources") or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    if not all(k in d for d in (requests, limits) for k in ("cpu", "memory")):
        problems.append(f"resources {resources}: set cpu and memory requests and limits")
    else:
        if cpu_cores(limits["cpu"]) < workers:
            problems.append(f"limits.cpu {limits['cpu']} for {workers} workers: give each up to one core")
        if memory_bytes(requests["memory"]) < workers * MEMORY_PER_WORKER:
            problems.append(f"requests.memory {requests['memory']} for {workers} workers: "
                            f"about {MEMORY_PER_WORKER // 2**20}Mi each")
        for key, convert in (("cpu", cpu_cores), ("memory", memory_bytes)):
            if convert(requests[key]) > convert(limits[key]):
                problems.append(f"requests.{key} {requests[key]} is over limits.{key} {limits[key]}")

    return problems + telemetry_problems(env, k8s_dir, deploy_dir)


def local_outbox_problems(workload: dict, deploy_dir: Path) -> list[str]:
    """The data dir (the SQLite outbox) is each pod's own volume: a volumeClaimTemplate one pod mounts."""
    pod = _pod_spec(workload)
    container = pod["containers"][0]
    data_dir = container_env(container, dockerfile(deploy_dir / "Dockerfile")[1]).get("NEXUS_OTEL_DATA_DIR", "")
    claims = {c["metadata"]["name"]: c for c in workload["spec"].get("volumeClaimTemplates") or []}
    mounts = container.get("volumeMounts") or []
    problems: list[str] = []
    if any(e["name"] == OUTBOX_URL_ENV for e in container.get("env") or []):
        problems.append(f"{APP_MANIFEST} sets {OUTBOX_URL_ENV}: the StatefulSet keeps its outbox on each pod's "
                        f"volume; the shared outbox is the Deployment of deploy/{SHARED_OUTBOX_DIR}")
    if not any(m["name"] in claims and m["mountPath"].rstrip("/") == data_dir.rstrip("/") for m in mounts):
        problems.append(f"NEXUS_OTEL_DATA_DIR={data_dir} is not where a volumeClaimTemplate is mounted "
                        f"(mounts: {[(m['name'], m['mountPath']) for m in mounts]}, claims: {sorted(claims)})")
    for name, claim in claims.items():
        if name not in {m["name"] for m in mounts}:
            problems.append(f"volumeClaimTemplate {name!r} is mounted nowhere")
        if name in {v["name"] for v in pod.get("volumes") or []}:
            problems.append(f"volumeClaimTemplate {name!r} is shadowed by a pod volume of the same name")
        modes = set(claim["spec"].get("accessModes") or [])
        if not modes or not modes <= LOCAL_ACCESS_MODES:
            problems.append(f"volumeClaimTemplate {name!r} accessModes {sorted(modes)}: the outbox is SQLite, "
                            f"one pod's volume ({sorted(LOCAL_ACCESS_MODES)})")
    return problems


def shared_outbox_problems(deploy_dir: Path) -> list[str]:
    """The overlay's Deployment serves as the StatefulSet does, keeps nothing on a volume, and reads the outbox
    URL from a Secret; what it applies with it is the base's app objects but the StatefulSet and its headless
    Service (rendered_overlay_problems checks that kustomize yields exactly that)."""
    k8s_dir = deploy_dir / "kubernetes"
    where = f"{SHARED_OUTBOX_DIR}/{APP_MANIFEST}"
    own = _index(load_docs(deploy_dir / SHARED_OUTBOX_DIR / APP_MANIFEST))
    deployment = own.get(("Deployment", NAMESPACE, APP))
    if deployment is None:
        return [f"{where} has no Deployment {APP} in namespace {NAMESPACE}"]
    base = _index(load_docs(k8s_dir / APP_MANIFEST))
    objects = {k: v for k, v in base.items() if k[0] != "StatefulSet" and k[2] != HEADLESS} | own
    problems = serving_problems(deployment, objects, k8s_dir, deploy_dir) + stateless_problems(deployment, deploy_dir)
    sts = base.get(("StatefulSet", NAMESPACE, APP))
    if sts is not None:
        problems += drift_problems(sts, deployment, where)
    return problems + literal_dsn_problems(own.values(), where)


def stateless_problems(deployment: dict, deploy_dir: Path) -> list[str]:
    """No volume outlives the pod: the data dir is an emptyDir; the outbox is PostgreSQL, its URL from a Secret."""
    pod = _pod_spec(deployment)
    container = pod["containers"][0]
    problems: list[str] = []
    if deployment["spec"].get("volumeClaimTemplates"):
        problems.append("the Deployment has volumeClaimTemplates: with the shared outbox the pods need no volume")
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for name, volume in volumes.items():
        if "persistentVolumeClaim" in volume or "ephemeral" in volume:
            problems.append(f"volume {name!r} is a persistentVolumeClaim: with the shared outbox nothing on the "
                            f"pod's disk must outlive it; use an emptyDir")
    data_dir = container_env(container, dockerfile(deploy_dir / "Dockerfile")[1]).get("NEXUS_OTEL_DATA_DIR", "")
    mounts = container.get("volumeMounts") or []
    if not any("emptyDir" in volumes.get(m["name"], {}) and m["mountPath"].rstrip("/") == data_dir.rstrip("/")
               for m in mounts):
        problems.append(f"NEXUS_OTEL_DATA_DIR={data_dir} is not where an emptyDir is mounted "
                        f"(mounts: {[(m['name'], m['mountPath']) for m in mounts]})")
    urls = [e for e in container.get("env") or [] if e["name"] == OUTBOX_URL_ENV]
    if len(urls) != 1:
        return problems + [f"{len(urls)} {OUTBOX_URL_ENV} entries in the container's env: set it once, from a "
                           f"Secret (valueFrom.secretKeyRef), or the pods keep a local outbox on an emptyDir"]
    (url,) = urls
    ref = (url.get("valueFrom") or {}).get("secretKeyRef") or {}
    if "value" in url or not ref.get("name") or not ref.get("key"):
        given = "a value written in the manifest" if "value" in url else f"valueFrom {url.get('valueFrom')}"
        problems.append(f"{OUTBOX_URL_ENV} is {given}: take it from a Secret (valueFrom.secretKeyRef with a "
                        f"name and a key): the URL holds a password")
    if ref.get("optional"):
        problems.append(f"{OUTBOX_URL_ENV}'s secretKeyRef is optional: without the Secret the pods would start "
                        f"with a local outbox on an emptyDir and lose its records with the pod")
    return problems


def drift_problems(sts: dict, deployment: dict, where: str) -> list[str]:
    """The Deployment runs the StatefulSet's pod but for the outbox URL and the data dir's volume."""
    problems: list[str] = []

    def compare(what: str, ours, theirs) -> None:
        if ours != theirs:
            problems.append(f"{where}: {what} {ours!r} differs from the StatefulSet's in {APP_MANIFEST} "
                            f"({theirs!r}): the two run the same pods but for the outbox")

    theirs, ours = sts["spec"]["template"], deployment["spec"]["template"]
    for key in ("labels", "annotations"):
        compare(f"pod {key}", ours["metadata"].get(key), theirs["metadata"].get(key))
    for key in sorted((set(ours["spec"]) | set(theirs["spec"])) - {"containers", "volumes"}):
        compare(f"pod {key}", ours["spec"].get(key), theirs["spec"].get(key))
    compare("container count", len(ours["spec"]["containers"]), len(theirs["spec"]["containers"]))
    container, sts_container = ours["spec"]["containers"][0], theirs["spec"]["containers"][0]
    for key in sorted((set(container) | set(sts_container)) - {"env"}):
        compare(f"container {key}", container.get(key), sts_container.get(key))
    compare(f"container env (but {OUTBOX_URL_ENV})",
            [e for e in container.get("env") or [] if e["name"] != OUTBOX_URL_ENV],
            [e for e in sts_container.get("env") or [] if e["name"] != OUTBOX_URL_ENV])
    return problems


def literal_dsn_problems(docs: Iterable[dict], where: str) -> list[str]:
    """No PostgreSQL URL (or libpq password) is written out anywhere in the objects: it would put a password in git."""
    def strings(node, path: str):
        if isinstance(node, dict):
            for key, value in node.items():
                yield from strings(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from strings(value, f"{path}[{i}]")
        elif isinstance(node, str):
            yield path, node

    return [f"{where}: {doc['kind']} {doc['metadata']['name']}: a literal PostgreSQL URL at {path[1:]} (not shown): "
            f"give it through a Secret (secretKeyRef), never in the manifest"
            for doc in docs for path, text in strings(doc, "") if LITERAL_DSN.search(text)]


def rendered_overlay_problems(docs: list[dict], k8s_dir: Path, deploy_dir: Path) -> list[str]:
    """What the overlay renders: the base's objects with the Deployment in place of the StatefulSet and its
    headless Service, the Deployment as its file has it, no volume claim, no Secret, each Service on one workload."""
    objects = _index(docs)
    base = {k for name in K8S_MANIFESTS for k in _index(load_docs(k8s_dir / name))}
    swapped = {("StatefulSet", NAMESPACE, APP), ("Service", NAMESPACE, HEADLESS)}
    expected = (base - swapped) | {("Deployment", NAMESPACE, APP)}
    problems: list[str] = []
    for kind, ns, name in sorted(set(objects) - expected):
        if (kind, ns, name) in swapped:
            problems.append(f"the overlay renders the base's {kind} {name} too: the StatefulSet and the Deployment "
                            f"would both run the app's pods (delete it with a patch)")
        elif kind == "Secret":
            problems.append(f"the overlay renders Secret {name}: every `kubectl apply -k` would reset the real one "
                            f"to the kit's copy; create it with kubectl instead")
        else:
            problems.append(f"the overlay renders {kind} {name}, which is neither the base's nor the Deployment")
    for kind, _, name in sorted(expected - set(objects)):
        problems.append(f"the overlay does not render {kind} {name}")
    deployment = objects.get(("Deployment", NAMESPACE, APP))
    own = _index(load_docs(deploy_dir / SHARED_OUTBOX_DIR / APP_MANIFEST)).get(("Deployment", NAMESPACE, APP))
    if deployment is not None and deployment != own:
        problems.append(f"the rendered Deployment {APP} differs from {SHARED_OUTBOX_DIR}/{APP_MANIFEST}: "
                        f"a patch changes it, so the checks of the file do not see what is applied")
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    for doc in docs:
        if doc["kind"] == "PersistentVolumeClaim" or (doc["kind"] != "StatefulSet" and "volumeClaimTemplates"
                                                         in (doc.get("spec") or {})):
            problems.append(f"the overlay renders a volume claim ({doc['kind']} {doc['metadata']['name']})")
        if doc["kind"] != "Service":
            continue
        backends = [w["metadata"]["name"] for w in workloads
                    if _selects(doc["spec"].get("selector") or {}, w["spec"]["template"]["metadata"]["labels"])]
        if len(backends) != 1:
            problems.append(f"service {doc['metadata']['name']} selects the pods of {backends}, expected one "
                            f"Deployment or StatefulSet")
    return problems


def telemetry_problems(env: dict[str, str], k8s_dir: Path, deploy_dir: Path) -> list[str]:
    """The OTEL_* settings pass nexus-otel's validation and send OTLP to the gateway Service, on a port that fits."""
    try:
        cfg = TelemetryConfig.from_env(env)
    except ConfigurationError as exc:
        return [f"the app's environment fails nexus-otel's validation: {exc}"]
    problems: list[str] = []
    if not cfg.service_name:
        problems.append("no OTEL_SERVICE_NAME")
    if "otlp" not in cfg.traces_exporters:
        problems.append(f"traces go to {cfg.traces_exporters}, not to the gateway over OTLP")
    gateway = load_yaml(deploy_dir / GATEWAY_CONFIG)
    receiver_ports = otlp_ports(gateway)
    gateway_objects = _index(load_docs(k8s_dir / GATEWAY_MANIFEST))
    service = gateway_objects[("Service", NAMESPACE, GATEWAY)]
    deployment = gateway_objects[("Deployment", NAMESPACE, GATEWAY)]
    service_ports = {p["port"]: _container_port(deployment, p.get("targetPort", p["port"]))
                     for p in service["spec"]["ports"]}
    hosts = {f"{GATEWAY}.{NAMESPACE}", f"{GATEWAY}.{NAMESPACE}.svc", f"{GATEWAY}.{NAMESPACE}.svc.cluster.local"}
    for signal, exporters, protocol in (("TRACES", cfg.traces_exporters, cfg.traces_protocol),
                                        ("METRICS", cfg.metrics_exporters, cfg.metrics_protocol)):
        if "otlp" not in exporters:
            continue
        var = f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"
        if not env.get(var, "").strip():
            var = "OTEL_EXPORTER_OTLP_ENDPOINT"
        url = urlsplit(env.get(var, "").strip())
        if url.hostname not in hosts:
            problems.append(f"{var}={url.geturl()} does not name the gateway Service {GATEWAY}.{NAMESPACE}")
        receiver_port = receiver_ports.get(SDK_PROTOCOL_TO_RECEIVER[protocol])
        if receiver_port is None or service_ports.get(url.port) != receiver_port:
            problems.append(f"{var}={url.geturl()} with protocol {protocol}: port should be the {GATEWAY} "
                            f"Service port that reaches its OTLP {SDK_PROTOCOL_TO_RECEIVER[protocol]} "
                            f"receiver ({receiver_port})")
        if signal == "METRICS" and not any(
                component_type(pid) == "metrics" and any(component_type(r) == "otlp" for r in p.get("receivers") or [])
                for pid, p in ((gateway.get("service") or {}).get("pipelines") or {}).items()):
            problems.append("metrics go over OTLP but the gateway has no metrics pipeline receiving OTLP: "
                            "set OTEL_METRICS_EXPORTER=none (Prometheus scrapes /metrics)")
    return problems


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end < 0 else text[start:end]


# --- the real files ------------------------------------------------------------------------------

def test_app_manifest_is_consistent():
    """The serve command, probes, annotations, grace period, data volume, resources and OTLP endpoint agree."""
    assert app_problems(K8S, DEPLOY) == []


def test_app_shape():
    """Several pods, each with several workers and its own data volume, behind a ClusterIP and a headless Service."""
    objects = _index(load_docs(K8S / APP_MANIFEST))
    sts = objects[("StatefulSet", NAMESPACE, APP)]
    assert sts["spec"]["replicas"] >= 2
    params, _ = serve_params(_pod_spec(sts)["containers"][0]["command"])
    assert params["workers"] >= 2 and params["host"] == "0.0.0.0"
    assert [c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]] == ["data"]
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"
    assert objects[("Service", NAMESPACE, APP)]["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert objects[("Service", NAMESPACE, sts["spec"]["serviceName"])]["spec"]["clusterIP"] == "None"


def test_docs_show_how_to_build_and_apply_the_app():
    """docs/deploy.md's "Scale out" and app.yaml's header build the image app.yaml runs, and apply the kit."""
    sts = _index(load_docs(K8S / APP_MANIFEST))[("StatefulSet", NAMESPACE, APP)]
    image = _pod_spec(sts)["containers"][0]["image"]
    build = f"docker build -f deploy/Dockerfile -t {image} ."
    section = _section((ROOT / "docs" / "deploy.md").read_text(), "## 7. Scale out")
    for needed in (build, "kubectl apply -k deploy/kubernetes", "--workers",
                   "kubectl -n observability rollout restart statefulset/nexus-demo"):
        assert needed in section, needed
    assert build in (K8S / APP_MANIFEST).read_text()


@pytest.fixture(scope="module")
def shared_outbox_render() -> list[dict]:
    """The shared-outbox overlay as `kubectl kustomize` renders it: one build for the module."""
    result = subprocess.run([*_kustomize_command(), str(SHARED_OUTBOX)],
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_shared_outbox_manifest_is_consistent():
    """The overlay's Deployment serves as the StatefulSet does, on an emptyDir, its outbox URL from a Secret."""
    assert shared_outbox_problems(DEPLOY) == []


def test_shared_outbox_manifest_validates_strictly():
    """The overlay's Deployment validates strictly against the Kubernetes API schemas."""
    assert kubernetes_schema_problems([SHARED_OUTBOX / APP_MANIFEST]) == []


def test_shared_outbox_overlay_renders_a_deployment_and_no_statefulset(shared_outbox_render):
    """kustomize renders the base with the Deployment for the StatefulSet: no volume claim, no Secret."""
    assert rendered_overlay_problems(shared_outbox_render, K8S, DEPLOY) == []
    kinds = [(d["kind"], d["metadata"]["name"]) for d in shared_outbox_render]
    assert ("Deployment", APP) in kinds and ("StatefulSet", APP) not in kinds
    assert not [k for k in kinds if k[0] in ("PersistentVolumeClaim", "Secret")]
    deployment = _index(shared_outbox_render)[("Deployment", NAMESPACE, APP)]
    (url,) = [e for e in _pod_spec(deployment)["containers"][0]["env"] if e["name"] == OUTBOX_URL_ENV]
    assert set(url) == {"name", "valueFrom"} and url["valueFrom"]["secretKeyRef"]["key"]


def test_the_base_applies_the_statefulset_alone():
    """`kubectl apply -k deploy/kubernetes` runs the StatefulSet and no Deployment of the app, nor the overlay."""
    base = _index([d for name in K8S_MANIFESTS for d in load_docs(K8S / name)])
    assert ("StatefulSet", NAMESPACE, APP) in base and ("Deployment", NAMESPACE, APP) not in base
    assert not [r for r in load_yaml(K8S / "kustomization.yaml")["resources"] if SHARED_OUTBOX_DIR in r]
    assert load_yaml(SHARED_OUTBOX / "kustomization.yaml")["resources"] == ["../kubernetes", APP_MANIFEST]


def test_docs_show_how_to_apply_the_shared_outbox():
    """docs/deploy.md and the overlay's headers create the very Secret the Deployment reads, then apply the overlay."""
    deployment = _index(load_docs(SHARED_OUTBOX / APP_MANIFEST))[("Deployment", NAMESPACE, APP)]
    (url,) = [e for e in _pod_spec(deployment)["containers"][0]["env"] if e["name"] == OUTBOX_URL_ENV]
    ref = url["valueFrom"]["secretKeyRef"]
    create = re.compile(r"kubectl -n (\S+) create secret generic (\S+)[\s\\#]*--from-literal=(\w+)=")
    section = _section((ROOT / "docs" / "deploy.md").read_text(), "## 7. Scale out")
    for text in (section, (SHARED_OUTBOX / APP_MANIFEST).read_text(),
                 (SHARED_OUTBOX / "kustomization.yaml").read_text()):
        assert create.findall(text) == [(NAMESPACE, ref["name"], ref["key"])]
    for needed in (f"kubectl apply -k deploy/{SHARED_OUTBOX_DIR}", OUTBOX_URL_ENV,
                   "kubectl -n observability rollout restart deployment/nexus-demo"):
        assert needed in section, needed
    assert f"kubectl apply -k deploy/{SHARED_OUTBOX_DIR}" in (SHARED_OUTBOX / "kustomization.yaml").read_text()


# --- the checker catches broken copies ---------------------------------------------------------

@pytest.mark.parametrize(("file", "old", "new", "expected"), [
    ("kubernetes/app.yaml", '            - --workers\n            - "2"\n', "", "runs 1 worker per pod"),
    ("kubernetes/app.yaml", "            - --workers\n", "            - --worker\n", "No such option '--worker'"),
    ("kubernetes/app.yaml", "            - 0.0.0.0\n", "            - 127.0.0.1\n", "serve on --host 0.0.0.0"),
    ("kubernetes/app.yaml", '            - "8000"\n', '            - "8080"\n',
     "served port 8080 is not a containerPort"),
    ("kubernetes/app.yaml", "- nexus_otel.demo.app:create_app", "- nexus_otel.demo.app:app",
     "is not the one deploy/Dockerfile runs"),
    ("Dockerfile", '"nexus_otel.demo.app:create_app"', '"myproject.app:app"', "is not the one deploy/Dockerfile runs"),
    ("kubernetes/app.yaml", "path: /healthz\n              port: http\n            initialDelaySeconds: 2\n",
     "path: /health\n              port: http\n            initialDelaySeconds: 2\n",
     "readinessProbe path '/health'"),
    ("kubernetes/app.yaml", 'prometheus.io/port: "8000"', 'prometheus.io/port: "9000"',
     "prometheus.io/port '9000': should be '8000'"),
    ("kubernetes/app.yaml", "prometheus.io/path: /metrics", "prometheus.io/path: /stats",
     "prometheus.io/path '/stats'"),
    ("kubernetes/app.yaml", "terminationGracePeriodSeconds: 40", "terminationGracePeriodSeconds: 20",
     "terminationGracePeriodSeconds 20: should be at least 30"),
    ("kubernetes/app.yaml", 'command: ["sleep", "5"]', 'command: ["sleep", "25"]',
     "terminationGracePeriodSeconds 40: should be at least 45"),
    ("kubernetes/app.yaml", "              value: /data\n", "              value: /var/lib/nexus\n",
     "NEXUS_OTEL_DATA_DIR=/var/lib/nexus is not where a volumeClaimTemplate is mounted"),
    ("kubernetes/app.yaml", "    - metadata:\n        name: data", "    - metadata:\n        name: outbox",
     "volumeClaimTemplate 'outbox' is mounted nowhere"),
    ("kubernetes/app.yaml", 'accessModes: ["ReadWriteOnce"]', 'accessModes: ["ReadWriteMany"]',
     "accessModes ['ReadWriteMany']"),
    ("kubernetes/app.yaml", "        fsGroup: 10001", "        supplementalGroups: [10001]", "no fsGroup"),
    ("Dockerfile", "--uid 10001", "--uid 10002", "runAsUser 10001: should be the image's user 10002"),
    ("kubernetes/app.yaml", "            - name: tmp\n              mountPath: /tmp\n", "",
     "nothing writable at /tmp"),
    ("kubernetes/app.yaml", '              cpu: "2"', '              cpu: "1"', "limits.cpu 1 for 2 workers"),
    ("kubernetes/app.yaml", "              memory: 512Mi", "              memory: 256Mi",
     "requests.memory 256Mi for 2 workers"),
    ("kubernetes/app.yaml", "http://otel-gateway.observability:4318", "http://otel-gateway.observability:4317",
     "port should be the otel-gateway Service port that reaches its OTLP http receiver (4318)"),
    ("kubernetes/app.yaml", "http://otel-gateway.observability:4318", "http://otel-collector:4318",
     "does not name the gateway Service"),
    ("kubernetes/app.yaml", "              value: none ", "              value: otlp ",
     "the gateway has no metrics pipeline receiving OTLP"),
    ("kubernetes/app.yaml", "              value: http/protobuf", "              value: http/json",
     "fails nexus-otel's validation"),
])
def test_app_check_catches_a_broken_copy(tmp_path, file, old, new, expected):
    """A copy whose command, probes, annotations, grace, volume, user, resources or endpoint drift is reported."""
    deploy = _copy_deploy(tmp_path)
    _edit(deploy / file, old, new, once=True)
    problems = app_problems(deploy / "kubernetes", deploy)
    assert any(expected in p for p in problems), problems


SHARED_APP = f"{SHARED_OUTBOX_DIR}/{APP_MANIFEST}"
SECRET_REF = ("              valueFrom:\n                secretKeyRef:\n                  name: nexus-demo-outbox\n"
              "                  key: url\n")


@pytest.mark.parametrize(("file", "old", "new", "expected"), [
    (SHARED_APP, SECRET_REF, "              value: postgresql://nexus:hunter2@db/nexus\n",
     "a literal PostgreSQL URL at spec.template.spec.containers[0].env"),
    (SHARED_APP, SECRET_REF, "              value: postgresql://nexus:hunter2@db/nexus\n",
     "take it from a Secret (valueFrom.secretKeyRef"),
    (SHARED_APP, "            - name: NEXUS_OTEL_DATA_DIR\n",
     "            - name: DATABASE_URL\n              value: host=db password=hunter2\n"
     "            - name: NEXUS_OTEL_DATA_DIR\n", "a literal PostgreSQL URL"),
    (SHARED_APP, "                  key: url\n", "                  key: url\n                  optional: true\n",
     "secretKeyRef is optional"),
    (SHARED_APP, "            - name: NEXUS_OTEL_OUTBOX_URL\n" + SECRET_REF, "",
     "0 NEXUS_OTEL_OUTBOX_URL entries"),
    (SHARED_APP, "          emptyDir:\n            sizeLimit: 1Gi\n",
     "          persistentVolumeClaim:\n            claimName: nexus-demo-data\n",
     "volume 'data' is a persistentVolumeClaim"),
    (SHARED_APP, "              value: /data\n", "              value: /var/lib/nexus\n",
     "NEXUS_OTEL_DATA_DIR=/var/lib/nexus is not where an emptyDir is mounted"),
    (SHARED_APP, '            - --workers\n            - "2"\n', "", "runs 1 worker per pod"),
    (SHARED_APP, "            - 0.0.0.0\n", "            - 127.0.0.1\n", "serve on --host 0.0.0.0"),
    (SHARED_APP, "path: /healthz\n              port: http\n            initialDelaySeconds: 2\n",
     "path: /healthz\n              port: 9000\n            initialDelaySeconds: 2\n",
     "readinessProbe path '/healthz' port 9000"),
    (SHARED_APP, "terminationGracePeriodSeconds: 40", "terminationGracePeriodSeconds: 20",
     "terminationGracePeriodSeconds 20: should be at least 30"),
    (SHARED_APP, "image: nexus-otel-demo:0.1.0", "image: nexus-otel-demo:0.2.0",
     "container image 'nexus-otel-demo:0.2.0' differs from the StatefulSet's"),
    ("kubernetes/app.yaml", 'prometheus.io/port: "8000"', 'prometheus.io/port: "8001"',
     "pod annotations"),
    (SHARED_APP, "http://otel-gateway.observability:4318", "http://otel-gateway.observability:4317",
     "port should be the otel-gateway Service port"),
    ("kubernetes/app.yaml", "  type: ClusterIP\n  selector:\n    app.kubernetes.io/name: nexus-demo\n",
     "  type: ClusterIP\n  selector:\n    app.kubernetes.io/name: nexus-demo-old\n",
     "no ClusterIP Service sends traffic to port 8000"),
])
def test_shared_outbox_check_catches_a_broken_copy(tmp_path, file, old, new, expected):
    """A Deployment with a literal or optional outbox URL, a volume claim, or a pod drifted from the StatefulSet's."""
    deploy = _copy_deploy(tmp_path)
    _edit(deploy / file, old, new, once=True)
    problems = shared_outbox_problems(deploy)
    assert any(expected in p for p in problems), problems


def test_app_check_catches_the_shared_outbox_in_the_statefulset(tmp_path):
    """A StatefulSet given NEXUS_OTEL_OUTBOX_URL is reported: the shared outbox is the Deployment's."""
    deploy = _copy_deploy(tmp_path)
    _edit(deploy / "kubernetes/app.yaml", "            - name: NEXUS_OTEL_DATA_DIR\n",
          "            - name: NEXUS_OTEL_OUTBOX_URL\n" + SECRET_REF + "            - name: NEXUS_OTEL_DATA_DIR\n",
          once=True)
    problems = app_problems(deploy / "kubernetes", deploy)
    assert any("sets NEXUS_OTEL_OUTBOX_URL" in p for p in problems), problems


def _with_statefulset(docs: list[dict]) -> list[dict]:
    return docs + [d for d in load_docs(K8S / APP_MANIFEST) if d["kind"] == "StatefulSet"]


def _with_secret(docs: list[dict]) -> list[dict]:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "nexus-demo-outbox", "namespace": NAMESPACE},
              "stringData": {"url": "postgresql://nexus:change-me@db/nexus"}}
    return docs + [secret]


def _with_claim(docs: list[dict]) -> list[dict]:
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": "nexus-demo-data", "namespace": NAMESPACE}, "spec": {}}
    return docs + [claim]


def _without_gateway(docs: list[dict]) -> list[dict]:
    return [d for d in docs if (d["kind"], d["metadata"]["name"]) != ("Deployment", GATEWAY)]


def _patched_deployment(docs: list[dict]) -> list[dict]:
    out = yaml.safe_load(yaml.safe_dump(docs))
    for doc in out:
        if (doc["kind"], doc["metadata"]["name"]) == ("Deployment", APP):
            doc["spec"]["replicas"] = 5
    return out


def _service_selects_nothing(docs: list[dict]) -> list[dict]:
    out = yaml.safe_load(yaml.safe_dump(docs))
    for doc in out:
        if (doc["kind"], doc["metadata"]["name"]) == ("Service", APP):
            doc["spec"]["selector"] = {"app.kubernetes.io/name": "nexus-demo-old"}
    return out


@pytest.mark.parametrize(("change", "expected"), [
    (_with_statefulset, "renders the base's StatefulSet nexus-demo too"),
    (_with_secret, "renders Secret nexus-demo-outbox"),
    (_with_claim, "renders a volume claim (PersistentVolumeClaim nexus-demo-data)"),
    (_without_gateway, "does not render Deployment otel-gateway"),
    (_patched_deployment, "the rendered Deployment nexus-demo differs from"),
    (_service_selects_nothing, "service nexus-demo selects the pods of []"),
])
def test_overlay_check_catches_a_broken_render(shared_outbox_render, change, expected):
    """A render with the StatefulSet kept, a Secret or a claim added, a base object lost or a patched Deployment."""
    problems = rendered_overlay_problems(change(shared_outbox_render), K8S, DEPLOY)
    assert any(expected in p for p in problems), problems
