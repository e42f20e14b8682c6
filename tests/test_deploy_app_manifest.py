"""deploy/kubernetes/app.yaml runs the app deploy/Dockerfile builds, several workers a pod, and stops cleanly.

Read, not run (no cluster here): the container's command parses with `nexus-otel
serve`'s own options and serves the Dockerfile's app on all interfaces; the probes
and the Prometheus annotations reach the served port; the grace period covers the
drain and the flush; the data dir (the outbox) is the pod's own volume; the OTLP
endpoint reaches the gateway. Schema, namespace and Service wiring are checked with
the other manifests in tests/test_deploy_configs.py, the image tag in
tests/test_deploy_images.py. As there, the checker returns a list of problems, so
the negative tests can show it catches a broken copy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import click
import pytest

from nexus_otel.cli import serve as serve_command
from nexus_otel.errors import ConfigurationError
from nexus_otel.telemetry.config import TelemetryConfig

from .test_deploy_configs import (
    DEPLOY,
    K8S,
    NAMESPACE,
    ROOT,
    SDK_PROTOCOL_TO_RECEIVER,
    _container_port,
    _copy_deploy,
    _edit,
    _index,
    _pod_spec,
    _selects,
    component_type,
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
        if "valueFrom" in item:
            env[item["name"]] = f"<{item['name']}>"  # filled in by the kubelet
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
    pod = _pod_spec(sts)
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
    if _container_port(sts, port) != port:
        problems.append(f"the served port {port} is not a containerPort of {APP}")

    # Probes and Prometheus reach the served port.
    for probe in ("livenessProbe", "readinessProbe"):
        get = (container.get(probe) or {}).get("httpGet") or {}
        if get.get("path") != "/healthz" or _container_port(sts, get.get("port")) != port:
            problems.append(f"{probe} path {get.get('path')!r} port {get.get('port')!r}: "
                            f"should be /healthz on the served port {port}")
    annotations = sts["spec"]["template"]["metadata"].get("annotations") or {}
    wanted = {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}
    for key, value in wanted.items():
        if annotations.get(key) != value:
            problems.append(f"pod annotation {key} {annotations.get(key)!r}: should be {value!r}")
    if not any(s["spec"].get("clusterIP") != "None" and _selects(s["spec"].get("selector") or {},
                                                                 sts["spec"]["template"]["metadata"]["labels"])
               and any(_container_port(sts, p.get("targetPort", p["port"])) == port for p in s["spec"]["ports"])
               for (kind, _, _), s in objects.items() if kind == "Service"):
        problems.append(f"no ClusterIP Service sends traffic to port {port} of the {APP} pods")

    # Stopping: the kubelet waits for preStop, the drain and the flush before it kills.
    grace = pod.get("terminationGracePeriodSeconds")
    needed = max(MIN_GRACE_S, pre_stop_seconds(container) + DRAIN_S + FLUSH_S)
    if grace is None or grace < needed:
        problems.append(f"terminationGracePeriodSeconds {grace}: should be at least {needed} (preStop "
                        f"{pre_stop_seconds(container)} s + drain {DRAIN_S} s + flush {FLUSH_S} s, and {MIN_GRACE_S})")

    # The data dir (the outbox) is this pod's own volume, writable by the image's user.
    env = container_env(container, image_env)
    data_dir = env.get("NEXUS_OTEL_DATA_DIR", "")
    claims = {c["metadata"]["name"]: c for c in sts["spec"].get("volumeClaimTemplates") or []}
    mounts = container.get("volumeMounts") or []
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
