"""The Helm chart in deploy/helm/quasar, rendered and linted by Helm's own Go engine (helm_python) and
validated object by object against the Kubernetes schemas (kubernetes_validate, offline).

Kinds from CRDs (ServiceMonitor, RayService) have no schema offline: their structure is asserted here.
The gateway's generated settings are loaded with `gateway.settings.load_settings`, exactly as
`quasar serve --config` loads them, so the chart can only produce settings the gateway accepts.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from engines import Offloader, build_engines
from engines.config import (
    EnginesConfig,
    OnnxEngineConfig,
    RayServeEngineConfig,
    TFServingEngineConfig,
    TritonEngineConfig,
    XGBoostEngineConfig,
)
from gateway.settings import GatewaySettings, load_settings
from quasar.demo import feed_product

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "quasar"
EXAMPLES = REPO / "deploy" / "helm" / "examples"
BAD_VALUES = Path(__file__).parent / "bad_values"
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"

KUBERNETES_VERSION = "1.33.0"
RELEASE = "feeds"
NAMESPACE = "ranking"
FULLNAME = f"{RELEASE}-quasar"
CRD_GROUPS = ("monitoring.coreos.com/", "ray.io/")
GPU = "nvidia.com/gpu"
FEED_SERVICE = "quasar.v1.FeedService"

# Everything on at once, so every template renders and validates somewhere: Triton and TF Serving on
# GPUs, a RayService, bundled Redis, custom workflows, a world from a claim, the ServiceMonitor.
EVERYTHING: dict[str, Any] = {
    "gateway": {
        "world": {"source": "persistentVolumeClaim", "persistentVolumeClaim": {"claimName": "quasar-world"}},
        "state": {"path": "/var/lib/quasar/state", "persistentVolumeClaim": {"claimName": "quasar-state"}},
        "workflows": {"feed.yaml": feed_product.workflow_document()},
        "serviceMonitor": {"enabled": True},
        "autoscaling": {"enabled": False},
        "replicas": 3,
        "env": [{"name": "QUASAR_MAX_IN_FLIGHT", "value": "128"}],
    },
    "triton": {"enabled": True, "modelRepository": {"volume": "persistentVolumeClaim", "claimName": "triton-models"}},
    "tfserving": {
        "enabled": True,
        "gpu": {"enabled": True},
        "image": {"tag": "2.16.1-gpu"},
        "modelRepository": {"volume": "hostPath", "hostPath": "/srv/models/tfserving"},
    },
    "ray": {
        "enabled": True,
        "workers": {"gpu": {"enabled": True}, "tolerations": [{"key": GPU, "operator": "Exists"}]},
    },
    "redis": {"mode": "bundled", "bundled": {"persistence": {"enabled": True, "storageClassName": "fast"}}},
}

VALUES: dict[str, Any] = {
    "defaults": {},
    "cpu": EXAMPLES / "values-cpu.yaml",
    "gpu": EXAMPLES / "values-gpu.yaml",
    "external-redis": EXAMPLES / "values-external-redis.yaml",
    "everything": EVERYTHING,
}


def load_values(name: str) -> dict[str, Any]:
    source = VALUES[name]
    if isinstance(source, Path):
        return helm.values_from_yaml(source.read_text())
    return copy.deepcopy(source)


@dataclass(frozen=True)
class Release:
    """One rendered release: its objects (template path kept) and the values it came from."""

    values: dict[str, Any]
    objects: list[tuple[str, dict[str, Any]]]
    notes: str

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [obj for _path, obj in self.objects if obj["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [obj for obj in self.all(kind) if obj["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}: {self.names()}"
        return found[0]

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        found = [obj for obj in self.all(kind) if obj["metadata"]["name"] == name]
        return found[0] if found else None

    def names(self) -> list[str]:
        return sorted(f"{obj['kind']}/{obj['metadata']['name']}" for _path, obj in self.objects)

    def settings_yaml(self) -> str:
        text = self.get("ConfigMap", f"{FULLNAME}-gateway")["data"]["settings.yaml"]
        assert isinstance(text, str)
        return text


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any]) -> Release:
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend((path, doc) for doc in yaml.safe_load_all(text) if doc)
    notes = next((text for path, text in manifests.items() if path.endswith("NOTES.txt")), "")
    return Release(values, objects, notes)


@pytest.fixture(scope="module", params=sorted(VALUES))
def release(request: pytest.FixtureRequest, chart: helm.Chart) -> Release:
    return render(chart, load_values(request.param))


@pytest.fixture(scope="module")
def releases(chart: helm.Chart) -> dict[str, Release]:
    return {name: render(chart, load_values(name)) for name in VALUES}


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def workloads(release: Release) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, pod spec) of every pod template the release creates, RayService groups included."""
    for kind in ("Deployment", "StatefulSet"):
        for obj in release.all(kind):
            yield obj["metadata"]["name"], pod_spec(obj)
    for ray in release.all("RayService"):
        cluster = ray["spec"]["rayClusterConfig"]
        yield f"{ray['metadata']['name']}/head", cluster["headGroupSpec"]["template"]["spec"]
        for group in cluster["workerGroupSpecs"]:
            yield f"{ray['metadata']['name']}/{group['groupName']}", group["template"]["spec"]


def gpus(spec: dict[str, Any]) -> int:
    total = 0
    for container in containers(spec):
        for section in ("requests", "limits"):
            total += int(container.get("resources", {}).get(section, {}).get(GPU, 0))
    return total


def service_port(release: Release, service: str, port_name: str) -> int:
    port: int = next(p["port"] for p in release.get("Service", service)["spec"]["ports"] if p["name"] == port_name)
    return port


def assert_engines_build(config: EnginesConfig) -> None:
    """Every configured engine constructs (constructors do no I/O), so its config fits its class."""
    offloader = Offloader(max_workers=1, max_pending=1)
    try:
        engines = build_engines(config, offloader)
        assert set(engines) == set(config.engines)
    finally:
        offloader.close()


def gateway_settings(release: Release, tmp_path: Path) -> GatewaySettings:
    path = tmp_path / "settings.yaml"
    path.write_text(release.settings_yaml())
    return load_settings(path)


# --- Helm's own checks -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUES))
def test_helm_lint_is_clean(name: str) -> None:
    report = helm.lint(
        CHART, load_values(name), strict=True, namespace=NAMESPACE, kube_version=f"v{KUBERNETES_VERSION}"
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"], report["errors"]
    assert not problems, problems


def test_every_example_and_the_defaults_pass_the_values_schema(chart: helm.Chart) -> None:
    assert chart.schema is not None
    for name in VALUES:
        chart.validate_schema(load_values(name))


@pytest.mark.parametrize("bad", sorted(BAD_VALUES.glob("*.yaml")), ids=lambda path: path.stem)
def test_bad_values_files_are_rejected_by_the_schema(chart: helm.Chart, bad: Path) -> None:
    text = bad.read_text()
    expected = re.search(r"^# expect: (.+)$", text, re.MULTILINE)
    assert expected, f"{bad.name} says what the error must name (# expect: ...)"
    values = helm.values_from_yaml(text)
    with pytest.raises(helm.HelmValuesError, match=re.escape(expected.group(1))):
        chart.validate_schema(values)
    with pytest.raises(helm.HelmValuesError):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(
            {"gateway": {"terminationGracePeriodSeconds": 15, "preStopSleepS": 5, "settings": {"drain_grace_s": 10}}},
            "must exceed preStopSleepS + settings.drain_grace_s",
            id="grace-period-too-short",
        ),
        pytest.param(
            {
                "gateway": {
                    "terminationGracePeriodSeconds": 90,
                    "settings": {"drain_grace_s": 60},
                    "probes": {"liveness": {"periodSeconds": 10, "failureThreshold": 3}},
                }
            },
            "must outlast settings.drain_grace_s",
            id="liveness-during-drain",
        ),
        pytest.param({"gateway": {"ranker": {"target": "triton"}}}, "triton.enabled is false", id="triton-off"),
        pytest.param({"gateway": {"firstPass": {"target": "ray"}}}, "ray.enabled is false", id="ray-off"),
        pytest.param({"redis": {"mode": "external"}}, "redis.external.url is required", id="redis-url"),
        pytest.param(
            {"gateway": {"world": {"source": "persistentVolumeClaim"}}},
            "persistentVolumeClaim.claimName is required",
            id="world-claim",
        ),
        pytest.param(
            {"tfserving": {"enabled": True}}, "tfserving.modelRepository.claimName is required", id="tfserving-models"
        ),
        pytest.param(
            {"gateway": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}, "exceeds maxReplicas", id="hpa-range"
        ),
    ],
)
def test_inconsistent_values_fail_rendering(chart: helm.Chart, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


# --- Kubernetes schemas ------------------------------------------------------------------------------


def test_every_object_validates_against_the_kubernetes_schemas(release: Release) -> None:
    errors = []
    for path, obj in release.objects:
        if obj["apiVersion"].startswith(CRD_GROUPS):
            continue  # no schema offline; see the CRD structure tests
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(part) for part in error.path)
            errors.append(f"{path} {obj['kind']}/{obj['metadata']['name']}: {where}: {error.message}")
    assert not errors, "\n".join(errors)


def test_expected_objects(releases: dict[str, Release]) -> None:
    gateway = {
        f"ConfigMap/{FULLNAME}-gateway",
        f"Deployment/{FULLNAME}-gateway",
        f"Service/{FULLNAME}-gateway",
        f"ServiceAccount/{FULLNAME}-gateway",
        f"PodDisruptionBudget/{FULLNAME}-gateway",
    }
    hpa = {f"HorizontalPodAutoscaler/{FULLNAME}-gateway"}
    triton = {f"Deployment/{FULLNAME}-triton", f"Service/{FULLNAME}-triton"}
    redis = {f"StatefulSet/{FULLNAME}-redis", f"Service/{FULLNAME}-redis", f"Service/{FULLNAME}-redis-headless"}
    monitor = {f"ServiceMonitor/{FULLNAME}-gateway"}
    load = {f"Job/{FULLNAME}-load-tables"}
    expected = {
        "defaults": gateway | hpa,
        "cpu": gateway | hpa,
        "external-redis": gateway | hpa | load,
        "gpu": gateway | hpa | triton | redis | load | monitor,
        "everything": gateway
        | triton
        | redis
        | load
        | monitor
        | {f"Deployment/{FULLNAME}-tfserving", f"Service/{FULLNAME}-tfserving", f"RayService/{FULLNAME}-ray"},
    }
    assert {name: set(r.names()) for name, r in releases.items()} == expected


# --- the gateway -------------------------------------------------------------------------------------


def test_gpus_only_on_backend_pods(release: Release) -> None:
    per_pod = {name: gpus(spec) for name, spec in workloads(release)}
    assert per_pod[f"{FULLNAME}-gateway"] == 0
    for name, count in per_pod.items():
        if name.endswith(("-triton", "-tfserving", "/workers")):
            continue
        assert count == 0, f"{name} requests {count} GPU(s)"


def test_gateway_probes_are_grpc_health_on_the_grpc_port(release: Release, tmp_path: Path) -> None:
    settings = gateway_settings(release, tmp_path)
    spec = pod_spec(release.get("Deployment", f"{FULLNAME}-gateway"))
    (gateway,) = spec["containers"]
    ports = {port["name"]: port["containerPort"] for port in gateway["ports"]}
    assert ports == {"grpc": settings.port, "metrics": settings.metrics_port}
    probes = {kind: gateway[f"{kind}Probe"] for kind in ("startup", "readiness", "liveness")}
    for kind, probe in probes.items():
        assert set(probe) - {"periodSeconds", "failureThreshold"} == {"grpc"}, f"{kind} probe is not a gRPC probe"
        assert probe["grpc"]["port"] == settings.port
    # Readiness follows the feed service (NOT_SERVING until loaded, and again while draining).
    assert probes["readiness"]["grpc"]["service"] == FEED_SERVICE
    assert probes["liveness"]["grpc"]["service"] == ""
    assert settings.host in ("0.0.0.0", "::")


def test_termination_grace_covers_prestop_and_drain(release: Release, tmp_path: Path) -> None:
    settings = gateway_settings(release, tmp_path)
    spec = pod_spec(release.get("Deployment", f"{FULLNAME}-gateway"))
    (gateway,) = spec["containers"]
    command = gateway["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", "preStop must use a command the python:3.11-slim image has"
    pre_stop_s = float(command[1])
    assert pre_stop_s > 0
    assert spec["terminationGracePeriodSeconds"] > pre_stop_s + settings.drain_grace_s
    # Draining reports NOT_SERVING on every service name: liveness must not restart a draining pod.
    liveness = gateway["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > settings.drain_grace_s


def test_gateway_runs_serve_with_the_mounted_settings(release: Release) -> None:
    spec = pod_spec(release.get("Deployment", f"{FULLNAME}-gateway"))
    (gateway,) = spec["containers"]
    assert gateway["command"] == ["quasar", "serve", "--config", "/etc/quasar/settings.yaml"]
    mounts = {mount["name"]: mount for mount in gateway["volumeMounts"]}
    assert mounts["config"]["mountPath"] == "/etc/quasar"
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    config = volumes["config"]["configMap"]
    assert config["name"] == f"{FULLNAME}-gateway"
    assert {"key": "settings.yaml", "path": "settings.yaml"} in config["items"]
    # A config change rolls the pods: the pod template carries a checksum of the rendered ConfigMap.
    annotations = release.get("Deployment", f"{FULLNAME}-gateway")["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])


def test_pods_run_as_non_root_with_a_locked_down_context(release: Release) -> None:
    for name, spec in workloads(release):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in containers(spec):
            context = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
            if "/" not in name:  # Ray writes under its home directory; everything else is read-only
                assert context["readOnlyRootFilesystem"] is True, where
            assert "resources" in container, where


def test_services_select_their_pods_and_name_grpc(release: Release) -> None:
    pods = {name: spec for name, spec in workloads(release)}
    labels = {
        obj["metadata"]["name"]: obj["spec"]["template"]["metadata"]["labels"]
        for kind in ("Deployment", "StatefulSet")
        for obj in release.all(kind)
    }
    for service in release.all("Service"):
        selector = service["spec"]["selector"]
        matches = [name for name, pod_labels in labels.items() if selector.items() <= pod_labels.items()]
        assert len(matches) == 1, f"{service['metadata']['name']} selects {matches}"
        container_ports = {port["name"] for c in pods[matches[0]]["containers"] for port in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in container_ports, f"{service['metadata']['name']}: {port}"
            if port["name"] == "grpc":
                assert port["appProtocol"] == "grpc"


def test_autoscaling_and_disruption_budget(release: Release) -> None:
    deployment = release.get("Deployment", f"{FULLNAME}-gateway")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    hpa = release.find("HorizontalPodAutoscaler", f"{FULLNAME}-gateway")
    if hpa is None:
        assert deployment["spec"]["replicas"] == release.values["gateway"]["replicas"]
    else:
        assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": f"{FULLNAME}-gateway",
        }
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
        assert metric["resource"]["target"]["type"] == "Utilization"
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    pdb = release.get("PodDisruptionBudget", f"{FULLNAME}-gateway")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


# --- the settings the gateway receives ----------------------------------------------------------------


def test_settings_are_accepted_by_the_gateway(release: Release, tmp_path: Path) -> None:
    settings = gateway_settings(release, tmp_path)
    world = release.values.get("gateway", {}).get("world", {}).get("path", "/var/lib/quasar/world")
    assert str(settings.world_dir) == world
    assert settings.metrics_port == 9464


def test_cpu_only_uses_in_process_engines_and_the_embedded_store(releases: dict[str, Release], tmp_path: Path) -> None:
    for name in ("defaults", "cpu", "external-redis"):
        settings = gateway_settings(releases[name], tmp_path)
        assert settings.engines is None, f"{name}: engines default to in-process ONNX and XGBoost"
    assert gateway_settings(releases["cpu"], tmp_path).store is None


def test_gpu_routes_feed_ranker_to_triton(releases: dict[str, Release], tmp_path: Path) -> None:
    release = releases["gpu"]
    settings = gateway_settings(release, tmp_path)
    assert settings.engines is not None
    route = settings.engines.routes["feed_ranker"]
    (target,) = route.targets
    triton = settings.engines.engines[target.engine]
    assert isinstance(triton, TritonEngineConfig)
    assert triton.url == f"{FULLNAME}-triton:{service_port(release, f'{FULLNAME}-triton', 'grpc')}"
    # The route's model name maps to the model Triton serves (triton.model.name).
    assert target.model == "feed_ranker"
    assert triton.models == {"feed_ranker": load_values("gpu")["triton"]["model"]["name"]}
    assert target.timeout_s == pytest.approx(0.1)
    assert triton.startup_timeout_s == 120
    assert_engines_build(settings.engines)
    # Triton failing or slow falls back to the in-process ONNX model; the first pass stays in process.
    (fallback,) = route.fallback
    assert settings.engines.engines[fallback.engine].kind == "onnx"
    (first_pass,) = settings.engines.routes["first_pass"].targets
    assert settings.engines.engines[first_pass.engine].kind == "xgboost"


@pytest.mark.parametrize("name", ["gpu", "everything"])
def test_generated_engines_keep_every_default_route(releases: dict[str, Release], tmp_path: Path, name: str) -> None:
    """The chart replaces the gateway's default engines only where it routes elsewhere: every route and
    in-process model of the demo world's engines (`quasar.demo.feed_product.engines_document`) is still there
    (this fails when the world gains a route the chart does not know)."""
    settings = gateway_settings(releases[name], tmp_path)
    assert settings.engines is not None
    document = feed_product.engines_document()
    for engine in document["engines"].values():
        engine["models"] = {model: settings.world_dir / path for model, path in engine["models"].items()}
    defaults = EnginesConfig.model_validate(document)
    assert set(settings.engines.routes) == set(defaults.routes)

    def local_models(config: EnginesConfig) -> dict[str, Path]:
        return {
            model: path
            for engine in config.engines.values()
            if isinstance(engine, OnnxEngineConfig | XGBoostEngineConfig)
            for model, path in engine.models.items()
        }

    assert local_models(settings.engines) == local_models(defaults)


def test_tfserving_ranker_and_ray_first_pass(chart: helm.Chart, tmp_path: Path) -> None:
    values = {
        "gateway": {"ranker": {"target": "tfserving"}, "firstPass": {"target": "ray", "timeoutS": 0.05}},
        "tfserving": {"enabled": True, "model": {"version": 7}, "modelRepository": {"claimName": "tf-models"}},
        "ray": {"enabled": True},
    }
    release = render(chart, values)
    settings = gateway_settings(release, tmp_path)
    assert settings.engines is not None
    (ranker,) = settings.engines.routes["feed_ranker"].targets
    tfserving = settings.engines.engines[ranker.engine]
    assert isinstance(tfserving, TFServingEngineConfig)
    assert tfserving.url == f"{FULLNAME}-tfserving:{service_port(release, f'{FULLNAME}-tfserving', 'grpc')}"
    assert tfserving.model_name == ranker.model == "feed_ranker"
    assert tfserving.version == 7
    (first_pass,) = settings.engines.routes["first_pass"].targets
    ray = settings.engines.engines[first_pass.engine]
    assert isinstance(ray, RayServeEngineConfig)
    # KubeRay names the head Service of a RayService <name>-head-svc; Ray Client listens on 10001.
    assert ray.address == f"ray://{FULLNAME}-ray-head-svc:10001"
    assert not ray.models, "the application is declared by the RayService, not deployed by the gateway"
    assert first_pass.timeout_s == pytest.approx(0.05)
    (fallback,) = settings.engines.routes["first_pass"].fallback
    assert isinstance(settings.engines.engines[fallback.engine], XGBoostEngineConfig)
    assert_engines_build(settings.engines)
    # TF Serving without a GPU stays off GPU nodes.
    spec = pod_spec(release.get("Deployment", f"{FULLNAME}-tfserving"))
    assert gpus(spec) == 0
    assert "nodeSelector" not in spec


def test_explicit_engines_replace_the_generated_ones(chart: helm.Chart, tmp_path: Path) -> None:
    engines = {
        "engines": {"onnx": {"kind": "onnx", "models": {"feed_ranker": "/models/ranker.onnx"}}},
        "routes": {"feed_ranker": {"targets": [{"engine": "onnx", "model": "feed_ranker"}]}},
    }
    release = render(chart, {"gateway": {"engines": engines}, "triton": {"enabled": True}})
    settings = gateway_settings(release, tmp_path)
    assert settings.engines is not None
    assert set(settings.engines.engines) == {"onnx"}
    assert yaml.safe_load(release.settings_yaml())["engines"] == engines


def test_triton_runs_on_gpu_nodes(releases: dict[str, Release]) -> None:
    values = load_values("gpu")["triton"]
    spec = pod_spec(releases["gpu"].get("Deployment", f"{FULLNAME}-triton"))
    (triton,) = spec["containers"]
    assert triton["resources"]["limits"][GPU] == values["gpu"]["count"] == 1
    assert spec["nodeSelector"] == values["nodeSelector"]
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert f"--grpc-port={values.get('ports', {}).get('grpc', 8001)}" in triton["args"]
    assert "--model-repository=/models" in triton["args"]
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    # The repository: an emptyDir the fetch init container fills with the world's ONNX ranker.
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    assert "emptyDir" in volumes["models"]
    (fetch,) = spec["initContainers"]
    assert gpus({"containers": [fetch]}) == 0
    assert "/models/feed_ranker/1/model.onnx" in " ".join(fetch["command"])
    assert {"name": "models", "mountPath": "/models"} in fetch["volumeMounts"]


def test_redis_url_follows_the_redis_mode(releases: dict[str, Release], tmp_path: Path) -> None:
    bundled = gateway_settings(releases["gpu"], tmp_path).model_dump(mode="json")["store"]
    assert bundled["kind"] == "redis"
    assert bundled["url"] == f"redis://{FULLNAME}-redis:{service_port(releases['gpu'], f'{FULLNAME}-redis', 'redis')}/0"

    external = gateway_settings(releases["external-redis"], tmp_path).model_dump(mode="json")["store"]
    assert external["kind"] == "redis"
    assert external["url"] == load_values("external-redis")["redis"]["external"]["url"]
    assert not releases["external-redis"].all("StatefulSet")


def test_secrets_reach_the_gateway_through_its_environment(
    chart: helm.Chart, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = load_values("external-redis")
    values["redis"]["external"] = {"url": "", "existingSecret": {"name": "redis-credentials", "key": "url"}}
    values["gateway"]["adminToken"] = {"existingSecret": {"name": "quasar-admin", "key": "token"}}
    release = render(chart, values)
    (gateway,) = pod_spec(release.get("Deployment", f"{FULLNAME}-gateway"))["containers"]
    env = {item["name"]: item for item in gateway["env"]}
    assert env["QUASAR_STORE__URL"]["valueFrom"]["secretKeyRef"] == {"name": "redis-credentials", "key": "url"}
    assert env["QUASAR_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "quasar-admin", "key": "token"}
    (job,) = pod_spec(release.get("Job", f"{FULLNAME}-load-tables"))["containers"]
    job_env = {item["name"]: item for item in job["env"]}
    assert job_env["STORE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "redis-credentials", "key": "url"}
    # What the pod will see: the Secret's values, which override the settings file (env wins over YAML).
    monkeypatch.setenv("QUASAR_STORE__URL", "redis://:secret@redis.internal:6380/2")
    monkeypatch.setenv("QUASAR_ADMIN_TOKEN", "t0ken")
    settings = gateway_settings(release, tmp_path)
    assert settings.model_dump(mode="json")["store"]["url"] == "redis://:secret@redis.internal:6380/2"
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "t0ken"


def test_tables_are_loaded_into_redis_under_their_pinned_versions(releases: dict[str, Release]) -> None:
    for name, world_volume in (("gpu", False), ("everything", True)):
        release = releases[name]
        job = release.get("Job", f"{FULLNAME}-load-tables")
        assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
        spec = pod_spec(job)
        (container,) = spec["containers"]
        env = {item["name"]: item.get("value") for item in container["env"]}
        assert env["STORE_URL"] == f"redis://{FULLNAME}-redis:{service_port(release, f'{FULLNAME}-redis', 'redis')}/0"
        script = container["command"][-1]
        assert 'quasar embeddings push --table "$table"' in script
        assert '--version "$version" --store "$STORE_URL"' in script
        assert ("quasar world build" in script) is not world_volume, name
        assert any(volume["name"] == "world" for volume in spec["volumes"]) is world_volume, name


def test_bundled_redis_statefulset(releases: dict[str, Release]) -> None:
    release = releases["gpu"]
    redis = release.get("StatefulSet", f"{FULLNAME}-redis")
    assert redis["spec"]["serviceName"] == f"{FULLNAME}-redis-headless"
    assert release.get("Service", f"{FULLNAME}-redis-headless")["spec"]["clusterIP"] == "None"
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    (container,) = pod_spec(redis)["containers"]
    assert container["command"][container["command"].index("--maxmemory-policy") + 1] == "noeviction"


def test_workflows_are_mounted_and_named_in_the_settings(releases: dict[str, Release], tmp_path: Path) -> None:
    release = releases["everything"]
    settings = gateway_settings(release, tmp_path)
    assert str(settings.workflows_dir) == "/etc/quasar/workflows"
    config_map = release.get("ConfigMap", f"{FULLNAME}-gateway")
    assert yaml.safe_load(config_map["data"]["workflow-feed.yaml"]) == EVERYTHING["gateway"]["workflows"]["feed.yaml"]
    spec = pod_spec(release.get("Deployment", f"{FULLNAME}-gateway"))
    items = next(v for v in spec["volumes"] if v["name"] == "config")["configMap"]["items"]
    assert {"key": "workflow-feed.yaml", "path": "workflows/feed.yaml"} in items
    # The world comes from the claim, read-only, and no init container builds one.
    world = next(v for v in spec["volumes"] if v["name"] == "world")
    assert world["persistentVolumeClaim"] == {"claimName": "quasar-world", "readOnly": True}
    assert "initContainers" not in spec


def test_the_gateway_state_is_a_shared_claim_or_a_pod_local_volume(
    releases: dict[str, Release], tmp_path: Path
) -> None:
    for name, volume in (("everything", {"persistentVolumeClaim": {"claimName": "quasar-state"}}), ("cpu", None)):
        release = releases[name]
        assert str(gateway_settings(release, tmp_path).state_dir) == "/var/lib/quasar/state"
        spec = pod_spec(release.get("Deployment", f"{FULLNAME}-gateway"))
        state = next(v for v in spec["volumes"] if v["name"] == "state")
        if volume is None:
            assert "emptyDir" in state  # per pod: releases last as long as the pod
        else:
            assert {k: v for k, v in state.items() if k != "name"} == volume
        (gateway,) = [c for c in spec["containers"] if c["name"] == "gateway"]
        assert {"name": "state", "mountPath": "/var/lib/quasar/state"} in gateway["volumeMounts"]


# --- custom resources (no offline schema: structure asserted here) --------------------------------------


def test_service_monitor_scrapes_the_gateway_metrics_port(releases: dict[str, Release]) -> None:
    release = releases["gpu"]
    monitor = release.get("ServiceMonitor", f"{FULLNAME}-gateway")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    service = release.get("Service", f"{FULLNAME}-gateway")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics"
    assert re.fullmatch(r"\d+s", endpoint["interval"])
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}


def test_ray_service_structure(releases: dict[str, Release]) -> None:
    ray = releases["everything"].get("RayService", f"{FULLNAME}-ray")
    assert ray["apiVersion"] == "ray.io/v1"
    spec = ray["spec"]
    assert set(spec) == {"serveConfigV2", "rayClusterConfig"}
    assert isinstance(yaml.safe_load(spec["serveConfigV2"])["applications"], list)
    cluster = spec["rayClusterConfig"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", cluster["rayVersion"])
    head = cluster["headGroupSpec"]
    assert all(isinstance(value, str) for value in head["rayStartParams"].values())
    (head_container,) = head["template"]["spec"]["containers"]
    assert {port["containerPort"] for port in head_container["ports"]} >= {6379, 8265, 10001, 8000}
    (workers,) = cluster["workerGroupSpecs"]
    assert workers["minReplicas"] <= workers["replicas"] <= workers["maxReplicas"]
    assert gpus(workers["template"]["spec"]) == 1
    assert gpus(head["template"]["spec"]) == 0
    # The pod templates inside the custom resource are plain PodSpecs: validate them as such.
    for template in (head["template"], workers["template"]):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ray"}, "spec": template["spec"]}
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


# --- what the chart promises the operator ---------------------------------------------------------------


def test_notes_tell_how_to_call_the_gateway(releases: dict[str, Release]) -> None:
    notes = releases["gpu"].notes
    assert f"port-forward service/{FULLNAME}-gateway 50051:50051" in notes
    assert "quasar feed --member 42 --count 20 --target 127.0.0.1:50051" in notes
    assert "feed_ranker runs on: triton" in notes


def test_dockerfile_user_matches_the_chart() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}$", text, re.MULTILINE)
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    users = re.findall(r"^USER (\d+):(\d+)$", text, re.MULTILINE)
    uid = yaml.safe_load((CHART / "values.yaml").read_text())["gateway"]["runAsUser"]
    assert users == [(str(uid), str(uid))]
