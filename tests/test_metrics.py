"""/metrics as Prometheus scrapes it: go-grpc-prometheus series for every call (refused ones
too), the participation_ series, the sums across worker processes, and the Grafana dashboard."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from participation_grpc.health import SERVICE_NAME
from participation_grpc.settings import ConfigError, RateLimits
from participation_grpc.v1 import participation_pb2 as pb
from tests.conftest import expect_error, serving, test_settings
from tests.network import free_port
from tests.participation import join
from tests.test_pipeline import FOREVER, open_stream, streaming_service

Code = grpc.StatusCode
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DASHBOARD = ROOT / "deploy" / "grafana" / "participation.json"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        return str(reply.read().decode())


async def scrape(port: int) -> Samples:
    text = await asyncio.to_thread(scrape_text, port)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def grpc_labels(method: str, kind: str = "unary", service: str = SERVICE_NAME) -> dict[str, str]:
    return {"grpc_type": kind, "grpc_service": service, "grpc_method": method}


async def test_every_call_is_counted_with_go_grpc_prometheus_names_and_labels(database_url: str) -> None:
    port = free_port()
    async with serving(test_settings(database_url, metrics_port=port)) as service:
        organizer, user = await service.seed.user(), await service.seed.user()
        activity = await service.seed.activity(organizer)
        before = await scrape(port)
        await join(service, user, activity)
        await expect_error(join(service, user, activity), Code.ALREADY_EXISTS, "ALREADY_JOINED")
        await expect_error(
            service.stub.JoinActivity(pb.JoinActivityRequest(activity_id=str(activity))),
            Code.UNAUTHENTICATED,
            "TOKEN_MISSING",
        )
        raw: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = service.channel.unary_unary(
            f"/{SERVICE_NAME}/JoinActivity"
        )  # raw bytes, no serializer
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await raw(b"\xff\xff\xff")
        assert caught.value.code() == Code.INVALID_ARGUMENT
        await health_pb2_grpc.HealthStub(service.channel).Check(health_pb2.HealthCheckRequest())
        after = await scrape(port)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    join_labels = grpc_labels("JoinActivity")
    assert delta("grpc_server_started_total", **join_labels) == 4
    assert delta("grpc_server_msg_received_total", **join_labels) == 4
    assert delta("grpc_server_msg_sent_total", **join_labels) == 1  # only the success answered
    assert delta("grpc_server_handling_seconds_count", **join_labels) == 4
    assert delta("grpc_server_handling_seconds_bucket", **join_labels, le="+Inf") == 4
    # grpc_code as Go writes it, so alerts written for Go services match.
    for code, count in (("OK", 1), ("AlreadyExists", 1), ("Unauthenticated", 1), ("InvalidArgument", 1)):
        assert delta("grpc_server_handled_total", **join_labels, grpc_code=code) == count, code
    for reason, code in (
        ("ALREADY_JOINED", "AlreadyExists"),
        ("TOKEN_MISSING", "Unauthenticated"),
        ("INVALID_ARGUMENT", "InvalidArgument"),
    ):
        assert (
            delta(
                "participation_rpc_failures_total",
                grpc_service=SERVICE_NAME,
                grpc_method="JoinActivity",
                grpc_code=code,
                reason=reason,
            )
            == 1
        ), reason
    health = grpc_labels("Check", service="grpc.health.v1.Health")
    assert delta("grpc_server_handled_total", **health, grpc_code="OK") == 1
    # Two statements reached the database (the refused token and body never did).
    assert delta("participation_db_statements_total", procedure="sp_join_activity", outcome="ok") == 1
    assert delta("participation_db_statements_total", procedure="sp_join_activity", outcome="refused") == 1
    assert delta("participation_db_statement_seconds_count", procedure="sp_join_activity") == 2
    assert delta("participation_db_pool_acquire_seconds_count") == 2
    assert value(after, "participation_db_pool_size") >= 1
    assert value(after, "participation_db_pool_max") == 20


async def test_rate_limit_decisions_and_the_backend_are_counted(database_url: str) -> None:
    port = free_port()
    settings = test_settings(
        database_url, metrics_port=port, rate_limit_enabled=True, rate_limits=RateLimits(write=1)
    )
    async with serving(settings) as service:
        organizer, user = await service.seed.user(), await service.seed.user()
        activity = await service.seed.activity(organizer)
        before = await scrape(port)
        await join(service, user, activity)
        await expect_error(join(service, user, activity), Code.RESOURCE_EXHAUSTED, "RATE_LIMITED")
        after = await scrape(port)
    decided = {
        outcome: value(after, "participation_ratelimit_decisions_total", limit_class="write", outcome=outcome)
        - value(before, "participation_ratelimit_decisions_total", limit_class="write", outcome=outcome)
        for outcome in ("allowed", "refused")
    }
    assert decided == {"allowed": 1, "refused": 1}
    assert value(after, "participation_ratelimit_backend", backend="local") == 1  # no REDIS_URL
    assert value(after, "participation_ratelimit_backend", backend="redis") == 0
    refused = {
        "grpc_service": SERVICE_NAME,
        "grpc_method": "JoinActivity",
        "grpc_code": "ResourceExhausted",
        "reason": "RATE_LIMITED",
    }
    assert (
        value(after, "participation_rpc_failures_total", **refused)
        - value(before, "participation_rpc_failures_total", **refused)
        == 1
    )


async def test_streams_count_messages_and_open_streams_and_overload_is_counted(database_url: str) -> None:
    port = free_port()
    async with streaming_service(database_url, metrics_port=port, grpc_max_concurrent_rpcs=1) as service:
        stream_labels = grpc_labels("TestStream", kind="server_stream")
        open_labels = {"grpc_service": SERVICE_NAME, "grpc_method": "TestStream"}
        before = await scrape(port)
        stream = open_stream(service, FOREVER, uuid.uuid4())
        for _ in range(3):
            await stream.read()
        during = await scrape(port)
        # The stream holds the only place: a call now is refused before its handler.
        await expect_error(join(service, uuid.uuid4(), uuid.uuid4()), Code.RESOURCE_EXHAUSTED, "OVERLOADED")
        stream.cancel()
        # The server hears of the cancel a moment later, and a scrape (another thread) may read
        # the counters half-way through the call's end: ask until both show it.
        for _ in range(200):
            after = await scrape(port)
            if value(after, "participation_streams_open", **open_labels) == value(
                before, "participation_streams_open", **open_labels
            ) and value(after, "grpc_server_handled_total", **stream_labels, grpc_code="Canceled") > value(
                before, "grpc_server_handled_total", **stream_labels, grpc_code="Canceled"
            ):
                break
            await asyncio.sleep(0.05)

    def delta(samples: Samples, name: str, **labels: str) -> float:
        return value(samples, name, **labels) - value(before, name, **labels)

    assert delta(during, "grpc_server_started_total", **stream_labels) == 1
    assert delta(during, "grpc_server_msg_sent_total", **stream_labels) == 3
    assert delta(during, "participation_streams_open", **open_labels) == 1
    assert delta(after, "participation_streams_open", **open_labels) == 0
    assert delta(after, "grpc_server_handled_total", **stream_labels, grpc_code="Canceled") == 1
    assert (
        delta(
            after, "grpc_server_handled_total", **grpc_labels("JoinActivity"), grpc_code="ResourceExhausted"
        )
        == 1
    )
    assert (
        delta(
            after,
            "participation_rpc_failures_total",
            grpc_service=SERVICE_NAME,
            grpc_method="JoinActivity",
            grpc_code="ResourceExhausted",
            reason="OVERLOADED",
        )
        == 1
    )


async def test_metrics_port_zero_serves_nothing_and_a_taken_port_stops_the_start(database_url: str) -> None:
    async with serving(test_settings(database_url, metrics_port=0)) as service:
        assert service.app.telemetry.endpoint is None
    port = free_port()
    async with serving(test_settings(database_url, metrics_port=port)) as service:
        assert service.app.telemetry.endpoint is not None
        with pytest.raises(ConfigError, match=f"METRICS_PORT: cannot listen on 127.0.0.1:{port}"):
            async with serving(test_settings(database_url, metrics_port=port, metrics_host="127.0.0.1")):
                pass


def _dashboard_queries() -> Iterator[str]:
    def walk(node: object) -> Iterator[str]:
        if isinstance(node, dict):
            for key, item in node.items():
                if key in ("expr", "query") and isinstance(item, str):
                    yield item
                else:
                    yield from walk(item)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    return walk(json.loads(DASHBOARD.read_text()))


async def test_the_grafana_dashboard_queries_only_series_the_service_exports(database_url: str) -> None:
    queries = list(_dashboard_queries())
    assert len(queries) >= 10
    port = free_port()
    settings = test_settings(database_url, metrics_port=port, rate_limit_enabled=True)
    async with serving(settings) as service:
        organizer, user = await service.seed.user(), await service.seed.user()
        await join(service, user, await service.seed.activity(organizer))
        watch = health_pb2_grpc.HealthStub(service.channel).Watch(health_pb2.HealthCheckRequest())
        await watch.read()  # a stream's series exist
        text = await asyncio.to_thread(scrape_text, port)
        watch.cancel()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    exported: dict[str, set[str]] = {}  # sample name -> label names
    for family in families.values():
        names = {family.name, *(s.name for s in family.samples)}
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_count", "_sum")}
        labels = {label for s in family.samples for label in s.labels}
        for name in names:
            exported.setdefault(name, set()).update(labels)
    used = set()
    for query in queries:
        for name in re.findall(r"\b((?:grpc_server|participation)_[a-z_]+)\b", query):
            assert name in exported, f"the dashboard queries {name}, which is not exported"
            used.add(name)
        for selector in re.findall(r"\b((?:grpc_server|participation)_[a-z_]+)\{([^}]*)\}", query):
            for label in re.findall(r"([a-z_]+)\s*[=!~]", selector[1]):
                assert label in exported[selector[0]] | {"le", "job", "instance"}, (
                    f"{selector[0]} has no label {label}"
                )
    # Every family the service exports is on the dashboard.
    ours = {name for name in families if name.startswith(("grpc_server_", "participation_"))}
    shown = {name for name in ours if any(n.startswith(name) for n in used)}
    assert ours == shown, f"not on the dashboard: {sorted(ours - shown)}"


async def _checks(port: int, connections: int) -> None:
    """One health Check on each of `connections` new connections (each lands on some worker)."""
    for _ in range(connections):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=60
            )


async def test_serve_with_workers_sums_the_series_of_every_worker_on_one_port(database_url: str) -> None:
    grpc_port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "WORKERS": "2",
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(grpc_port),
        "METRICS_HOST": "127.0.0.1",
        "METRICS_PORT": str(metrics_port),
        "RATE_LIMIT_ENABLED": "false",
        "SHUTDOWN_PAUSE_SECONDS": "0",
        "DB_POOL_MAX_SIZE": "20",
    }
    supervisor = await asyncio.create_subprocess_exec(
        str(BIN / "participation-grpc"), "serve", env=env, stderr=asyncio.subprocess.PIPE
    )
    assert supervisor.stderr is not None
    started = b""
    try:
        while started.count(b" serving on ") < 2:  # both workers listen
            line = await asyncio.wait_for(supervisor.stderr.readline(), 60)
            assert line, started.decode()
            started += line
        await _checks(grpc_port, 20)
        samples = await scrape(metrics_port)  # the supervisor's endpoint: no worker has one
    finally:
        supervisor.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(supervisor.communicate(), 60)
    assert supervisor.returncode == 0, (started + stderr).decode()
    check = grpc_labels("Check", service="grpc.health.v1.Health")
    assert value(samples, "grpc_server_started_total", **check) == 20
    assert value(samples, "grpc_server_handled_total", **check, grpc_code="OK") == 20
    # Each worker's pool allows 20: both workers' series are in the sum.
    assert value(samples, "participation_db_pool_max") == 40


def test_for_workers_refuses_a_process_whose_series_already_exist() -> None:
    from participation_grpc import exporter, metrics  # imported: this process's series exist

    assert metrics.STARTED is not None
    with pytest.raises(RuntimeError, match=r"before participation_grpc\.metrics"):
        with exporter.for_workers(test_settings("postgresql://unused")):
            pass
