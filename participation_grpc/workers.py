"""WORKERS > 1: `serve` supervises that many server processes sharing one port.

A worker is `python -m participation_grpc.workers INDEX PORT`: the whole service (`app.serve`,
its own pool, health watcher and limiter) bound with SO_REUSEPORT, so the kernel spreads
incoming connections over the workers. The supervisor only starts, signals and reaps them; it
opens no pool and imports no grpc.

- SIGTERM or SIGINT to the supervisor: forwarded as SIGTERM to every worker, each drains as a
  single-process server does; the supervisor exits 0 once all of them exited 0 (1 otherwise).
- A worker that exits on its own (a crash, an OOM kill, a failed start) is not restarted: the
  supervisor logs its pid and status, drains the others and exits 1. The orchestrator then
  restarts the replica as it would a single-process one, and a crash loop shows as one instead
  of hiding behind a supervisor that keeps itself alive.
- The supervisor killed outright (SIGKILL): each worker sees its stdin pipe close and drains.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from types import FrameType
from typing import TYPE_CHECKING

# Not metrics: prometheus-client picks its mode when first imported, after for_workers here.
from participation_grpc import exporter, logs
from participation_grpc.settings import Settings

if TYPE_CHECKING:
    import grpc

    from participation_grpc.app import App
    from participation_grpc.pipeline import Call

log = logging.getLogger("participation_grpc.workers")  # also when run as __main__
# Beyond a worker's own bound on its drain (pause + grace + closing), before it is killed.
_DRAIN_MARGIN_SECONDS = 15


def supervise(settings: Settings) -> int:
    """Runs settings.workers workers until they are stopped; the exit status of `serve`."""
    reservation = None
    port = settings.grpc_port
    if port == 0:
        reservation = _reserve_port(settings.grpc_host)
        port = reservation.getsockname()[1]
    try:
        return Supervisor(settings, port).run()
    finally:
        if reservation is not None:
            reservation.close()


def _reserve_port(host: str) -> socket.socket:
    """GRPC_PORT=0: one port for every worker, picked here and held until the supervisor exits.
    The socket is bound with SO_REUSEPORT but never listens, so the kernel hands it no
    connection; it only keeps the port from going to anyone else."""
    host = host.strip("[]")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    return sock


class Supervisor:
    def __init__(self, settings: Settings, port: int) -> None:
        self.settings = settings
        self.port = port
        self.workers: dict[int, tuple[int, subprocess.Popen[bytes]]] = {}  # pid -> (index, proc)
        self.stopping = False
        self.status = 0

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGALRM, self._on_deadline)
        # The workers' series go to a directory they inherit; the one /metrics here sums them.
        with exporter.for_workers(self.settings):
            self._supervise()
        signal.alarm(0)
        return self.status

    def _supervise(self) -> None:
        for index in range(1, self.settings.workers + 1):
            if self.stopping:
                break
            self._start(index)
        log.info(
            "supervising %d workers on %s:%d (pids %s)",
            len(self.workers),
            self.settings.grpc_host,
            self.port,
            " ".join(map(str, self.workers)),
        )
        while self.workers:
            pid, wait_status = os.wait()  # retried after each signal handler (PEP 475)
            if pid not in self.workers:
                continue
            index, proc = self.workers.pop(pid)
            proc.returncode = os.waitstatus_to_exitcode(wait_status)
            exporter.worker_exited(pid)
            if proc.stdin is not None:
                proc.stdin.close()
            if proc.returncode != 0 or not self.stopping:
                self.status = 1
                log.error(
                    "worker %d (pid %d) %s%s",
                    index,
                    pid,
                    _describe(proc.returncode),
                    "" if self.stopping else ": stopping the other workers",
                )
                self.stop()
            else:
                log.info("worker %d (pid %d) drained and exited", index, pid)

    def _start(self, index: int) -> None:
        # stdin is a pipe only the supervisor writes to: its end closes when the supervisor dies
        # in any way, and the worker then drains (close_fds keeps it out of the other workers).
        proc = subprocess.Popen(
            [sys.executable, "-m", "participation_grpc.workers", str(index), str(self.port)],
            stdin=subprocess.PIPE,
        )
        self.workers[proc.pid] = (index, proc)

    def stop(self) -> None:
        """SIGTERM to every worker (again, if asked again: a worker stops once), and a deadline
        by which a worker still running is killed."""
        if not self.stopping:
            self.stopping = True
            signal.alarm(
                math.ceil(
                    self.settings.shutdown_pause_seconds
                    + self.settings.shutdown_grace_seconds
                    + _DRAIN_MARGIN_SECONDS
                )
            )
        for pid in self.workers:
            _signal(pid, signal.SIGTERM)  # not Popen.send_signal: it would reap the process

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("%s: draining %d workers", signal.Signals(signum).name, len(self.workers))
        self.stop()

    def _on_deadline(self, signum: int, frame: FrameType | None) -> None:
        log.error(
            "workers still running after the drain deadline, killed: pids %s",
            " ".join(map(str, self.workers)),
        )
        for pid in self.workers:
            _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:  # pragma: no cover - a reaped pid is removed before this runs
        pass


def _describe(returncode: int) -> str:
    if returncode < 0:
        return f"died of {signal.Signals(-returncode).name}"
    return f"exited with status {returncode}"


# -- one worker ----------------------------------------------------------------------------


class Tally:
    """The calls this worker answered, by method and status code, for its last log line (an
    observer of the pipeline: it sees every call, refused or not)."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    async def started(self, call: Call) -> None:
        pass

    def sent(self, call: Call) -> None:
        pass

    def finished(self, call: Call, code: grpc.StatusCode, reason: str) -> None:
        self.counts[call.name, code.name] += 1

    def __str__(self) -> str:
        total = sum(self.counts.values())
        spread = ", ".join(f"{name} {code} {n}" for (name, code), n in sorted(self.counts.items()))
        return f"{total} calls answered ({spread})"


async def work(settings: Settings, index: int) -> int:
    from participation_grpc.app import serve

    tally = Tally()

    def ready(app: App) -> None:
        app.pipeline.observers.append(tally)
        # Added once serve's signal handlers are in place, so the SIGTERM it sends is theirs.
        asyncio.get_running_loop().add_reader(sys.stdin.fileno(), _stop_on_eof)
        log.info("worker %d serving on %s", index, app.address)

    code = await serve(settings, on_ready=ready)
    log.info("worker %d drained: %s", index, tally)
    return code


def _stop_on_eof() -> None:
    """The supervisor's end of stdin closed: it is gone, so this worker drains and exits."""
    if not os.read(sys.stdin.fileno(), 512):
        asyncio.get_running_loop().remove_reader(sys.stdin.fileno())
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str]) -> int:
    index, port = int(argv[0]), int(argv[1])
    settings = Settings.from_environ()  # the supervisor's environment, checked there already
    logs.configure(settings)
    return asyncio.run(work(dataclasses.replace(settings, grpc_port=port), index))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
