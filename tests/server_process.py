"""`participation-grpc serve` in a process of its own, for what needs a real process: signals,
its memory, its exit code."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.network import free_port

BIN = Path(sys.executable).parent
READY_SECONDS = 60.0


@dataclass
class ServerProcess:
    process: asyncio.subprocess.Process
    address: str

    def rss_bytes(self) -> int:
        """Resident memory now (VmRSS of /proc/PID/status)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


def serve_environ(database_url: str, port: int, **environ: str) -> dict[str, str]:
    """What a test's `serve` process runs with: this process's environment, the database, a
    loopback port, rate limits off and no Redis (unless `environ` says otherwise)."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "GRPC_PORT": str(port),
        "GRPC_HOST": "127.0.0.1",
        "RATE_LIMIT_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
        **environ,
    }
    if "REDIS_URL" not in environ:
        env.pop("REDIS_URL", None)
    return env


@asynccontextmanager
async def server_process(database_url: str, **environ: str) -> AsyncIterator[ServerProcess]:
    """Started, and SERVING, before the block; killed after it if it is still running."""
    port = free_port()
    env = serve_environ(database_url, port, **environ)
    process = await asyncio.create_subprocess_exec(str(BIN / "participation-grpc"), "serve", env=env)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=READY_SECONDS
            )
        yield ServerProcess(process, f"127.0.0.1:{port}")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
