"""What one App reports about itself: the pipeline's observers (metrics, access log, traces),
the /metrics endpoint and the pool sampler; started and stopped with the App."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from participation_grpc import exporter, metrics
from participation_grpc.accesslog import AccessLog
from participation_grpc.pipeline import Observer
from participation_grpc.settings import Settings

if TYPE_CHECKING:
    from participation_grpc.db import Database
    from participation_grpc.tracing import Tracing

POOL_SAMPLE_SECONDS = 1.0


class Telemetry:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # CallMetrics first: its `started` never awaits, so whatever happens to the call later,
        # every call it counts as started it also counts as handled.
        self.observers: list[Observer] = [metrics.CallMetrics(), AccessLog()]
        self.tracing: Tracing | None = None
        if settings.otel_exporter_otlp_endpoint:
            from participation_grpc.tracing import Tracing  # OpenTelemetry only when asked for

            self.tracing = Tracing(settings)
            self.observers.append(self.tracing)
        self.endpoint: exporter.Endpoint | None = None
        self._sampler: asyncio.Task[None] | None = None

    def start(self, db: Database) -> None:
        self.endpoint = exporter.serve(self.settings)
        self._sample(db)
        self._sampler = asyncio.create_task(self._sample_pool(db))

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        if self.endpoint is not None:
            self.endpoint.close()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.close)

    async def _sample_pool(self, db: Database) -> None:
        # Sampled rather than counted per statement: a gauge is a sample at scrape time anyway,
        # and this costs calls nothing.
        while True:
            await asyncio.sleep(POOL_SAMPLE_SECONDS)
            self._sample(db)

    @staticmethod
    def _sample(db: Database) -> None:
        size, idle, maximum = db.pool_sizes()
        metrics.sample_pool(size, size - idle, maximum)
