"""Every image tag under deploy/ is a version the test suite runs.

The Collector, Jaeger and VictoriaLogs images match the binaries built from
deploy/versions.env and deploy/collector/builder-config.yaml (the tests run
those); Prometheus matches the Debian prometheus the tests run; Python matches
the interpreter; Go (the collector image's build stage) matches the toolchain
that builds the binary here. The app's image (deploy/Dockerfile, run by
deploy/kubernetes/app.yaml) is tagged with the version of nexus-otel the
tests run. Grafana is not run by the tests: its tag is GRAFANA_VERSION, no
older than the Grafana release whose dashboard schema (grafana-foundation-sdk)
the dashboards are validated against, nor than the first release that follows
the provisioned trace-to-logs link to VictoriaLogs.
"""

from __future__ import annotations

import mmap
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from .deploy_servers import DEPLOY, REPO, binary_paths, require_binary, run_binary, versions

COLLECTOR_IMAGES = ("otel/opentelemetry-collector-contrib", "otelcol-nexus")
APP_IMAGE = "nexus-otel-demo"  # what deploy/Dockerfile builds
VICTORIALOGS_IMAGE = "victoriametrics/victoria-logs"
DATASOURCES = REPO / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
# Grafana's Jaeger (and Tempo) data source links a span to VictoriaLogs (tracesToLogsV2) from this release on.
GRAFANA_TRACES_TO_VICTORIALOGS = (12, 2, 0)


def image_references() -> list[tuple[str, str]]:
    """(file, image) for every image in compose, the Kubernetes manifests and the Dockerfiles."""
    refs = []
    for path in sorted(DEPLOY.rglob("*")):
        rel = str(path.relative_to(DEPLOY))
        if path.suffix in (".yaml", ".yml"):
            for doc in yaml.safe_load_all(path.read_text()):
                refs += [(rel, image) for image in _images_in(doc)]
        elif path.name == "Dockerfile":
            refs += [(rel, m) for m in re.findall(r"^FROM\s+(\S+)", path.read_text(), re.M)]
    return refs


def _images_in(node) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "image" and isinstance(v, str)] + [
            i for v in node.values() for i in _images_in(v)]
    if isinstance(node, list):
        return [i for v in node for i in _images_in(v)]
    return []


def _tag(image: str) -> str:
    assert ":" in image.rsplit("/", 1)[-1], f"{image} has no tag: pin a version"
    return image.rsplit(":", 1)[1]


def test_every_image_is_pinned_to_a_version_the_tests_ran():
    v = versions()
    refs = image_references()
    assert refs
    seen = set()
    for where, image in refs:
        if image == "scratch" or " AS " in image.upper():
            continue
        name, tag = image.rsplit(":", 1)[0], _tag(image)
        seen.add(name)
        if name in COLLECTOR_IMAGES:
            assert tag == v["COLLECTOR_VERSION"], (where, image)
        elif name == "jaegertracing/jaeger":
            assert tag == v["JAEGER_VERSION"], (where, image)
        elif name == VICTORIALOGS_IMAGE:
            assert tag == "v" + v["VICTORIALOGS_VERSION"], (where, image)
        elif name == "prom/prometheus":
            assert tag == "v" + _debian_prometheus_version(), (where, image)
        elif name == "python":
            assert tag.startswith(f"{sys.version_info.major}.{sys.version_info.minor}"), (where, image)
        elif name == "golang":
            assert tag.startswith(_go_version()), (where, image)
        elif name == APP_IMAGE:
            project = metadata.version("nexus-otel")
            assert tag == project, (where, image, f"deploy/Dockerfile builds nexus-otel {project}")
        elif name == "grafana/grafana":
            assert tag == v["GRAFANA_VERSION"], (where, image)
        else:
            pytest.fail(f"{where}: {image}: no test runs this image's version; add one or drop the image")
    assert {"otel/opentelemetry-collector-contrib", "jaegertracing/jaeger", VICTORIALOGS_IMAGE} <= seen


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def test_grafana_is_new_enough_for_the_dashboards_and_the_trace_to_logs_link():
    """GRAFANA_VERSION reads the dashboards' schema and follows the provisioned Jaeger -> VictoriaLogs link."""
    grafana = _release(versions()["GRAFANA_VERSION"])
    sdk = _grafana_sdk_version().split("!")[-1]
    assert grafana >= _release(sdk), f"dashboards are validated against Grafana {sdk}"
    datasources = {ds["uid"]: ds for ds in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    links = [ds for ds in datasources.values() if (ds.get("jsonData") or {}).get("tracesToLogsV2")]
    assert links, "no data source links traces to logs"
    for ds in links:
        target = datasources[ds["jsonData"]["tracesToLogsV2"]["datasourceUid"]]
        if target["type"] == "victoriametrics-logs-datasource":
            assert grafana >= GRAFANA_TRACES_TO_VICTORIALOGS, (
                f"{ds['name']} links traces to VictoriaLogs, which Grafana follows from 12.2.0 on")


def _debian_prometheus_version() -> str:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed: run scripts/test.sh")
    out = subprocess.run(["prometheus", "--version"], capture_output=True, text=True, timeout=30)
    return re.search(r"version (\d+\.\d+\.\d+)", out.stdout + out.stderr).group(1)


def _grafana_sdk_version() -> str:
    """The grafana-foundation-sdk the dashboards are validated against: the installed one, else the dev extra's pin
    (on Python 3.10, where no release of it installs)."""
    try:
        return metadata.version("grafana-foundation-sdk")
    except metadata.PackageNotFoundError:
        pyproject = (REPO / "pyproject.toml").read_text()
        match = re.search(r'"grafana-foundation-sdk==([^;"]+)', pyproject)
        assert match, "pyproject.toml's dev extra pins no grafana-foundation-sdk"
        return match.group(1).strip()


_BUILDINFO_MAGIC = b"\xff Go buildinf:"


def go_buildinfo(binary: Path) -> tuple[str, str]:
    """(Go version, module lines) a Go binary carries, as ``go version -m`` prints them, read without Go: the
    ``.go.buildinfo`` blob (the magic, pointer size, flags, then two length-prefixed strings; Go 1.18 and later)."""
    with open(binary, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        at = data.find(_BUILDINFO_MAGIC)
        assert at >= 0 and data[at + 15] & 2, f"{binary} has no Go build information of Go 1.18 or later"
        position, strings = at + 32, []
        for _ in range(2):
            length = shift = 0
            while True:  # an unsigned varint
                byte = data[position]
                position += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if byte < 0x80:
                    break
            strings.append(bytes(data[position:position + length]))
            position += length
    version, modules = strings
    return version.decode(), modules[16:-16].decode()  # the module lines sit between two 16-byte sentinels


def _go_version() -> str:
    """The Go release (``1.26``) the Collector the tests run was built with (read from the cached binary), else the
    installed Go's; neither: a skip naming both (a failure under CI=true)."""
    otelcol = binary_paths()["otelcol"]
    if otelcol.is_file():
        version = go_buildinfo(otelcol)[0]
    elif shutil.which("go") is not None:
        version = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, timeout=30).stdout
    else:
        message = (f"neither the Collector's binary ({otelcol}) nor Go is here to read the Go version from: "
                   "run scripts/test.sh")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return ".".join(version.strip().removeprefix("go").split(".")[:2])


def test_the_built_binaries_are_the_versions_the_images_carry():
    v = versions()
    collector = run_binary("otelcol", "--version")
    assert collector.returncode == 0 and v["COLLECTOR_VERSION"] in collector.stdout, collector
    jaeger = run_binary("jaeger", "version")
    assert jaeger.returncode == 0 and f'"gitVersion":"v{v["JAEGER_VERSION"]}"' in jaeger.stdout, jaeger
    victorialogs = run_binary("victorialogs", "-version")
    assert victorialogs.returncode == 0 and victorialogs.stdout.strip() == f"victoria-logs-v{v['VICTORIALOGS_VERSION']}"
    modules = go_buildinfo(require_binary("victorialogs"))[1]  # the module it was built from, as Go recorded it
    assert f"mod\t{v['VICTORIALOGS_MODULE']}\tv{v['VICTORIALOGS_VERSION']}\t" in modules, modules


def test_the_manifest_pins_every_module_at_one_release():
    v = versions()
    manifest = yaml.safe_load((DEPLOY / "collector" / "builder-config.yaml").read_text())
    assert manifest["dist"]["version"] == v["COLLECTOR_VERSION"]
    modules = [entry["gomod"] for section in ("receivers", "processors", "exporters", "connectors",
                                              "extensions", "providers") for entry in manifest[section]]
    for module in modules:
        path, version = module.split()
        if path.startswith("go.opentelemetry.io/collector/confmap/"):
            continue  # the stable (v1.x) modules of the same release
        assert version == f"v{v['COLLECTOR_VERSION']}", module
    stable = {m.split()[1] for m in modules if m.startswith("go.opentelemetry.io/collector/confmap/")}
    assert len(stable) == 1, stable


def test_the_collector_dockerfile_builds_the_manifest_with_the_tested_builder():
    v = versions()
    dockerfile = (DEPLOY / "collector" / "Dockerfile").read_text()
    assert f"go install {v['COLLECTOR_BUILDER_MODULE']}@v{v['COLLECTOR_VERSION']}" in dockerfile
    assert "builder --config builder-config.yaml" in dockerfile


def test_compose_runs_jaeger_with_the_tested_config():
    jaeger = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["jaeger"]
    config = next(a.split("=", 1)[1] for a in jaeger["command"] if a.startswith("--config="))
    assert f"./jaeger.yaml:{config}:ro" in jaeger["volumes"]
