"""The /metrics endpoint on METRICS_HOST:METRICS_PORT, for one process or for WORKERS.

One process (WORKERS=1): `app.running()` serves this process's registry.

Several worker processes: prometheus-client's multiprocess mode. Each worker writes its series
to memory-mapped files in one directory and the supervisor alone serves /metrics, summing them
(counters and histograms add up; gauges as metrics.py says). prometheus-client decides the mode
when it is first imported, from PROMETHEUS_MULTIPROC_DIR; so the supervisor enters `for_workers`
before anything imports participation_grpc.metrics, and the workers it starts afterwards (spawned
or forked) inherit the variable. Workers then serve no endpoint of their own. The operator never
sets the variable: the directory is made here and removed when the supervisor ends.

    with exporter.for_workers(settings):
        ... start the workers ...
        exporter.worker_exited(pid)  # for each worker that ended, before one replaces it
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from wsgiref.simple_server import WSGIServer

from participation_grpc.settings import ConfigError, Settings

log = logging.getLogger(__name__)
MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


class Endpoint:
    """An HTTP server answering /metrics from a thread of its own (scrapes never wait for the
    event loop, and a busy event loop never fails a scrape)."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def in_workers() -> bool:
    """True in a process whose series go to the supervisor's directory."""
    from prometheus_client import values

    return values.ValueClass is not values.MutexValue


def serve(settings: Settings) -> Endpoint | None:
    """This process's endpoint, unless METRICS_PORT=0 or a supervisor serves the workers'."""
    if settings.metrics_port == 0 or in_workers():
        return None
    from prometheus_client import REGISTRY

    return _start(settings, REGISTRY)


@contextmanager
def for_workers(settings: Settings) -> Iterator[Endpoint | None]:
    """In the supervisor, before it starts workers: the shared directory and the one endpoint
    that sums every worker's series. Yields the endpoint (None when METRICS_PORT=0)."""
    if "participation_grpc.metrics" in sys.modules and not in_workers():
        raise RuntimeError(
            "exporter.for_workers must be entered before participation_grpc.metrics "
            "is imported: its series would stay in this process"
        )
    directory = tempfile.mkdtemp(prefix="participation-metrics-")
    os.environ[MULTIPROC_VARIABLE] = directory  # for this process's children, not a setting
    from prometheus_client import CollectorRegistry, multiprocess, values

    # If prometheus-client was imported already, its mode is decided again now.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    endpoint = _start(settings, registry) if settings.metrics_port else None
    try:
        yield endpoint
    finally:
        if endpoint is not None:
            endpoint.close()
        del os.environ[MULTIPROC_VARIABLE]
        shutil.rmtree(directory, ignore_errors=True)


def worker_exited(pid: int) -> None:
    """Forget the live gauges (pool, streams, backend) of a worker that ended; its counters stay
    in the sums, as counters must."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def _start(settings: Settings, registry: object) -> Endpoint:
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(settings.metrics_port, settings.metrics_host, registry)  # type: ignore[arg-type]
    except OSError as exc:
        raise ConfigError(
            f"METRICS_PORT: cannot listen on {settings.metrics_host}:"
            f"{settings.metrics_port} ({exc.strerror or exc})"
        ) from None
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    return Endpoint(server, thread)
