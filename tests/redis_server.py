"""A real Redis for the limiter tests: REDIS_URL's server, or private ones a test may kill."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
import time

import pytest
import redis

from tests.network import free_port

DEFAULT_URL = "redis://127.0.0.1:6379/0"
START_TIMEOUT_SECONDS = 10.0


def answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


class RedisServer:
    """A private redis-server on one port, which a test can kill and start again on that port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("no redis-server binary on PATH to start a private Redis")
        self.binary = binary
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="redis-test-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        # No persistence: a restarted server starts empty, as after losing its data.
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not answers(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@functools.cache
def redis_url() -> str:
    """REDIS_URL (or the usual local port) when it answers, else a private server for the run."""
    url = os.environ.get("REDIS_URL") or DEFAULT_URL
    if answers(url):
        return url
    if shutil.which("redis-server") is None:
        pytest.skip(
            f"no Redis answers at {url} and no redis-server binary to start one; "
            "the rate-limit tests need a real Redis"
        )
    server = RedisServer()
    server.start()
    atexit.register(server.remove)
    return server.url
