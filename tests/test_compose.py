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
    "DATABASE_URL", "REDIS_URL", "JWT_SECRET_KEY", "JWT_ALGORITHM", "JWT_PUBLIC_KEY",
    "JWT_ISSUER", "JWT_AUDIENCE", "JWT_LEEWAY_SECONDS", "GRPC_PORT", "RATE_LIMIT_ENABLED",
    "RATE_LIMIT_WRITE_PER_MINUTE", "RATE_LIMIT_BULK_PER_MINUTE", "RATE_LIMIT_CONFIRM_PER_MINUTE",
    "RATE_LIMIT_READ_PER_MINUTE", "LOG_LEVEL", "ENVIRONMENT",
}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return compose["services"]  # type: ignore[no-any-return]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def test_compose_runs_postgres_redis_migrate_and_the_service(services: dict[str, Any]) -> None:
    assert set(services) == {"postgres", "redis", "migrate", SERVICE}
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


def test_compose_jwt_secret_is_a_development_placeholder(services: dict[str, Any]) -> None:
    env = _env(services[SERVICE])
    assert "dev" in env["JWT_SECRET_KEY"] and "production" in env["JWT_SECRET_KEY"]
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY"):
        Settings.from_environ({**env, "ENVIRONMENT": "production"})


def test_dockerfile_is_multi_stage_and_runs_serve_as_non_root() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    stages = [i for i, line in enumerate(lines) if re.match(r"FROM\s", line, re.I)]
    assert len(stages) >= 2
    runtime = lines[stages[-1]:]
    assert any(re.match(r"COPY\s+--from=", line, re.I) for line in runtime)
    users = [line.split()[1] for line in runtime if re.match(r"USER\s", line, re.I)]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    cmd = next(line for line in reversed(runtime) if re.match(r"CMD\s", line, re.I))
    assert "serve" in cmd and cmd.split(None, 1)[1].startswith("[")  # exec form gets SIGTERM


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".pgdata"} <= ignored
