"""Ports for servers a test starts itself."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback port nobody listens on right now (for a server started in a subprocess)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
