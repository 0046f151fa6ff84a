"""The `participation-grpc` command: serve | migrate | reconcile | token | dev."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import uuid
from importlib import metadata

DISTRIBUTION = "participation-grpc"


def missing_server_packages() -> list[str]:
    """The distributions of the [server] extra that are not installed: a plain `pip install
    participation-grpc` (the client package) has none of them. [] when there is no install
    metadata to read (run from a source tree)."""
    try:
        requirements = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return []
    missing = []
    for requirement in requirements:
        if not re.search(r"""extra\s*==\s*["']server["']""", requirement):
            continue
        name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
        assert name, requirement
        try:
            metadata.distribution(name[0])
        except metadata.PackageNotFoundError:
            missing.append(name[0])
    return missing


def main(argv: list[str] | None = None) -> int:
    # Before anything imports the server's modules (settings needs cryptography, serve asyncpg):
    # the client package alone gets one line saying what to install, not an ImportError.
    missing = missing_server_packages()
    if missing:
        print(
            f"participation-grpc: the server needs {DISTRIBUTION}[server] "
            f"(pip install '{DISTRIBUTION}[server]'); missing: {', '.join(missing)}",
            file=sys.stderr,
        )
        return 2
    from participation_grpc import logs
    from participation_grpc.settings import ConfigError, Settings

    parser = argparse.ArgumentParser(prog="participation-grpc", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the gRPC service (configured by the environment)")
    migrating = commands.add_parser(
        "migrate",
        help="apply the schema and procedures to DATABASE_URL and repair inconsistent data; prints a report",
    )
    migrating.add_argument(
        "--dry-run",
        action="store_true",
        help="report what would be applied and repaired, then roll it all back",
    )
    commands.add_parser(
        "reconcile", help="recompute every activity's counters from its rows and print what was fixed"
    )
    token = commands.add_parser("token", help="mint a development access token (HS256)")
    token.add_argument("user_id", type=uuid.UUID, help="the user the token acts for")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    commands.add_parser(
        "dev",
        help="migrate, load demo data and serve on 127.0.0.1 "
        "(embedded PostgreSQL when DATABASE_URL is unset)",
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_environ()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings)
    if args.command == "token":
        from participation_grpc.auth import mint_token

        print(mint_token(settings, args.user_id, args.ttl))
        return 0
    if args.command == "dev":
        from participation_grpc.devserver import run_dev

        try:
            return asyncio.run(run_dev(settings))
        except ConfigError as exc:  # found only when starting (a port already taken)
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
    if not settings.database_url:
        print("configuration error: DATABASE_URL is required", file=sys.stderr)
        return 2
    if args.command == "migrate":
        from participation_grpc.migrate import MigrationError, migrate

        try:
            report = asyncio.run(migrate(settings.database_url, dry_run=args.dry_run))
        except MigrationError as exc:
            print(f"migrate: {exc}", file=sys.stderr)
            return 1
        print(report.summary())
        return 0
    if args.command == "reconcile":
        from participation_grpc.reconcile import reconcile_database

        fixes = asyncio.run(reconcile_database(settings.database_url))
        for fix in fixes:
            print(f"fixed {fix}")
        print(f"{len(fixes)} fixes" if fixes else "nothing to fix")
        return 0
    try:
        if settings.workers > 1:
            from participation_grpc.workers import supervise

            return supervise(settings)
        from participation_grpc.app import serve

        return asyncio.run(serve(settings))
    except ConfigError as exc:  # found only when starting (a port already taken)
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
