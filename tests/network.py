"""Ports for servers a test starts itself, and a network path to PostgreSQL that goes silent."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from urllib.parse import parse_qs, urlsplit, urlunsplit


def free_port() -> int:
    """A loopback port nobody listens on right now (for a server started in a subprocess)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class SilentAfterStartup:
    """A TCP proxy to a real PostgreSQL that carries each connection's startup to its first
    ReadyForQuery and then drops whatever the client sends: the connection opens, and its next
    statement is never heard, as across a partition that began right after the connect. `dsn`
    is the server's (TCP or Unix socket); `start` answers the DSN through the proxy, without TLS
    (the proxy reads the server's message framing)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = urlsplit(dsn)
        query = parse_qs(self._dsn.query)
        self._host = query.get("host", [self._dsn.hostname or "127.0.0.1"])[0]
        self._port = int(query.get("port", [self._dsn.port or 5432])[0])
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self.opened = 0  # connections that reached ReadyForQuery
        self._opening = asyncio.Condition()
        self.dropped = 0  # bytes clients sent after that, never forwarded

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        user = self._dsn.username or "postgres"
        return urlunsplit(self._dsn._replace(netloc=f"{user}@127.0.0.1:{port}", query="sslmode=disable"))

    async def opened_at_least(self, count: int) -> None:
        async with self._opening:
            await self._opening.wait_for(lambda: self.opened >= count)

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._host.startswith("/"):  # libpq's convention for a socket directory
            server_r, server_w = await asyncio.open_unix_connection(f"{self._host}/.s.PGSQL.{self._port}")
        else:
            server_r, server_w = await asyncio.open_connection(self._host, self._port)
        self._writers += [client_w, server_w]
        ready = asyncio.Event()
        for pump in (self._to_client(server_r, client_w, ready), self._to_server(client_r, server_w, ready)):
            task = asyncio.create_task(pump)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _to_client(
        self, server: asyncio.StreamReader, client: asyncio.StreamWriter, ready: asyncio.Event
    ) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                header = await server.readexactly(5)
                kind, length = header[:1], struct.unpack("!i", header[1:])[0]
                body = await server.readexactly(length - 4)
                if kind == b"Z" and not ready.is_set():
                    ready.set()  # before the client can see it, so its next message is dropped
                    async with self._opening:
                        self.opened += 1
                        self._opening.notify_all()
                client.write(header + body)
                await client.drain()

    async def _to_server(
        self, client: asyncio.StreamReader, server: asyncio.StreamWriter, ready: asyncio.Event
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await client.read(65536):
                if ready.is_set():
                    self.dropped += len(data)
                    continue
                server.write(data)
                await server.drain()
