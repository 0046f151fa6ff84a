"""Traces: nothing of OpenTelemetry loaded without OTEL_EXPORTER_OTLP_ENDPOINT; with it, `serve`
sends a span per call continuing the caller's traceparent, and a span per statement inside it, to
an OTLP receiver this test runs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from participation_grpc.auth import mint_token
from participation_grpc.health import SERVICE_NAME
from participation_grpc.settings import Settings
from participation_grpc.v1 import participation_pb2 as pb
from participation_grpc.v1 import participation_pb2_grpc as pb_grpc
from tests.network import free_port
from tests.seed import user_and_activity

BIN = Path(sys.executable).parent
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


# The tracing machinery. (redis-py 8 imports OpenTelemetry's API and metrics SDK by itself
# whenever they are installed; none of these.)
TRACING_MODULES = (
    "participation_grpc.tracing",
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter",
    "opentelemetry.instrumentation",
    "opentelemetry.propagate",
)
LOADED = textwrap.dedent("""
    import asyncio, sys
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from participation_grpc.app import running
    from participation_grpc.settings import Settings

    async def main():
        settings = Settings(database_url=sys.argv[1], grpc_host="127.0.0.1", grpc_port=0,
                            shutdown_pause_seconds=0, otel_exporter_otlp_endpoint=sys.argv[2] or None)
        async with running(settings) as app:
            async with grpc.aio.insecure_channel(app.address) as channel:
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        print(" ".join(sorted({m for m in sys.modules if m.startswith(MODULES)})))

    asyncio.run(main())
""").replace("MODULES", repr(TRACING_MODULES))


async def _loaded(database_url: str, endpoint: str) -> set[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LOADED,
        database_url,
        endpoint,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return set(out.decode().split())


async def test_without_the_endpoint_nothing_of_tracing_is_loaded(database_url: str) -> None:
    assert await _loaded(database_url, "") == set()
    # The same program with the endpoint set loads them (here towards a port nobody serves).
    loaded = await _loaded(database_url, f"http://127.0.0.1:{free_port()}")
    assert {"participation_grpc.tracing", "opentelemetry.sdk.trace"} <= loaded


class _Receiver:
    """The OTLP/gRPC trace endpoint of a collector, keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Any] = []

    async def Export(self, request: Any, context: object) -> Any:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        for resource_spans in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                self.spans += [(service, span) for span in scope.spans]
        return trace_service_pb2.ExportTraceServiceResponse()


async def test_serve_continues_the_callers_traceparent_with_spans_for_the_call_and_statement(
    database_url: str,
) -> None:
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    receiver = _Receiver()
    collector = grpc.aio.server()
    # opentelemetry-proto's _pb2_grpc modules carry no annotations (its _pb2 ones have stubs).
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        receiver, collector
    )
    otlp_port = collector.add_insecure_port("127.0.0.1:0")
    await collector.start()
    user, activity = await user_and_activity(database_url)
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(port),
        "METRICS_PORT": "0",
        "LOG_FORMAT": "json",
        "RATE_LIMIT_ENABLED": "false",
        "SHUTDOWN_PAUSE_SECONDS": "0",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
    }
    server = await asyncio.create_subprocess_exec(
        str(BIN / "participation-grpc"), "serve", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=60
            )
            token = mint_token(Settings.from_environ(env), user)
            await pb_grpc.ParticipationServiceStub(channel).JoinActivity(
                pb.JoinActivityRequest(activity_id=str(activity)),
                metadata=(
                    ("authorization", f"Bearer {token}"),
                    ("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),
                    ("x-request-id", "traced-1"),
                ),
            )
    finally:
        server.send_signal(signal.SIGTERM)  # the drain flushes what is buffered
        _, stderr = await asyncio.wait_for(server.communicate(), 60)
        await collector.stop(0)
    assert server.returncode == 0, stderr.decode()
    ours = [(service, span) for service, span in receiver.spans if span.trace_id.hex() == TRACE_ID]
    [(service, call)] = [(s, span) for s, span in ours if span.kind == span.SPAN_KIND_SERVER]
    assert service["service.name"] == "participation-grpc"
    assert call.name == f"{SERVICE_NAME}/JoinActivity"
    assert call.parent_span_id.hex() == PARENT_ID  # continues the caller's trace
    attributes = {a.key: a.value for a in call.attributes}
    assert attributes["rpc.method"].string_value == "JoinActivity"
    assert attributes["rpc.grpc.status_code"].int_value == 0
    assert attributes["participation.request_id"].string_value == "traced-1"
    assert attributes["enduser.id"].string_value == str(user)
    statements = [span for _, span in ours if span.parent_span_id == call.span_id]
    assert len(statements) == 1 and statements[0].kind == statements[0].SPAN_KIND_CLIENT
    sql = {a.key: a.value.string_value for a in statements[0].attributes}
    assert any("sp_join_activity" in value for value in sql.values()), sql
    # The access line names the trace, so logs and traces meet.
    [line] = [
        json.loads(line)
        for line in stderr.decode().splitlines()
        if '"traced-1"' in line and "JoinActivity" in line
    ]
    assert line["trace_id"] == TRACE_ID
