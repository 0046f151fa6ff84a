"""The demo data of `participation-grpc dev`: its fixed ids and the loader of sql/demo.sql."""

from __future__ import annotations

import uuid
from importlib.resources import files

import asyncpg

DEMO_SQL = files("participation_grpc.sql") / "demo.sql"

# The ids the banner and the README name; sql/demo.sql creates them.
DEMO_USER_ID = uuid.UUID("10000000-0000-4000-8000-000000000001")
DEMO_USERNAME = "demo"
SUNDAY_RUN_ID = uuid.UUID("a0000000-0000-4000-8000-000000000001")  # public, seats free
# Demo organizes it (so may watch it); full, so finn's join lands on its waitlist.
SATURDAY_HIKE_ID = uuid.UUID("a0000000-0000-4000-8000-000000000011")
FINN_USER_ID = uuid.UUID("10000000-0000-4000-8000-000000000009")


async def load_demo(dsn: str) -> None:
    """Upsert the demo users and activities and reset their participation state (one
    transaction; safe on every start, also while another load runs)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(DEMO_SQL.read_text())
    finally:
        await conn.close()
