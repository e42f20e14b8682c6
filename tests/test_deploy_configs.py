"""The files under deploy/ agree with each other and validate: collector pipelines, ports, Compose, Kubernetes.

Nothing here starts a container or needs a cluster: the collector configs are
checked by reading them (the real Collector validates and runs them in
tests/test_collector_*.py), the Compose file against the Compose specification's
JSON schema (vendored by check-jsonschema) and the Kubernetes manifests against
the API schemas that kubernetes-validate ships. Each checker returns a list of
problems, so that the negative tests can show it catches a broken copy.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from nexus_otel.errors import ConfigurationError
from nexus_otel.telemetry.config import TelemetryConfig

from .deploy_servers import require_binary, with_env_defaults

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"

COLLECTOR_CONFIGS = ("otel-collector.yaml", "otel-collector-gateway.yaml", "otel-collector-sampler.yaml")
K8S_MANIFESTS = ("namespace.yaml", "app.yaml", "otel-gateway.yaml", "otel-sampler.yaml", "victorialogs.yaml")
NAMESPACE = "observability"
COMPOSE_COLLECTOR_SERVICE = "otel-collector"
COMPOSE_APP_SERVICE = "app"
COMPOSE_LOGS_SERVICE = "victorialogs"
VICTORIALOGS_PORT = 9428
VICTORIALOGS_OTLP_PATH = "/insert/opentelemetry"  # the otlp_http exporter appends /v1/logs
K8S_VERSION = "1.34.0"  # a recent release whose schemas kubernetes-validate ships
# Which Deployment runs which collector config (the ConfigMap must hold it verbatim).
# The app's StatefulSet (app.yaml), and the Deployment that deploy/kubernetes-shared-outbox puts in its
# place, have checks of their own in tests/test_deploy_app_manifest.py.
K8S_COLLECTORS = {"otel-gateway": "otel-collector-gateway.yaml", "otel-sampler": "otel-collector-sampler.yaml"}

# The sections of a collector config that hold components. Whether a component type exists is the
# real Collector's call: tests/test_collector_components.py runs `validate` on every config.
SECTIONS = ("receivers", "processors", "exporters", "connectors", "extensions")
PIPELINE_DATA_TYPES = ("traces", "metrics", "logs")
# The OTLP receiver's endpoints when a protocol is listed without one.
OTLP_DEFAULT_PORTS = {"grpc": 4317, "http": 4318}
# OTEL_EXPORTER_OTLP_PROTOCOL value -> the OTLP receiver protocol that serves it.
SDK_PROTOCOL_TO_RECEIVER = {"http/protobuf": "http", "grpc": "grpc"}


# --- reading -----------------------------------------------------------------------------------

def load_yaml(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return with_env_defaults(yaml.safe_load(f) or {})


def load_docs(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def component_type(name: str) -> str:
    return name.split("/", 1)[0]


def port_of(endpoint: str) -> int:
    """The port of a collector ``host:port`` endpoint."""
    return int(str(endpoint).rsplit(":", 1)[1])


def otlp_ports(config: dict) -> dict[str, int]:
    """{"grpc": port, "http": port} of the collector config's otlp receiver(s), for the protocols enabled."""
    ports: dict[str, int] = {}
    for name, settings in (config.get("receivers") or {}).items():
        if component_type(name) != "otlp":
            continue
        for proto, proto_settings in ((settings or {}).get("protocols") or {}).items():
            endpoint = (proto_settings or {}).get("endpoint")
            ports[proto] = port_of(endpoint) if endpoint else OTLP_DEFAULT_PORTS[proto]
    return ports


def health_check_port(config: dict) -> int | None:
    for name, settings in (config.get("extensions") or {}).items():
        if component_type(name) == "health_check":
            return port_of((settings or {}).get("endpoint", "localhost:13133"))
    return None


def compose_environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def published_container_ports(service: dict) -> set[int]:
    """The container ports a Compose service publishes (short "[ip:][host:]container[/proto]" or long syntax)."""
    ports = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            container = str(entry).rsplit(":", 1)[-1].split("/", 1)[0]
            ports.add(int(container))
    return ports


# --- checkers: each returns a list of problems, empty when all is well ------------------------

def pipeline_problems(config: dict) -> list[str]:
    """Every component a pipeline names is defined, every defined one used, connectors on both sides."""
    problems: list[str] = []
    sections = {kind: (config.get(kind) or {}) for kind in SECTIONS}
    service = config.get("service") or {}
    pipelines = service.get("pipelines") or {}
    if not pipelines:
        problems.append("service.pipelines is empty")

    for name in set(sections["connectors"]) & (set(sections["receivers"]) | set(sections["exporters"])):
        problems.append(f"{name!r} is defined both as a connector and as a receiver or exporter")

    used = {"receivers": set(), "processors": set(), "exporters": set()}
    for pid, pipeline in pipelines.items():
        pipeline = pipeline or {}
        if component_type(pid) not in PIPELINE_DATA_TYPES:
            problems.append(f"pipeline {pid!r}: data type must be one of {PIPELINE_DATA_TYPES}")
        for role in ("receivers", "exporters"):
            if not pipeline.get(role):
                problems.append(f"pipeline {pid!r} has no {role}")
        for role in ("receivers", "processors", "exporters"):
            names = list(pipeline.get(role) or [])
            for name in {n for n in names if names.count(n) > 1}:
                problems.append(f"pipeline {pid!r} lists {role[:-1]} {name!r} twice")
            defined = set(sections[role])
            if role != "processors":
                defined |= set(sections["connectors"])
            for name in names:
                if name not in defined:
                    problems.append(f"pipeline {pid!r}: {role[:-1]} {name!r} is not defined")
                used[role].add(name)

    for role in ("receivers", "processors", "exporters"):
        for name in sections[role]:
            if name not in used[role]:
                problems.append(f"{role[:-1]} {name!r} is defined but no pipeline uses it")
    for name in sections["connectors"]:
        if name not in used["exporters"]:
            problems.append(f"connector {name!r} is never used as an exporter (its input side)")
        if name not in used["receivers"]:
            problems.append(f"connector {name!r} is never used as a receiver (its output side)")

    enabled = list(service.get("extensions") or [])
    for name in enabled:
        if name not in sections["extensions"]:
            problems.append(f"service.extensions: {name!r} is not defined")
    for name in sections["extensions"]:
        if name not in enabled:
            problems.append(f"extension {name!r} is defined but not in service.extensions")
    return problems


def compose_port_problems(compose_path: Path, collector_path: Path) -> list[str]:
    """The collector's OTLP ports are published by Compose and are the ones the app's endpoint and protocol use."""
    problems: list[str] = []
    services = load_yaml(compose_path).get("services") or {}
    collector = services.get(COMPOSE_COLLECTOR_SERVICE)
    app = services.get(COMPOSE_APP_SERVICE)
    if collector is None or app is None:
        return [f"compose lacks service {COMPOSE_COLLECTOR_SERVICE!r} or {COMPOSE_APP_SERVICE!r}"]
    ports = otlp_ports(load_yaml(collector_path))
    if not ports:
        problems.append(f"{collector_path.name} has no otlp receiver")
    published = published_container_ports(collector)
    for proto, port in sorted(ports.items()):
        if port not in published:
            problems.append(f"OTLP {proto} port {port} is not published by compose service "
                            f"{COMPOSE_COLLECTOR_SERVICE!r} (publishes {sorted(published)})")

    env = compose_environment(app)
    try:
        cfg = TelemetryConfig.from_env(env)
    except ConfigurationError as exc:
        return problems + [f"app environment fails nexus-otel's validation: {exc}"]
    signals = [("TRACES", cfg.traces_exporters, cfg.traces_protocol),
               ("METRICS", cfg.metrics_exporters, cfg.metrics_protocol),
               ("LOGS", cfg.logs_exporters, cfg.logs_protocol)]
    if not any("otlp" in exporters for _, exporters, _ in signals):
        problems.append("the app exports nothing over OTLP (OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER)")
    if "otlp" not in cfg.logs_exporters:
        problems.append("the app does not export its log records over OTLP (OTEL_LOGS_EXPORTER)")
    for signal, exporters, protocol in signals:
        if "otlp" not in exporters:
            continue
        var = f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"
        if not env.get(var, "").strip():
            var = "OTEL_EXPORTER_OTLP_ENDPOINT"
        endpoint = env.get(var, "").strip()
        if not endpoint:
            problems.append(f"{signal.lower()} go over OTLP but no endpoint is set")
            continue
        url = urlsplit(endpoint)
        if url.hostname != COMPOSE_COLLECTOR_SERVICE:
            problems.append(f"{var}={endpoint} does not name the collector service {COMPOSE_COLLECTOR_SERVICE!r}")
        receiver_proto = SDK_PROTOCOL_TO_RECEIVER[protocol]
        if receiver_proto not in ports:
            problems.append(f"{signal.lower()} use {protocol} but the collector's otlp receiver "
                            f"has no {receiver_proto} protocol")
        elif url.port != ports[receiver_proto]:
            problems.append(f"{var}={endpoint} with protocol {protocol}: port should be "
                            f"{ports[receiver_proto]} (the collector's OTLP {receiver_proto} port)")
    return problems


def logs_destination_problems(config: dict, host: str) -> list[str]:
    """The config's logs pipelines end in VictoriaLogs' OTLP endpoint on ``host`` (or route on to samplers that do).

    A pipeline's exporters are an otlp_http exporter whose endpoint is VictoriaLogs' OTLP base URL, or the
    load_balancing exporter (the gateway, whose samplers export); no logs pipeline sees a tail sampler.
    """
    problems: list[str] = []
    exporters = config.get("exporters") or {}
    pipelines = {pid: p or {} for pid, p in ((config.get("service") or {}).get("pipelines") or {}).items()
                 if component_type(pid) == "logs"}
    if not pipelines:
        return ["no logs pipeline"]
    for pid, pipeline in pipelines.items():
        if any(component_type(p) == "tail_sampling" for p in pipeline.get("processors") or []):
            problems.append(f"pipeline {pid!r} samples log records (tail_sampling)")
        for name in pipeline.get("exporters") or []:
            kind = component_type(name)
            if kind == "load_balancing":
                continue
            if kind != "otlp_http":
                problems.append(f"pipeline {pid!r}: exporter {name!r} is not an otlp_http exporter to VictoriaLogs")
                continue
            url = urlsplit(str((exporters.get(name) or {}).get("endpoint", "")))
            if (url.scheme, url.hostname, url.port, url.path) != ("http", host, VICTORIALOGS_PORT,
                                                                    VICTORIALOGS_OTLP_PATH):
                problems.append(f"pipeline {pid!r}: exporter {name!r} sends to {url.geturl()!r}, not "
                                f"http://{host}:{VICTORIALOGS_PORT}{VICTORIALOGS_OTLP_PATH}")
    return problems


def _index(docs: list[dict]) -> dict[tuple[str, str, str], dict]:
    return {(d["kind"], d.get("metadata", {}).get("namespace", ""), d["metadata"]["name"]): d for d in docs}


def _pod_spec(workload: dict) -> dict:
    """The pod spec of a Deployment or StatefulSet."""
    return workload["spec"]["template"]["spec"]


def _selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _mounted_collector_config(deployment: dict, objects: dict) -> tuple[dict | None, list[str]]:
    """The collector config a Deployment runs: from its --config argument through the mounted ConfigMap."""
    ns = deployment["metadata"].get("namespace", "")
    name = deployment["metadata"]["name"]
    pod = _pod_spec(deployment)
    container = pod["containers"][0]
    args = list(container.get("args") or []) + list(container.get("command") or [])
    config_args = [a.split("=", 1)[1] for a in args if str(a).startswith("--config=")]
    if len(config_args) != 1:
        return None, [f"deployment {name}: expected one --config=PATH argument, found {config_args}"]
    config_path = config_args[0]
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        prefix = mount["mountPath"].rstrip("/") + "/"
        if not config_path.startswith(prefix):
            continue
        cm_name = (volumes.get(mount["name"], {}).get("configMap") or {}).get("name")
        cm = objects.get(("ConfigMap", ns, cm_name))
        key = config_path[len(prefix):]
        if cm is None or key not in (cm.get("data") or {}):
            return None, [f"deployment {name}: {config_path} is not a key of a ConfigMap in these manifests"]
        return with_env_defaults(yaml.safe_load(cm["data"][key])), []
    return None, [f"deployment {name}: nothing is mounted at {config_path}"]


def _container_port(workload: dict, target) -> int | None:
    """The containerPort a Service's targetPort or a probe's port (a name or a number) reaches."""
    for port in _pod_spec(workload)["containers"][0].get("ports") or []:
        if target in (port.get("name"), port["containerPort"]):
            return port["containerPort"]
    return None


def k8s_problems(k8s_dir: Path, deploy_dir: Path) -> list[str]:
    """ConfigMaps embed the deploy/ configs; Services, probes and the gateway's DNS resolver reach the right ports.

    Services of the collectors reach an OTLP receiver port; a Service of any other workload (the app's
    StatefulSet) reaches a port its container declares, as do its probes; a StatefulSet's serviceName
    is a headless Service that selects its pods.
    """
    problems: list[str] = []
    docs = [d for name in K8S_MANIFESTS for d in load_docs(k8s_dir / name)]
    objects = _index(docs)
    for doc in docs:
        if doc["kind"] != "Namespace" and doc["metadata"].get("namespace") != NAMESPACE:
            problems.append(f"{doc['kind']} {doc['metadata']['name']} is not in namespace {NAMESPACE}")
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    workloads = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet")}
    configs: dict[str, dict] = {}
    for dep_name, config_file in K8S_COLLECTORS.items():
        dep = deployments.get(dep_name)
        if dep is None:
            problems.append(f"no Deployment {dep_name}")
            continue
        config, found = _mounted_collector_config(dep, objects)
        problems += found
        if config is None:
            continue
        configs[dep_name] = config
        if config != load_yaml(deploy_dir / config_file):
            problems.append(f"deployment {dep_name}: its ConfigMap differs from deploy/{config_file}")
        health = health_check_port(config)
        container = _pod_spec(dep)["containers"][0]
        for probe in ("livenessProbe", "readinessProbe"):
            port = ((container.get(probe) or {}).get("httpGet") or {}).get("port")
            if _container_port(dep, port) != health or health is None:
                problems.append(f"deployment {dep_name}: {probe} port {port!r} is not the "
                                f"health_check port {health}")

    # Probes of the other workloads reach a port their container declares.
    for name, workload in workloads.items():
        if name in K8S_COLLECTORS:
            continue
        container = _pod_spec(workload)["containers"][0]
        for probe in ("livenessProbe", "readinessProbe"):
            port = ((container.get(probe) or {}).get("httpGet") or {}).get("port")
            if _container_port(workload, port) is None:
                problems.append(f"{workload['kind'].lower()} {name}: {probe} port {port!r} is not a container port")

    # Every Service port reaches an OTLP port of the collector it selects, or a declared port of the app.
    services = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs if d["kind"] == "Service"}
    for (_ns, svc_name), svc in services.items():
        backends = [n for n, d in workloads.items()
                    if _selects(svc["spec"].get("selector") or {}, d["spec"]["template"]["metadata"]["labels"])]
        if len(backends) != 1:
            problems.append(f"service {svc_name} selects {len(backends)} Deployments or StatefulSets, expected one")
            continue
        dep_name = backends[0]
        if dep_name not in K8S_COLLECTORS:
            for port in svc["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                if _container_port(workloads[dep_name], target) is None:
                    problems.append(f"service {svc_name} port {port['port']} goes to {target!r}, "
                                    f"not a container port of {dep_name}")
            continue
        receiver_ports = set(otlp_ports(configs.get(dep_name, {})).values())
        for port in svc["spec"]["ports"]:
            target = _container_port(deployments[dep_name], port.get("targetPort", port["port"]))
            if target not in receiver_ports:
                problems.append(f"service {svc_name} port {port['port']} goes to container port {target}, "
                                f"not an OTLP receiver port of {dep_name} {sorted(receiver_ports)}")

    # A StatefulSet's pods get their DNS names from the headless Service its serviceName names.
    for name, workload in workloads.items():
        if workload["kind"] != "StatefulSet":
            continue
        governing = services.get((workload["metadata"].get("namespace", ""), workload["spec"].get("serviceName")))
        if governing is None:
            problems.append(f"statefulset {name}: serviceName {workload['spec'].get('serviceName')!r} "
                            f"is not a Service in these manifests")
        elif governing["spec"].get("clusterIP") != "None" or not _selects(
                governing["spec"].get("selector") or {}, workload["spec"]["template"]["metadata"]["labels"]):
            problems.append(f"statefulset {name}: its serviceName {governing['metadata']['name']} must be "
                            f"headless (clusterIP: None) and select its pods")

    # The gateway's load_balancing exporter finds the samplers through a headless Service.
    gateway = configs.get("otel-gateway", {})
    lb = {n: s for n, s in (gateway.get("exporters") or {}).items() if component_type(n) == "load_balancing"}
    if not lb:
        problems.append("the gateway config has no load_balancing exporter")
    for name, settings in lb.items():
        dns = ((settings or {}).get("resolver") or {}).get("dns")
        if not dns:
            problems.append(f"exporter {name}: no dns resolver")
            continue
        labels = dns["hostname"].split(".")
        svc_name = labels[0]
        ns = labels[1] if len(labels) > 1 else NAMESPACE
        if labels[2:] not in ([], ["svc"], ["svc", "cluster", "local"]):
            problems.append(f"exporter {name}: {dns['hostname']} is not a Service DNS name")
        svc = services.get((ns, svc_name))
        if svc is None:
            problems.append(f"exporter {name}: no Service {svc_name} in namespace {ns} "
                            f"(have {sorted(services)})")
            continue
        if svc["spec"].get("clusterIP") != "None":
            problems.append(f"service {svc_name} must be headless (clusterIP: None) for the dns resolver")
        port = int(dns.get("port", 4317))
        if port not in [p["port"] for p in svc["spec"]["ports"]]:
            problems.append(f"exporter {name}: port {port} is not a port of service {svc_name}")
        sampler_grpc = otlp_ports(configs.get("otel-sampler", {})).get("grpc")
        if port != sampler_grpc:
            problems.append(f"exporter {name}: port {port} is not the sampler's OTLP gRPC port {sampler_grpc}")
    return problems


def kubernetes_schema_problems(paths: list[Path]) -> list[str]:
    """Strict validation of every resource against the Kubernetes API schemas kubernetes-validate ships."""
    import kubernetes_validate
    problems = []
    for path in paths:
        for doc in load_docs(path):
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in getattr(exc, "path", []) or [])
                problems.append(f"{path.name}: {doc['kind']} {doc['metadata']['name']}: {where}: {exc.message}")
    return problems


def check_compose_schema(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        check=False, capture_output=True, text=True, timeout=120,
    )


def _copy_deploy(tmp_path: Path) -> Path:
    """A copy of deploy/ (collector configs, compose file, manifests, the Dockerfile the app check reads) to break."""
    dest = tmp_path / "deploy"
    shutil.copytree(DEPLOY, dest)
    return dest


def _edit(path: Path, old: str, new: str, *, once: bool = False) -> None:
    """Replace ``old`` (every occurrence; with ``once``, it must occur exactly once) by ``new``."""
    text = path.read_text()
    if once:
        assert text.count(old) == 1, f"{old!r} is not in {path} exactly once"
    else:
        assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


# --- the real files ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", COLLECTOR_CONFIGS)
def test_collector_pipelines_are_consistent(name):
    """Pipelines name only defined components of known types, all of them used, connectors both ways."""
    assert pipeline_problems(load_yaml(DEPLOY / name)) == []


@pytest.mark.parametrize("name", COLLECTOR_CONFIGS)
def test_collector_otlp_receivers_listen_on_all_interfaces(name):
    """Each OTLP endpoint is explicit and binds 0.0.0.0 (the default, localhost, is unreachable from outside)."""
    for rname, settings in (load_yaml(DEPLOY / name).get("receivers") or {}).items():
        if component_type(rname) == "otlp":
            for proto, ps in (settings.get("protocols") or {}).items():
                assert str((ps or {}).get("endpoint", "")).startswith("0.0.0.0:"), (name, rname, proto)


def test_compose_ports_match_collector_and_app_endpoint():
    """Compose publishes the collector's OTLP ports, and the app's endpoint port fits its protocol."""
    assert compose_port_problems(DEPLOY / "compose.yaml", DEPLOY / "otel-collector.yaml") == []


def test_compose_app_environment_passes_nexus_otel_validation():
    """The app's OTEL_* settings in compose parse with TelemetryConfig.from_env and export traces over OTLP."""
    env = compose_environment(load_yaml(DEPLOY / "compose.yaml")["services"][COMPOSE_APP_SERVICE])
    assert any(k.startswith("OTEL_") for k in env)
    cfg = TelemetryConfig.from_env(env)
    assert cfg.service_name and "otlp" in cfg.traces_exporters


@pytest.mark.parametrize(("name", "host"), [
    ("otel-collector.yaml", COMPOSE_LOGS_SERVICE),
    ("otel-collector-sampler.yaml", f"victorialogs.{NAMESPACE}.svc.cluster.local"),
    ("otel-collector-gateway.yaml", ""),
])
def test_collector_logs_pipelines_end_in_victorialogs(name, host):
    """Each config has an unsampled logs pipeline to VictoriaLogs' OTLP endpoint (the gateway's via the samplers)."""
    config = load_yaml(DEPLOY / name)
    assert logs_destination_problems(config, host) == []
    if name == "otel-collector-gateway.yaml":
        (logs,) = [p for pid, p in config["service"]["pipelines"].items() if component_type(pid) == "logs"]
        assert logs["exporters"] == ["load_balancing"]
        assert config["exporters"]["load_balancing"]["routing_key"] == "traceID"


def test_compose_runs_victorialogs_where_the_collector_sends_log_records():
    """Compose runs VictoriaLogs on its port with a volume for its data; the Collector names it and starts after it."""
    services = load_yaml(DEPLOY / "compose.yaml")["services"]
    logs = services[COMPOSE_LOGS_SERVICE]
    data_dir = next(a.split("=", 1)[1] for a in logs["command"] if a.startswith("-storageDataPath="))
    assert any(v.endswith(f":{data_dir}") and not v.startswith((".", "/")) for v in logs["volumes"]), logs["volumes"]
    assert f"-httpListenAddr=:{VICTORIALOGS_PORT}" in logs["command"]
    assert VICTORIALOGS_PORT in published_container_ports(logs)
    collector = services[COMPOSE_COLLECTOR_SERVICE]
    assert COMPOSE_LOGS_SERVICE in collector["depends_on"]
    endpoint = compose_environment(collector)["VICTORIALOGS_ENDPOINT"]
    config = load_yaml(DEPLOY / "otel-collector.yaml")
    config["exporters"]["otlp_http/victorialogs"]["endpoint"] = endpoint
    assert logs_destination_problems(config, COMPOSE_LOGS_SERVICE) == []


def test_compose_mounts_the_collector_config_it_runs():
    """The collector service mounts deploy/otel-collector.yaml where its --config argument points."""
    svc = load_yaml(DEPLOY / "compose.yaml")["services"][COMPOSE_COLLECTOR_SERVICE]
    config = [c.split("=", 1)[1] for c in svc["command"] if c.startswith("--config=")]
    assert f"./otel-collector.yaml:{config[0]}:ro" in svc["volumes"]


def test_compose_file_matches_compose_spec_schema():
    """check-jsonschema's vendored Compose specification schema accepts deploy/compose.yaml."""
    result = check_compose_schema(DEPLOY / "compose.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_manifests_validate_strictly():
    """Every resource in deploy/kubernetes validates strictly against the Kubernetes API schemas."""
    assert kubernetes_schema_problems([K8S / n for n in K8S_MANIFESTS]) == []


def test_kubernetes_wiring_matches_collector_configs():
    """ConfigMaps equal the deploy/ configs; probes, Services and the gateway's DNS resolver hit the right ports."""
    assert k8s_problems(K8S, DEPLOY) == []


def test_kubernetes_shape():
    """Gateway: 2 replicas, ClusterIP otel-gateway on 4317/4318; sampler: 3 replicas behind a headless Service."""
    objects = _index([d for n in K8S_MANIFESTS for d in load_docs(K8S / n)])
    assert ("Namespace", "", NAMESPACE) in objects
    images = set()
    for name, replicas in (("otel-gateway", 2), ("otel-sampler", 3)):
        dep = objects[("Deployment", NAMESPACE, name)]
        assert dep["spec"]["replicas"] == replicas
        container = _pod_spec(dep)["containers"][0]
        images.add(container["image"])
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert images == {"otel/opentelemetry-collector-contrib:0.161.0"}
    gateway = objects[("Service", NAMESPACE, "otel-gateway")]["spec"]
    assert gateway.get("type", "ClusterIP") == "ClusterIP"
    assert sorted(p["port"] for p in gateway["ports"]) == [4317, 4318]
    headless = objects[("Service", NAMESPACE, "otel-sampler-headless")]["spec"]
    assert headless["clusterIP"] == "None" and [p["port"] for p in headless["ports"]] == [4317]


def test_kubernetes_samplers_send_log_records_to_the_victorialogs_service():
    """The sampler's default VictoriaLogs host is the headless Service of the VictoriaLogs StatefulSet, on its port."""
    objects = _index([d for n in K8S_MANIFESTS for d in load_docs(K8S / n)])
    sampler = load_yaml(DEPLOY / "otel-collector-sampler.yaml")
    url = urlsplit(sampler["exporters"]["otlp_http/victorialogs"]["endpoint"])
    svc_name, ns = url.hostname.split(".")[:2]
    service = objects[("Service", ns, svc_name)]
    workload = objects[("StatefulSet", NAMESPACE, "victorialogs")]
    assert workload["spec"]["serviceName"] == svc_name and service["spec"]["clusterIP"] == "None"
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == url.port]
    assert _container_port(workload, port["targetPort"]) == VICTORIALOGS_PORT
    container = _pod_spec(workload)["containers"][0]
    data_dir = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("-storageDataPath="))
    assert [m["name"] for m in container["volumeMounts"] if m["mountPath"] == data_dir] == [
        t["metadata"]["name"] for t in workload["spec"]["volumeClaimTemplates"]]


def test_kustomization_lists_the_manifests_and_documents_the_endpoint():
    """kustomization.yaml lists every manifest, and its documented app endpoint reaches the gateway's OTLP/HTTP port."""
    kustomization = load_yaml(K8S / "kustomization.yaml")
    assert kustomization["namespace"] == NAMESPACE
    assert sorted(kustomization["resources"]) == sorted(K8S_MANIFESTS)
    assert sorted(p.name for p in K8S.glob("*.yaml")) == sorted((*K8S_MANIFESTS, "kustomization.yaml"))
    text = (K8S / "kustomization.yaml").read_text()
    assert "kubectl apply -k deploy/kubernetes" in text
    env = dict(re.findall(r"(OTEL_EXPORTER_OTLP_(?:ENDPOINT|PROTOCOL))=(\S+)", text))
    cfg = TelemetryConfig.from_env(env)
    url = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert url.hostname == f"otel-gateway.{NAMESPACE}"
    service = _index(load_docs(K8S / "otel-gateway.yaml"))[("Service", NAMESPACE, "otel-gateway")]
    assert url.port in [p["port"] for p in service["spec"]["ports"]]
    gateway_ports = otlp_ports(load_yaml(DEPLOY / "otel-collector-gateway.yaml"))
    assert url.port == gateway_ports[SDK_PROTOCOL_TO_RECEIVER[cfg.traces_protocol]]


def _kustomize_command() -> list[str]:
    """``kubectl kustomize`` where kubectl is installed, else the same renderer built by
    scripts/build-binaries.sh (``kustomize build``: kubectl's kustomize is that code)."""
    if shutil.which("kubectl") is not None:
        return ["kubectl", "kustomize"]
    return [str(require_binary("kustomize")), "build"]


def test_kustomize_renders_every_resource_in_the_namespace():
    """`kubectl kustomize` (offline) renders all twelve resources, each in the observability namespace."""
    result = subprocess.run([*_kustomize_command(), str(K8S)],
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert len(docs) == 12
    assert all(d["metadata"].get("namespace") == NAMESPACE for d in docs if d["kind"] != "Namespace")


# --- the checkers catch broken copies ----------------------------------------------------------

@pytest.mark.parametrize(("old", "new", "expected"), [
    ("exporters: [otlp_grpc/jaeger]", "exporters: [otlp_grpc/jaegr]", "exporter 'otlp_grpc/jaegr' is not defined"),
    ("exporters: [otlp_grpc/jaeger]", "exporters: [otlp_grpc/jaegr]",
     "exporter 'otlp_grpc/jaeger' is defined but no pipeline"),
    ("receivers: [otlp, span_metrics]", "receivers: [otlp]", "connector 'span_metrics' is never used as a receiver"),
    ("exporters: [span_metrics]", "exporters: [prometheus]", "connector 'span_metrics' is never used as an exporter"),
    ("redaction, tail_sampling, batch]", "redaction, tail_sample, batch]", "processor 'tail_sample' is not defined"),
    ("  batch:\n    send_batch_size", "  batchy:\n    send_batch_size",
     "pipeline 'traces': processor 'batch' is not defined"),
    ("extensions: [health_check]", "extensions: [health_check, pprof]", "'pprof' is not defined"),
])
def test_pipeline_check_catches_a_broken_copy(tmp_path, old, new, expected):
    """A misspelt, unused or one-sided component in a copy of otel-collector.yaml is reported."""
    copy = _copy_deploy(tmp_path) / "otel-collector.yaml"
    _edit(copy, old, new)
    problems = pipeline_problems(load_yaml(copy))
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("processors: [memory_limiter, attributes/redact, redaction, batch]\n      exporters: [otlp_http",
     "processors: [memory_limiter, attributes/redact, redaction, tail_sampling, batch]\n      exporters: [otlp_http",
     "samples log records"),
    ("victorialogs:9428/insert/opentelemetry}", "victorialogs:9428/insert/jsonline}", "not http://victorialogs:9428"),
    ("exporters: [otlp_http/victorialogs]", "exporters: [otlp_grpc/jaeger]", "is not an otlp_http exporter"),
])
def test_logs_check_catches_a_broken_copy(tmp_path, old, new, expected):
    """A copy of otel-collector.yaml whose logs go through tail sampling or elsewhere than VictoriaLogs is reported."""
    copy = _copy_deploy(tmp_path) / "otel-collector.yaml"
    _edit(copy, old, new, once=True)
    problems = logs_destination_problems(load_yaml(copy), COMPOSE_LOGS_SERVICE)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(("file", "old", "new", "expected"), [
    ("compose.yaml", "OTEL_LOGS_EXPORTER: otlp", "OTEL_LOGS_EXPORTER: console", "does not export its log records"),
    ("compose.yaml", "http://otel-collector:4318", "http://otel-collector:4317", "port should be 4318"),
    ("compose.yaml", "OTEL_EXPORTER_OTLP_PROTOCOL: http/protobuf", "OTEL_EXPORTER_OTLP_PROTOCOL: grpc",
     "port should be 4317"),
    ("compose.yaml", "http://otel-collector:4318", "http://collector:4318", "does not name the collector"),
    ("compose.yaml", '"127.0.0.1:4318:4318"', '"127.0.0.1:4318:4319"', "port 4318 is not published"),
    ("otel-collector.yaml", "OTELCOL_OTLP_HTTP_PORT:-4318", "OTELCOL_OTLP_HTTP_PORT:-4320",
     "port 4320 is not published"),
    ("compose.yaml", "OTEL_EXPORTER_OTLP_PROTOCOL: http/protobuf", "OTEL_EXPORTER_OTLP_PROTOCOL: http/json",
     "fails nexus-otel's validation"),
])
def test_port_check_catches_a_broken_copy(tmp_path, file, old, new, expected):
    """A copy whose app endpoint, protocol or published ports disagree with the collector is reported."""
    deploy = _copy_deploy(tmp_path)
    _edit(deploy / file, old, new)
    problems = compose_port_problems(deploy / "compose.yaml", deploy / "otel-collector.yaml")
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(("file", "old", "new", "expected"), [
    ("kubernetes/otel-sampler.yaml", "name: otel-sampler-headless", "name: otel-samplers",
     "no Service otel-sampler-headless in namespace observability"),
    ("kubernetes/otel-sampler.yaml", "  clusterIP: None\n", "", "must be headless"),
    ("kubernetes/otel-sampler.yaml", "OTELCOL_OTLP_GRPC_PORT:-4317", "OTELCOL_OTLP_GRPC_PORT:-4319",
     "not the sampler's OTLP gRPC port 4319"),
    ("otel-collector-gateway.yaml", "send_batch_size: 8192", "send_batch_size: 4096",
     "its ConfigMap differs from deploy/otel-collector-gateway.yaml"),
    ("kubernetes/otel-gateway.yaml", "              port: 13133", "              port: 13134",
     "livenessProbe port 13134"),
    ("kubernetes/otel-gateway.yaml", "targetPort: otlp-http", "targetPort: 8889",
     "port 4318 goes to container port 8889"),
    ("kubernetes/app.yaml", "serviceName: nexus-demo-headless", "serviceName: nexus-demo",
     "serviceName nexus-demo must be headless"),
    ("kubernetes/victorialogs.yaml", "      targetPort: http\n      protocol: TCP\n      appProtocol: http",
     "      targetPort: 9429\n      protocol: TCP\n      appProtocol: http",
     "service victorialogs port 9428 goes to 9429, not a container port of victorialogs"),
    ("kubernetes/app.yaml", "serviceName: nexus-demo-headless", "serviceName: nexus-demo-pods",
     "serviceName 'nexus-demo-pods' is not a Service"),
    ("kubernetes/app.yaml", "  type: ClusterIP\n  selector:\n    app.kubernetes.io/name: nexus-demo\n  ports:\n"
     "    - name: http\n      port: 8000\n      targetPort: http",
     "  type: ClusterIP\n  selector:\n    app.kubernetes.io/name: nexus-demo\n  ports:\n"
     "    - name: http\n      port: 8000\n      targetPort: web",
     "service nexus-demo port 8000 goes to 'web', not a container port of nexus-demo"),
    ("kubernetes/app.yaml", "              port: http\n            initialDelaySeconds: 5",
     "              port: 8080\n            initialDelaySeconds: 5", "livenessProbe port 8080 is not a container port"),
])
def test_kubernetes_check_catches_a_broken_copy(tmp_path, file, old, new, expected):
    """A copy whose Service names, ports, probes or ConfigMap content drift is reported."""
    deploy = _copy_deploy(tmp_path)
    _edit(deploy / file, old, new)
    problems = k8s_problems(deploy / "kubernetes", deploy)
    assert any(expected in p for p in problems), problems


def test_validators_reject_broken_copies(tmp_path):
    """check-jsonschema rejects a misspelt Compose key; kubernetes-validate (strict) a misspelt field."""
    deploy = _copy_deploy(tmp_path)
    _edit(deploy / "compose.yaml", "    depends_on:\n      - jaeger", "    depend_on:\n      - jaeger")
    result = check_compose_schema(deploy / "compose.yaml")
    assert result.returncode != 0 and "depend_on" in result.stdout + result.stderr
    _edit(deploy / "kubernetes/otel-gateway.yaml", "  replicas: 2", "  replica: 2")
    problems = kubernetes_schema_problems([deploy / "kubernetes/otel-gateway.yaml"])
    assert any("'replica' was unexpected" in p for p in problems), problems
