"""deploy/kubernetes: valid for the Kubernetes API (kubernetes-validate, strict) and consistent
with the service it runs (probes, ports, grace periods, settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from participation_grpc.health import SERVICE_NAME
from participation_grpc.settings import Settings
from tests.test_compose import _readme_settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
# The oldest release these manifests target (native gRPC probes are GA since 1.27) and the newest
# schema the package knows.
VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
SECRET_KEYS = {"DATABASE_URL", "JWT_SECRET_KEY", "REDIS_URL"}


def _resources() -> dict[str, dict[str, Any]]:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    docs = {}
    for name in listed:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            docs[doc["kind"]] = doc
    return docs


@pytest.fixture(scope="module")
def resources() -> dict[str, dict[str, Any]]:
    return _resources()


def _container(resource: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = resource["spec"]["template"]["spec"]["containers"]
    (container,) = containers
    return container


def test_kustomization_lists_every_manifest_of_the_folder() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_for_the_kubernetes_api(
    version: str, resources: dict[str, dict[str, Any]]
) -> None:
    assert set(resources) == {
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Job",
    }
    for resource in resources.values():
        kubernetes_validate.validate(resource, version, strict=True)  # raises on any error


def test_deployment_probes_ask_grpc_health_on_the_service_port(resources: dict[str, dict[str, Any]]) -> None:
    container = _container(resources["Deployment"])
    port = int(resources["ConfigMap"]["data"]["GRPC_PORT"])
    assert {"name": "grpc", "containerPort": port, "protocol": "TCP"} in container["ports"]
    assert container["readinessProbe"]["grpc"] == {"port": port, "service": SERVICE_NAME}
    assert container["livenessProbe"]["grpc"]["port"] == port
    assert container["startupProbe"]["grpc"]["port"] == port


def test_termination_grace_outlasts_prestop_and_the_drain(resources: dict[str, dict[str, Any]]) -> None:
    spec = resources["Deployment"]["spec"]["template"]["spec"]
    pre_stop = _container(resources["Deployment"])["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    data = resources["ConfigMap"]["data"]
    drain = float(data.get("SHUTDOWN_PAUSE_SECONDS", 0)) + float(data["SHUTDOWN_GRACE_SECONDS"])
    assert spec["terminationGracePeriodSeconds"] > float(pre_stop[1]) + drain


def test_pods_run_as_the_image_user_without_privileges(resources: dict[str, dict[str, Any]]) -> None:
    for kind in ("Deployment", "Job"):
        pod = resources[kind]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001
        context = _container(resources[kind])["securityContext"]
        assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == ["ALL"]


def test_configuration_is_the_services_and_parses_in_production(resources: dict[str, dict[str, Any]]) -> None:
    data = resources["ConfigMap"]["data"]
    assert not SECRET_KEYS & set(data), "secrets belong in the Secret, not the ConfigMap"
    assert set(data) - {"METRICS_PORT"} <= _readme_settings()
    for kind in ("Deployment", "Job"):
        sources = _container(resources[kind])["envFrom"]
        assert {"configMapRef": {"name": "participation-grpc"}} in sources
        assert {"secretRef": {"name": "participation-grpc"}} in sources
    secret = {
        "DATABASE_URL": "postgresql://u@db/p",
        "REDIS_URL": "redis://redis:6379/0",
        "JWT_SECRET_KEY": "k" * 48,
    }
    settings = Settings.from_environ({**data, **secret})
    assert settings.is_production and settings.rate_limit_enabled


def test_service_hpa_and_pdb_select_the_deployments_pods(resources: dict[str, dict[str, Any]]) -> None:
    deployment = resources["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (
        resources["Service"]["spec"]["selector"],
        resources["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    named = {p["name"] for p in _container(deployment)["ports"]}
    assert {p["targetPort"] for p in resources["Service"]["spec"]["ports"]} <= named
    hpa = resources["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["minReplicas"] > resources["PodDisruptionBudget"]["spec"]["minAvailable"]


def test_migrate_job_runs_migrate_from_the_same_image(resources: dict[str, dict[str, Any]]) -> None:
    job, server = _container(resources["Job"]), _container(resources["Deployment"])
    assert job["args"] == ["participation-grpc", "migrate"] and job["image"] == server["image"]
    assert resources["Job"]["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert server["args"] == ["participation-grpc", "serve"]
