"""The SQL at the top level (sql/) is found by migrate however the service is installed."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import asyncpg
import pytest

from tests.postgres import scratch_database
from tests.wheel import build_wheel

ROOT = Path(__file__).resolve().parent.parent
SQL_FILES = sorted(str(p.relative_to(ROOT / "sql")) for p in (ROOT / "sql").rglob("*.sql"))


def _installed_sql() -> list[str]:
    found = []
    for folder in ("", "migrations", "procedures", "repairs"):
        base = files("participation_grpc.sql").joinpath(folder) if folder else files("participation_grpc.sql")
        found += [f"{folder}/{p.name}".lstrip("/") for p in base.iterdir() if p.name.endswith(".sql")]
    return sorted(found)


def test_editable_install_reads_the_checkouts_sql_folder() -> None:
    assert Path(str(files("participation_grpc.sql"))) == ROOT / "sql"
    assert _installed_sql() == SQL_FILES


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield build_wheel(tmp_path_factory.mktemp("wheel"))


def test_wheel_carries_every_sql_file_under_the_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(
        n.removeprefix("participation_grpc/sql/")
        for n in names
        if n.startswith("participation_grpc/sql/") and n.endswith(".sql")
    )
    assert shipped == SQL_FILES


@pytest.fixture
def wheel_site(wheel: Path, tmp_path: Path) -> Path:
    """The wheel installed into a folder of its own (its dependencies come from this venv)."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    return target


async def _python(*args: str, env: dict[str, str], cwd: Path) -> str:
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, *args], env=env, check=True, capture_output=True, text=True, cwd=cwd
    )
    return done.stdout


async def test_migrate_from_an_installed_wheel_applies_every_migration(
    wheel_site: Path, tmp_path: Path, template: tuple[str, str]
) -> None:
    dsn, _ = template
    async with scratch_database(dsn, "participation_wheel") as url:
        # PYTHONPATH comes before the editable install's finder: this runs the wheel's copy.
        env = {**os.environ, "PYTHONPATH": str(wheel_site), "DATABASE_URL": url}
        where = await _python(
            "-c", "import participation_grpc.migrate as m; print(m.__file__)", env=env, cwd=tmp_path
        )
        assert where.strip().startswith(str(wheel_site))
        await _python("-m", "participation_grpc", "migrate", env=env, cwd=tmp_path)
        conn = await asyncpg.connect(url)
        try:
            versions = {
                r["version"]
                for r in await conn.fetch("SELECT version FROM activity.participation_schema_migrations")
            }
        finally:
            await conn.close()
    assert {p.removeprefix("migrations/") for p in SQL_FILES if p.startswith("migrations/")} <= versions


def test_docker_image_builds_its_wheel_from_the_package_and_the_sql_folder() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    copied = [line.split()[1] for line in lines if re.match(r"COPY\s+(?!--)", line)]
    assert {"participation_grpc", "sql", "pyproject.toml"} <= set(copied)
    assert "sql" not in (ROOT / ".dockerignore").read_text().split()
