"""Static checks of the deployment files under deploy/: no cluster and no Docker needed.

- Kubernetes manifests (deploy/k8s): the built-in kinds are validated against the Kubernetes
  OpenAPI schemas shipped by the PyPI package kubernetes-validate, in strict mode (unknown
  fields are errors). That package has no schemas for CRDs (CiliumNetworkPolicy, Traefik's
  IngressRoute and Middleware, the Prometheus Operator's PrometheusRule): those are parsed and
  their apiVersion/kind and the fields we rely on are checked by hand below.
- Prometheus rules (deploy/prometheus): `promtool check rules` and `promtool test rules`.
  promtool comes from Debian's package `prometheus` (`make setup-system`); a missing promtool
  is a failure, not a skip.
- The PrometheusRule manifest carries exactly the groups of alerts.yaml.
- The Deployment's probes, shutdown timing and security settings; the Dockerfile's final
  stage; the compose file and the Traefik file-provider config; the same public-route rule
  everywhere.
- Production settings: the environment the kubelet would give the Deployment's and the Job's
  containers (image ENV, then the ConfigMap, then `env`; `secretKeyRef` and `_FILE` paths
  resolved against secret.example.yaml, the latter to dummy files) builds an
  `outreach.config.Settings` that passes its own `check_production()`, so the list of required
  variables is the service's, not this file's. Every secret variable the service knows
  (`outreach.config.SECRET_VARIABLES`, TOKEN_SECRET among them) comes from the Secret, never
  from a literal or the ConfigMap.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from outreach.config import SECRET_VARIABLES, ConfigError, Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus"
TRAEFIK = DEPLOY / "traefik"

# Pinned Kubernetes versions whose schemas the manifests must satisfy: 1.30 is the oldest
# supported cluster (the preStop `sleep` action is on by default from 1.30), 1.37 the newest
# kubernetes-validate 1.37.0 knows.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")

# CRDs: not in kubernetes-validate's schemas; checked structurally in this file.
CRD_KINDS = {
    ("cilium.io/v2", "CiliumNetworkPolicy"),
    ("traefik.io/v1alpha1", "IngressRoute"),
    ("traefik.io/v1alpha1", "Middleware"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}

MANIFEST_FILES = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")

PORT = 3000
BASE_PATH = "/v1/api/outreach"
PUBLIC_POST_PATHS = (
    f"{BASE_PATH}/inquiries/submit",
    f"{BASE_PATH}/subscribers/subscribe",
    f"{BASE_PATH}/subscribers/unsubscribe",
)
ALERTS = {
    "outreachHighErrorRate",
    "outreachSubmitFlood",
    "outreachWSNotReady",
    "outreachMailStuck",
    "outreachMailFailed",
}
STICKY_COOKIE = "outreach_sticky"
SECRET_NAME = "outreach-secrets"  # created out of band; secret.example.yaml is its shape
# The workloads that run the service, and their container.
# (kind, container): every workload that runs the service.
WORKLOADS = (("Deployment", "outreach"), ("Deployment", "worker"), ("Job", "migrate"))
RATE_LIMIT_MIDDLEWARE = "outreach-public-ratelimit"
DRAIN_SECONDS = 20  # the service's bounded drain after SIGTERM (API contract)

PROMTOOL_MISSING = (
    "promtool not found on PATH nor at /usr/bin/promtool: run `make setup-system` "
    "(it installs Debian's `prometheus` package, which provides promtool)"
)


# --------------------------------------------------------------------------- helpers


def as_dict(value: Any) -> dict[str, Any]:
    assert isinstance(value, dict), f"expected a mapping, got {value!r}"
    return value


def as_list(value: Any) -> list[Any]:
    assert isinstance(value, list), f"expected a list, got {value!r}"
    return value


def load_yaml(path: Path) -> dict[str, Any]:
    return as_dict(yaml.safe_load(path.read_text(encoding="utf-8")))


def load_docs(path: Path) -> list[dict[str, Any]]:
    docs = yaml.safe_load_all(path.read_text(encoding="utf-8"))
    return [as_dict(doc) for doc in docs if doc is not None]


def all_manifests() -> list[dict[str, Any]]:
    return [doc for path in MANIFEST_FILES for doc in load_docs(path)]


def the_one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        doc
        for doc in all_manifests()
        if doc.get("kind") == kind and (name is None or doc["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected exactly one {kind} {name or ''} under deploy/k8s"
    return found[0]


def is_crd(doc: dict[str, Any]) -> bool:
    return (doc.get("apiVersion"), doc.get("kind")) in CRD_KINDS


def container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    matches = [c for c in as_list(pod_spec["containers"]) if as_dict(c).get("name") == name]
    assert len(matches) == 1, f"no single container named {name!r}"
    return as_dict(matches[0])


def env_value(cont: dict[str, Any], name: str) -> Any:
    for entry in as_list(cont.get("env", [])):
        if as_dict(entry)["name"] == name:
            return entry.get("value", entry.get("valueFrom"))
    raise AssertionError(f"env {name} not set on container {cont['name']}")


def route_paths(rule: str) -> set[str]:
    return set(re.findall(r"Path\(`([^`]*)`\)", rule))


def check_public_rule(rule: str) -> None:
    assert "Method(`POST`)" in rule, rule
    assert route_paths(rule) == set(PUBLIC_POST_PATHS), rule


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None and Path("/usr/bin/promtool").is_file():
        found = "/usr/bin/promtool"
    if found is None:
        pytest.fail(PROMTOOL_MISSING)
    return found


def run_promtool(*args: str) -> None:
    result = subprocess.run(
        [promtool(), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        f"promtool {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )


# --------------------------------------------------------------------------- (a) k8s schemas


def test_manifest_files_present() -> None:
    names = {p.name for p in MANIFEST_FILES}
    assert names >= {
        "deployment.yaml",
        "service.yaml",
        "hpa.yaml",
        "migration-job.yaml",
        "configmap.yaml",
        "secret.example.yaml",
        "networkpolicy.yaml",
        "ingressroute.yaml",
        "prometheusrule.yaml",
    }


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: p.name)
def test_manifest_is_namespace_agnostic(path: Path) -> None:
    for doc in load_docs(path):
        assert doc.get("apiVersion"), f"{path.name}: missing apiVersion"
        assert doc.get("kind"), f"{path.name}: missing kind"
        metadata = as_dict(doc.get("metadata"))
        assert metadata.get("name"), f"{path.name}: {doc['kind']} without metadata.name"
        assert "namespace" not in metadata, f"{path.name}: hard-coded namespace"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: p.name)
def test_builtin_kinds_validate_against_kubernetes_schema(path: Path, version: str) -> None:
    for doc in load_docs(path):
        if is_crd(doc):
            continue  # no schema in kubernetes-validate: see the CRD tests below
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            pytest.fail(
                f"{path.name}: {doc['kind']} invalid for {version} at {where}: {exc.message}"
            )
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{path.name}: {exc.message}; add it to CRD_KINDS if it is a CRD")


def test_every_custom_kind_is_a_known_crd() -> None:
    custom = {
        (doc["apiVersion"], doc["kind"])
        for doc in all_manifests()
        if "." in str(doc["apiVersion"]).split("/")[0] and "k8s.io" not in doc["apiVersion"]
    }
    assert custom == CRD_KINDS


def test_kustomization_lists_every_manifest_except_the_example_secret() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    resources = as_list(kustomization["resources"])
    expected = {p.name for p in MANIFEST_FILES} - {"secret.example.yaml"}
    assert sorted(resources) == sorted(expected)


def test_example_secret_is_only_an_example() -> None:
    secret = the_one("Secret")
    assert secret["metadata"]["name"] == "outreach-secrets"
    data = as_dict(secret["stringData"])
    assert set(data) == {"DATABASE_URL", "REDIS_URL", "TOKEN_SECRET"}
    for value in data.values():
        assert "CHANGE-ME" in value
    assert "EXAMPLE" in (K8S / "secret.example.yaml").read_text(encoding="utf-8")


def test_cilium_network_policy() -> None:
    # CRD (cilium.io/v2): checked by hand, kubernetes-validate has no schema for it.
    policy = the_one("CiliumNetworkPolicy", "outreach")
    assert policy["apiVersion"] == "cilium.io/v2"
    spec = as_dict(policy["spec"])
    assert spec["endpointSelector"] == {"matchLabels": {"app.kubernetes.io/name": "outreach"}}

    ingress_peers: list[str] = []
    for item in as_list(spec["ingress"]):
        rule = as_dict(item)
        ports = {p["port"] for tp in as_list(rule["toPorts"]) for p in as_list(tp["ports"])}
        assert ports == {str(PORT)}, f"ingress allowed on {ports}"
        for peer in rule.get("fromEndpoints", []):
            ingress_peers.append(as_dict(peer)["matchLabels"]["app.kubernetes.io/name"])
        ingress_peers.extend(rule.get("fromEntities", []))
        assert set(rule) <= {"fromEndpoints", "fromEntities", "toPorts"}
    assert sorted(ingress_peers) == ["host", "prometheus", "traefik"]
    prometheus_rule = next(
        as_dict(r)
        for r in spec["ingress"]
        if any(
            p["matchLabels"].get("app.kubernetes.io/name") == "prometheus"
            for p in r.get("fromEndpoints", [])
        )
    )
    http_rules = prometheus_rule["toPorts"][0]["rules"]["http"]
    assert http_rules == [{"method": "GET", "path": "/metrics"}]

    egress_ports: set[str] = set()
    for item in as_list(spec["egress"]):
        rule = as_dict(item)
        assert set(rule) == {"toEndpoints", "toPorts"}, "egress only to selected endpoints"
        for tp in as_list(rule["toPorts"]):
            for port in as_list(tp["ports"]):
                assert isinstance(port["port"], str)
                assert port["protocol"] in {"TCP", "UDP", "ANY"}
                egress_ports.add(port["port"])
    assert egress_ports == {"53", "3000", "6379", "5432"}
    peers = [as_dict(r)["toEndpoints"][0]["matchLabels"] for r in spec["egress"]]
    assert {"app": "identity"} in peers
    assert any(p.get("k8s:k8s-app") == "kube-dns" for p in peers)


def test_traefik_ingressroute_and_middleware() -> None:
    # CRDs (traefik.io/v1alpha1): checked by hand, kubernetes-validate has no schema for them.
    route = the_one("IngressRoute")
    middleware = the_one("Middleware")
    assert route["apiVersion"] == "traefik.io/v1alpha1"
    assert middleware["apiVersion"] == "traefik.io/v1alpha1"
    assert middleware["metadata"]["name"] == RATE_LIMIT_MIDDLEWARE
    rate_limit = as_dict(middleware["spec"]["rateLimit"])
    assert rate_limit["average"] > 0
    assert rate_limit["burst"] > 0

    routes = as_list(route["spec"]["routes"])
    assert len(routes) == 2
    main, public = sorted(routes, key=lambda r: r["priority"])
    assert main["match"] == f"PathPrefix(`{BASE_PATH}`)"
    assert "middlewares" not in main
    check_public_rule(public["match"])
    assert public["priority"] > main["priority"]
    assert public["middlewares"] == [{"name": RATE_LIMIT_MIDDLEWARE}]
    for r in routes:
        assert r["kind"] == "Rule"
        (service,) = r["services"]
        assert service["name"] == the_one("Service")["metadata"]["name"]
        assert service["port"] == PORT
    assert main["services"][0]["sticky"]["cookie"]["name"] == STICKY_COOKIE


def test_prometheusrule_crd_shape() -> None:
    # CRD (monitoring.coreos.com/v1): checked by hand, kubernetes-validate has no schema for it.
    rule = the_one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    groups = as_list(rule["spec"]["groups"])
    assert groups
    for group in groups:
        assert group["name"]
        assert as_list(group["rules"])


# --------------------------------------------------------------------------- (b) promtool


def test_promtool_check_rules() -> None:
    run_promtool("check", "rules", "deploy/prometheus/alerts.yaml")


def test_promtool_test_rules() -> None:
    run_promtool("test", "rules", "deploy/prometheus/alerts.test.yaml")


def test_alerts_are_complete() -> None:
    rules = [
        as_dict(r)
        for group in as_list(load_yaml(PROMETHEUS / "alerts.yaml")["groups"])
        for r in as_list(group["rules"])
    ]
    assert {r["alert"] for r in rules} == ALERTS
    for r in rules:
        assert r["labels"]["severity"] in {"critical", "warning", "info"}
        annotations = as_dict(r["annotations"])
        assert annotations["summary"]
        assert annotations["description"]
        assert annotations["runbook_url"].endswith(f"docs/operations.md#{r['alert'].lower()}")
        assert r["for"]
    tested = (PROMETHEUS / "alerts.test.yaml").read_text(encoding="utf-8")
    for alert in ALERTS:
        assert f"alertname: {alert}" in tested, f"{alert} has no promtool unit test"


# --------------------------------------------------------------------------- (c) rules in sync


def test_prometheusrule_groups_equal_alerts_file() -> None:
    plain = load_yaml(PROMETHEUS / "alerts.yaml")["groups"]
    operator = the_one("PrometheusRule")["spec"]["groups"]
    assert operator == plain, "deploy/k8s/prometheusrule.yaml and alerts.yaml differ"


# --------------------------------------------------------------------------- (d) Deployment


def deployment_pod_spec() -> dict[str, Any]:
    return as_dict(the_one("Deployment", "outreach")["spec"]["template"]["spec"])


def test_deployment_probes() -> None:
    app = container(deployment_pod_spec(), "outreach")
    expected = {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    for probe, path in expected.items():
        http_get = as_dict(app[probe]["httpGet"])
        assert http_get["path"] == path, probe
        assert http_get["port"] == PORT, probe
    ports = [p["containerPort"] for p in app["ports"]]
    assert ports == [PORT]


def test_deployment_graceful_shutdown_fits_in_grace_period() -> None:
    pod_spec = deployment_pod_spec()
    pre_stop = as_dict(container(pod_spec, "outreach")["lifecycle"]["preStop"])
    if "sleep" in pre_stop:
        pre_stop_seconds = int(pre_stop["sleep"]["seconds"])
    else:
        command = as_list(pre_stop["exec"]["command"])
        assert command[0] == "sleep"
        pre_stop_seconds = int(command[1])
    assert pre_stop_seconds > 0
    assert pod_spec["terminationGracePeriodSeconds"] > pre_stop_seconds + DRAIN_SECONDS


def test_deployment_environment() -> None:
    app = container(deployment_pod_spec(), "outreach")
    assert env_value(app, "APP_ENV_NODE_ID") == "auto"
    assert env_value(app, "APP_ENV") == "production"
    for name in ("DATABASE_URL", "REDIS_URL"):
        ref = as_dict(env_value(app, name))["secretKeyRef"]
        assert ref == {"name": "outreach-secrets", "key": name}
    config_map = the_one("ConfigMap")
    assert app["envFrom"] == [{"configMapRef": {"name": config_map["metadata"]["name"]}}]
    config = as_dict(config_map["data"])
    assert config["METRICS_ENABLED"] == "true"
    assert config["BASE_PATH"] == BASE_PATH
    assert config["JWKS_URL"]


def test_deployment_runs_two_workers_within_its_cpu_limit() -> None:
    """Two worker processes per pod (WEB_CONCURRENCY, not a --workers that would override
    it), each leasing its id from Redis, and a CPU limit with a core for each."""
    app = container(deployment_pod_spec(), "outreach")
    workers = int(env_value(app, "WEB_CONCURRENCY"))
    assert workers == 2
    assert "--workers" not in app["args"]
    assert env_value(app, "APP_ENV_NODE_ID") == "auto"
    assert env_value(app, "REDIS_URL")
    cpu = str(app["resources"]["limits"]["cpu"])
    cores = int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    assert cores >= workers


def test_deployment_security() -> None:
    pod_spec = deployment_pod_spec()
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["runAsUser"] != 0
    app = container(pod_spec, "outreach")
    security = as_dict(app["securityContext"])
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in app["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/app/var"]]


def test_deployment_resources_and_scrape_annotations() -> None:
    deployment = the_one("Deployment", "outreach")
    assert deployment["spec"]["replicas"] == 1
    annotations = as_dict(deployment["spec"]["template"]["metadata"]["annotations"])
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(PORT)
    assert annotations["prometheus.io/path"] == "/metrics"
    resources = as_dict(container(deployment_pod_spec(), "outreach")["resources"])
    assert set(resources) == {"requests", "limits"}


def test_service_hpa_and_job_fit_the_deployment() -> None:
    deployment = the_one("Deployment", "outreach")
    pod_labels = as_dict(deployment["spec"]["template"]["metadata"]["labels"])
    service = the_one("Service")
    selector = as_dict(service["spec"]["selector"])
    assert selector.items() <= pod_labels.items()
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(PORT, "http")]

    hpa = the_one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 10)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["averageUtilization"] == 70

    job = the_one("Job")
    job_pod = as_dict(job["spec"]["template"])
    assert container(job_pod["spec"], "migrate")["args"] == ["migrate"]
    job_labels = as_dict(job_pod["metadata"]["labels"])
    assert not selector.items() <= job_labels.items(), "the Service would select the Job's pod"
    assert job_pod["spec"]["securityContext"]["runAsNonRoot"] is True


# --------------------------------------------------------------------------- (e) Dockerfile


def dockerfile_stages() -> list[list[str]]:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n", " ", text)  # join continuation lines
    lines = [ln.strip() for ln in text.splitlines()]
    instructions = [ln for ln in lines if ln and not ln.startswith("#")]
    stages: list[list[str]] = []
    for ln in instructions:
        if ln.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(ln)
    return stages


def instructions(stage: list[str], keyword: str) -> list[str]:
    return [ln for ln in stage if ln.split()[0].upper() == keyword]


def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim\b", text, re.MULTILINE)
    stages = dockerfile_stages()
    assert len(stages) >= 2
    assert stages[0][0] == "FROM ${PYTHON_IMAGE} AS builder"
    assert stages[-1][0].startswith("FROM ${PYTHON_IMAGE} AS ")
    builder = " ".join(stages[0])
    assert "--require-hashes" in builder
    assert "scripts/fetch_assets.py" in builder
    assert builder.index("fetch_assets.py") < builder.index("pip wheel")


def test_dockerfile_final_stage() -> None:
    final = dockerfile_stages()[-1]
    (user,) = instructions(final, "USER")
    assert user.split()[1].split(":")[0] not in {"root", "0"}
    assert instructions(final, "EXPOSE") == [f"EXPOSE {PORT}"]
    assert instructions(final, "STOPSIGNAL") == ["STOPSIGNAL SIGTERM"]
    (healthcheck,) = instructions(final, "HEALTHCHECK")
    assert "/healthz" in healthcheck
    assert '"python"' in healthcheck
    assert "COPY --from=builder /opt/venv /opt/venv" in final
    entry = " ".join(instructions(final, "ENTRYPOINT") + instructions(final, "CMD"))
    assert '"outreach"' in entry
    assert '"serve"' in entry
    final_text = " ".join(final)
    for tool in ("apt-get install", "gcc", "build-essential", "pip install", "curl"):
        assert tool not in final_text, f"final stage uses {tool!r}"


# --------------------------------------------------------------------------- compose, Traefik


def test_compose_stack() -> None:
    services = as_dict(load_yaml(DEPLOY / "compose.yaml")["services"])
    assert services["postgres"]["image"] == "postgres:15"
    assert services["redis"]["image"] == "redis:7"
    assert services["traefik"]["image"].startswith("traefik:v3")

    migrate = as_dict(services["migrate"])
    assert migrate["command"] == ["migrate"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"

    node_ids = set()
    for name in ("outreach-1", "outreach-2"):
        replica = as_dict(services[name])
        assert replica["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        condition = replica["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully"
        env = as_dict(replica["environment"])
        assert env["APP_ENV"] == "development"
        node_ids.add(env["APP_ENV_NODE_ID"])
        labels = as_dict(replica["labels"])
        assert labels["traefik.http.routers.outreach.rule"] == f"PathPrefix(`{BASE_PATH}`)"
        assert labels["traefik.http.services.outreach.loadbalancer.server.port"] == str(PORT)
        cookie = labels["traefik.http.services.outreach.loadbalancer.sticky.cookie.name"]
        assert cookie == STICKY_COOKIE
        check_public_rule(labels["traefik.http.routers.outreach-public.rule"])
        middlewares = labels["traefik.http.routers.outreach-public.middlewares"]
        assert middlewares == RATE_LIMIT_MIDDLEWARE
        prefix = f"traefik.http.middlewares.{RATE_LIMIT_MIDDLEWARE}.ratelimit."
        assert int(labels[prefix + "average"]) > 0
    assert len(node_ids) == 2, "replicas need distinct APP_ENV_NODE_ID"


def test_traefik_file_provider_config() -> None:
    static = load_yaml(TRAEFIK / "static.yaml")
    assert static["entryPoints"]["web"]["address"] == "127.0.0.1:8080"
    assert static["providers"]["file"] == {"filename": "dynamic.yaml", "watch": True}
    assert static["log"]["level"] == "INFO"

    http = as_dict(load_yaml(TRAEFIK / "dynamic.yaml")["http"])
    routers = as_dict(http["routers"])
    assert routers["outreach"]["rule"] == f"PathPrefix(`{BASE_PATH}`)"
    check_public_rule(routers["outreach-public"]["rule"])
    assert routers["outreach-public"]["middlewares"] == [RATE_LIMIT_MIDDLEWARE]
    assert routers["outreach-public"]["priority"] > routers["outreach"]["priority"]
    assert http["middlewares"][RATE_LIMIT_MIDDLEWARE]["rateLimit"]["average"] > 0
    balancer = as_dict(http["services"]["outreach"]["loadBalancer"])
    assert balancer["sticky"]["cookie"]["name"] == STICKY_COOKIE
    servers = [s["url"] for s in balancer["servers"]]
    assert servers == ["http://127.0.0.1:3101", "http://127.0.0.1:3102"]


def test_public_route_rule_is_the_same_everywhere() -> None:
    ingress = next(r for r in the_one("IngressRoute")["spec"]["routes"] if "middlewares" in r)
    compose = load_yaml(DEPLOY / "compose.yaml")["services"]["outreach-1"]["labels"]
    dynamic = load_yaml(TRAEFIK / "dynamic.yaml")["http"]["routers"]["outreach-public"]
    rules = {
        ingress["match"],
        compose["traefik.http.routers.outreach-public.rule"],
        dynamic["rule"],
    }
    assert len(rules) == 1, rules


# --------------------------------------------------------------------------- production settings


def rendered_resources() -> list[dict[str, Any]]:
    """The documents `kubectl kustomize deploy/k8s` renders, as far as a pod's environment goes.

    The kustomization only adds labels and rewrites the image: neither touches `env`, `envFrom`
    or volumes, so its resources as written are what the kubelet sees.
    """
    kustomization = load_yaml(K8S / "kustomization.yaml")
    assert set(kustomization) <= {"apiVersion", "kind", "resources", "labels", "images"}, (
        "kustomization.yaml does more than labels and images: teach rendered_resources()"
    )
    return [doc for name in as_list(kustomization["resources"]) for doc in load_docs(K8S / name)]


def rendered_one(kind: str) -> dict[str, Any]:
    found = [doc for doc in rendered_resources() if doc.get("kind") == kind]
    assert len(found) == 1, f"expected exactly one rendered {kind}, found {len(found)}"
    return found[0]


def workload(kind: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod spec, container) of a rendered workload."""
    pods = [
        as_dict(doc["spec"]["template"]["spec"])
        for doc in rendered_resources()
        if doc.get("kind") == kind
        and any(c["name"] == name for c in doc["spec"]["template"]["spec"]["containers"])
    ]
    assert len(pods) == 1, f"expected one rendered {kind} with a container {name!r}"
    return pods[0], container(pods[0], name)


def example_secret() -> dict[str, str]:
    """The stand-in for the out-of-band Secret: secret.example.yaml's keys and placeholders."""
    secret = load_yaml(K8S / "secret.example.yaml")
    assert secret["metadata"]["name"] == SECRET_NAME
    return {str(k): str(v) for k, v in as_dict(secret["stringData"]).items()}


def secret_value(ref: dict[str, Any]) -> str:
    secret = example_secret()
    assert ref["name"] == SECRET_NAME, f"Secret {ref['name']!r} is not {SECRET_NAME}"
    assert ref["key"] in secret, f"key {ref['key']} is not in secret.example.yaml"
    return secret[ref["key"]]


def image_env() -> dict[str, str]:
    """ENV of the Dockerfile's final stage: what a container starts with (APP_ENV among it)."""
    env: dict[str, str] = {}
    for line in instructions(dockerfile_stages()[-1], "ENV"):
        for word in shlex.split(line)[1:]:
            key, sep, value = word.partition("=")
            assert sep, f"use ENV key=value: {line}"
            env[key] = value
    return env


def rendered_env(cont: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet builds it (later sources win)."""
    config_map = rendered_one("ConfigMap")
    env = image_env()
    for item in as_list(cont.get("envFrom", [])):
        source = as_dict(item)
        assert set(source) == {"configMapRef"}, f"unexpected envFrom {source}"
        assert source["configMapRef"]["name"] == config_map["metadata"]["name"]
        env.update({str(k): str(v) for k, v in as_dict(config_map["data"]).items()})
    for item in as_list(cont.get("env", [])):
        entry = as_dict(item)
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
            continue
        value_from = as_dict(entry["valueFrom"])
        if "secretKeyRef" in value_from:
            env[entry["name"]] = secret_value(as_dict(value_from["secretKeyRef"]))
        elif "configMapKeyRef" in value_from:
            ref = as_dict(value_from["configMapKeyRef"])
            assert ref["name"] == config_map["metadata"]["name"]
            env[entry["name"]] = str(config_map["data"][ref["key"]])
        else:
            pytest.fail(f"env {entry['name']}: unsupported valueFrom {value_from}")
    return env


def secret_file(pod_spec: dict[str, Any], cont: dict[str, Any], path: str) -> dict[str, Any]:
    """{name, key} of the Secret that the file at `path` in the container is mounted from."""
    volumes = {as_dict(v)["name"]: as_dict(v) for v in as_list(pod_spec.get("volumes", []))}
    for item in as_list(cont.get("volumeMounts", [])):
        mount = as_dict(item)
        mount_path = str(mount["mountPath"]).rstrip("/")
        if "subPath" in mount:
            if path != mount_path:
                continue
            relative = str(mount["subPath"])
        elif path.startswith(mount_path + "/"):
            relative = path[len(mount_path) + 1 :]
        else:
            continue
        source = volumes[mount["name"]].get("secret")
        assert source is not None, f"{path} is on volume {mount['name']!r}, not a Secret"
        items = source.get("items")
        if items is None:
            key, mode = relative, source.get("defaultMode", 0o644)
        else:
            matches = [as_dict(i) for i in as_list(items) if as_dict(i)["path"] == relative]
            assert len(matches) == 1, f"{path}: no item of volume {mount['name']!r} is there"
            key, mode = matches[0]["key"], matches[0].get("mode", source.get("defaultMode", 0o644))
        # Secret files belong to root: the non-root user reads them through the pod's fsGroup
        # (the kubelet gives them that group and adds group read) or a world-readable mode.
        fs_group = pod_spec.get("securityContext", {}).get("fsGroup")
        assert fs_group is not None or mode & 0o004, (
            f"{path}: mode {mode:o} without fsGroup is unreadable for the container's user"
        )
        return {"name": source["secretName"], "key": key}
    raise AssertionError(f"{path}: no volume is mounted there")


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """`Settings()` as the service builds it, from `env` only (the test's own env is hidden)."""
    fields = {name.upper() for name in Settings.model_fields}

    def read_by_settings(name: str) -> bool:
        return name.upper() in fields or name.upper().endswith("_FILE")

    for name in list(os.environ):
        if read_by_settings(name):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if read_by_settings(name):
            monkeypatch.setenv(name, value)
    return Settings()


@pytest.mark.parametrize(("kind", "name"), WORKLOADS, ids=[f"{k}-{n}" for k, n in WORKLOADS])
def test_workload_passes_check_production(
    kind: str, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod_spec, cont = workload(kind, name)
    env = rendered_env(cont)
    assert env.get("APP_ENV") == "production", f"{kind} does not run in production"
    for variable, path in list(env.items()):
        if variable.endswith("_FILE"):
            dummy = tmp_path / variable
            dummy.write_text(secret_value(secret_file(pod_spec, cont, path)) + "\n")
            env[variable] = str(dummy)
    settings = settings_from(env, monkeypatch)
    assert settings.production
    settings.check_production()  # the service's own list of what production requires


def test_check_production_sees_only_the_given_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The check above has teeth: with the manifests' environment gone it refuses, whatever the
    # shell running the tests has set.
    settings = settings_from({"APP_ENV": "production"}, monkeypatch)
    with pytest.raises(ConfigError, match="TOKEN_SECRET"):
        settings.check_production()


@pytest.mark.parametrize(("kind", "name"), WORKLOADS, ids=[f"{k}-{n}" for k, n in WORKLOADS])
def test_secrets_come_from_the_secret_never_a_literal(kind: str, name: str) -> None:
    pod_spec, cont = workload(kind, name)
    config = as_dict(rendered_one("ConfigMap")["data"])
    image = image_env()
    entries = {as_dict(e)["name"]: as_dict(e) for e in as_list(cont.get("env", []))}
    assert "TOKEN_SECRET" in SECRET_VARIABLES
    for variable in SECRET_VARIABLES:
        for form in (variable, f"{variable}_FILE"):
            assert form not in config, f"{form} in the ConfigMap"
            assert form not in image, f"{form} in the image's ENV"
        if variable in entries:
            entry = entries[variable]
            assert "value" not in entry, f"{kind}: {variable} is a literal"
            ref = as_dict(entry["valueFrom"]["secretKeyRef"])
            assert ref["name"] == SECRET_NAME
            assert ref["key"] in example_secret()
        if f"{variable}_FILE" in entries:
            path = str(entries[f"{variable}_FILE"]["value"])
            ref = secret_file(pod_spec, cont, path)
            assert ref["name"] == SECRET_NAME, f"{kind}: {path} is not from {SECRET_NAME}"
            assert ref["key"] in example_secret()
    assert {"TOKEN_SECRET", "TOKEN_SECRET_FILE"} & set(entries), f"{kind}: no TOKEN_SECRET"


# --------------------------------------------------------------------------- the job worker


def test_the_queue_runs_in_worker_pods_that_alone_reach_the_internet() -> None:
    """Mail and webhooks are worked by `outreach worker` pods (the API pods say
    JOBS_WORKER=false), which make ids of their own, open the sealed webhook secrets, and
    are the only pods with an egress rule to the internet (HTTPS and SMTP only)."""
    api = container(deployment_pod_spec(), "outreach")
    assert env_value(api, "JOBS_WORKER") == "false"

    deployment = the_one("Deployment", "outreach-worker")
    pod = as_dict(deployment["spec"]["template"])
    worker = container(as_dict(pod["spec"]), "worker")
    assert worker["args"][0] == "worker"
    metrics_port = int(worker["args"][worker["args"].index("--metrics-port") + 1])
    assert [p["containerPort"] for p in worker["ports"]] == [metrics_port]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(metrics_port)
    assert env_value(worker, "APP_ENV") == "production"
    assert env_value(worker, "APP_ENV_NODE_ID") == "auto"
    assert env_value(worker, "TOKEN_SECRET_FILE") == env_value(api, "TOKEN_SECRET_FILE")
    assert worker["envFrom"] == api["envFrom"]
    for name in ("DATABASE_URL", "REDIS_URL"):
        assert env_value(worker, name) == env_value(api, name)
    assert worker["securityContext"]["readOnlyRootFilesystem"] is True
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > DRAIN_SECONDS

    worker_labels = as_dict(pod["metadata"]["labels"])
    api_policy = the_one("CiliumNetworkPolicy", "outreach")
    selector = api_policy["spec"]["endpointSelector"]["matchLabels"]
    assert not selector.items() <= worker_labels.items(), "the API policy selects the workers"
    assert "toEntities" not in str(api_policy["spec"]["egress"]), "API pods reach the internet"

    policy = the_one("CiliumNetworkPolicy", "outreach-worker")
    spec = as_dict(policy["spec"])
    assert spec["endpointSelector"]["matchLabels"].items() <= worker_labels.items()
    world_ports: set[str] = set()
    for item in as_list(spec["egress"]):
        rule = as_dict(item)
        ports = {p["port"] for tp in as_list(rule["toPorts"]) for p in as_list(tp["ports"])}
        if "toEntities" in rule:
            assert rule["toEntities"] == ["world"]
            world_ports |= ports
        else:
            assert ports <= {"53", "6379", "5432"}
    assert world_ports == {"443", "465", "587"}
    for item in as_list(spec["ingress"]):
        ports = {p["port"] for tp in as_list(item["toPorts"]) for p in as_list(tp["ports"])}
        assert ports == {str(metrics_port)}
