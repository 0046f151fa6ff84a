"""OpenTelemetry traces: a span per call continuing the caller's W3C traceparent, and a span per
statement inside it (opentelemetry-instrumentation-asyncpg), exported over OTLP/gRPC.

Imported only when OTEL_EXPORTER_OTLP_ENDPOINT is set: without it no OpenTelemetry module is
loaded at all. The call's span is opened by a pipeline observer rather than by
opentelemetry-instrumentation-grpc's server interceptor: the pipeline wraps handlers instead of
running interceptors (and the interceptor cannot wrap coroutine stream handlers, and records every
abort as an exception), while an observer sees every call with the code and reason the caller got,
refusals included.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import SpanKind, Status, StatusCode

from participation_grpc.settings import Settings

if TYPE_CHECKING:
    from participation_grpc.pipeline import Call

# OpenTelemetry's gRPC conventions: these codes are the server's fault, the others the caller's.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
FLUSH_SECONDS = 2.0  # at shutdown; a collector that does not answer must not hold the exit


class _CallsOnly(Sampler):
    """A trace starts only at a call: statements with no call around them (the health probe's
    connection, pool set-up) would otherwise each be a trace of their own."""

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if kind is SpanKind.SERVER:
            return ALWAYS_ON.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )
        return SamplingResult(Decision.DROP)

    def get_description(self) -> str:
        return "CallsOnly"


class _Stoppable(SpanExporter):
    """An exporter whose shutdown may come early (ending its retries) and then again."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner
        self._stopped = False

    def export(self, spans: Any) -> SpanExportResult:
        return self._inner.export(spans)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._inner.shutdown()


class Tracing:
    """The tracer provider of this process and the observer that opens each call's span."""

    def __init__(self, settings: Settings, exporter: SpanExporter | None = None) -> None:
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": settings.otel_service_name}),
            # A caller's sampling decision (the traceparent's flag) is kept.
            sampler=ParentBased(root=_CallsOnly()),
        )
        self._exporter = _Stoppable(
            exporter or OTLPSpanExporter(endpoint=settings.otel_exporter_otlp_endpoint)
        )
        self.provider.add_span_processor(BatchSpanProcessor(self._exporter))
        self._tracer = self.provider.get_tracer("participation_grpc")
        self._statements = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
        self._statements.instrument(tracer_provider=self.provider)

    def close(self) -> None:
        """Sends what is still buffered, for at most FLUSH_SECONDS, then stops: an exporter still
        retrying towards a collector that is away gives up rather than hold the exit."""
        self._statements.uninstrument()
        # The SDK's own flush timeout does not bound the exporter's retries (measured: 6.8 s
        # against a refused port for a 2 s timeout), so the wait is bounded here.
        flushing = threading.Thread(target=self.provider.force_flush, daemon=True)
        flushing.start()
        flushing.join(FLUSH_SECONDS)
        self._exporter.shutdown()  # ends a retry still waiting; closes the channel
        flushing.join()
        self.provider.shutdown()

    async def started(self, call: Call) -> None:
        carrier = {
            key: value for key, value in call.context.invocation_metadata() or () if isinstance(value, str)
        }
        parent = propagate.extract(carrier)
        service, method = call.method[1:].split("/", 1)
        span = self._tracer.start_span(
            call.method[1:],
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": service,
                "rpc.method": method,
                "participation.request_id": call.request_id,
            },
        )
        call.span = span
        if span.is_recording():
            call.trace_id = format(span.get_span_context().trace_id, "032x")
        # Current for the rest of the call, so its statements' spans are children. The call runs
        # in a task of its own whose context ends with it: nothing to detach.
        otel_context.attach(trace.set_span_in_context(span, parent))

    def sent(self, call: Call) -> None:
        pass

    def finished(self, call: Call, code: grpc.StatusCode, reason: str) -> None:
        span = call.span
        if span is None:
            return
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if reason:
            span.set_attribute("participation.reason", reason)
        if call.caller is not None:
            span.set_attribute("enduser.id", str(call.caller.user_id))
        if code in _SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, reason or code.name))
        span.end()
