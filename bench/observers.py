"""What the call observers (metrics, access log) cost per call.

1. In process: started() + finished() of each observer on a stand-in call, microseconds per call.
2. A real server per mode (no observers / metrics / metrics + JSON access log to /dev/null), its
   own CPU time per call over N health Checks and N JoinActivity calls (of an unknown activity:
   auth, one statement, NOT_FOUND; no seeding needed), modes interleaved and repeated.

    DATABASE_URL=postgresql://... .venv/bin/python bench/observers.py [--calls 4000]

DATABASE_URL must hold a migrated database (`make migrate`, or the one `make run` uses).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import time
import uuid
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

MODES = ("none", "metrics", "all")
CONCURRENCY = 8


class _Context:
    """Enough of a grpc ServicerContext for the observers."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", "Bearer x"), ("x-request-id", "bench-1"))

    async def send_initial_metadata(self, metadata: object) -> None:
        pass

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"


async def in_process(calls: int) -> None:
    from participation_grpc import logs
    from participation_grpc.accesslog import AccessLog
    from participation_grpc.metrics import CallMetrics
    from participation_grpc.pipeline import Call

    handler = logging.StreamHandler(_devnull())  # formatted and written, as in production
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    context: Any = _Context()
    method = "/participation.v1.ParticipationService/JoinActivity"
    for name, observer in (("CallMetrics", CallMetrics()), ("AccessLog (JSON)", AccessLog())):
        for _ in range(1000):  # warm the per-method caches
            call = Call(method, context)
            await observer.started(call)
            observer.finished(call, grpc.StatusCode.OK, "")
        started = time.perf_counter()
        for _ in range(calls):
            call = Call(method, context)
            await observer.started(call)
            observer.finished(call, grpc.StatusCode.OK, "")
        print(f"  {name:18} {(time.perf_counter() - started) / calls * 1e6:6.1f} us per call")


def _devnull() -> Any:
    return open(os.devnull, "w")  # open as long as the benchmark runs


async def serve(mode: str) -> None:
    """The server side: one line with the port, then CPU time per window between two lines."""
    from participation_grpc import logs
    from participation_grpc.app import running
    from participation_grpc.settings import Settings

    settings = Settings(
        database_url=os.environ["DATABASE_URL"],
        grpc_host="127.0.0.1",
        grpc_port=0,
        rate_limit_enabled=False,
        shutdown_pause_seconds=0,
        log_format="json",
    )
    logs.configure(settings)  # stderr is /dev/null: formatted and written, as in production
    loop = asyncio.get_running_loop()
    async with running(settings) as app:
        del app.pipeline.observers[MODES.index(mode) :]
        print(app.port, flush=True)
        while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "start":
            cpu = time.process_time()
            await loop.run_in_executor(None, sys.stdin.readline)
            print(time.process_time() - cpu, flush=True)


async def drive(mode: str, calls: int) -> dict[str, float]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        mode,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None
    port = int(await proc.stdout.readline())
    from participation_grpc.auth import mint_token
    from participation_grpc.settings import Settings
    from participation_grpc.v1 import participation_pb2 as pb
    from participation_grpc.v1 import participation_pb2_grpc as pb_grpc

    token = mint_token(Settings(), uuid.uuid4())
    per_call = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        stub = pb_grpc.ParticipationServiceStub(channel)
        auth = (("authorization", f"Bearer {token}"),)

        async def check() -> None:
            await health.Check(health_pb2.HealthCheckRequest())

        async def join() -> None:
            try:
                await stub.JoinActivity(pb.JoinActivityRequest(activity_id=str(uuid.uuid4())), metadata=auth)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND, exc

        for name, one in (("Check", check), ("JoinActivity", join)):
            for _ in range(300):
                await one()
            gate = asyncio.Semaphore(CONCURRENCY)

            async def gated(one: Any = one, gate: asyncio.Semaphore = gate) -> None:
                async with gate:
                    await one()

            proc.stdin.write(b"start\n")
            await proc.stdin.drain()
            await asyncio.gather(*(gated() for _ in range(calls)))
            proc.stdin.write(b"stop\n")
            await proc.stdin.drain()
            per_call[name] = float(await proc.stdout.readline()) / calls * 1e6
    proc.stdin.write(b"end\n")
    await proc.stdin.drain()
    await proc.wait()
    return per_call


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        await serve(args.serve)
        return
    print(f"observers in process, {args.calls * 25} calls:")
    await in_process(args.calls * 25)
    results: dict[str, dict[str, list[float]]] = {m: {} for m in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            for name, cost in (await drive(mode, args.calls)).items():
                results[mode].setdefault(name, []).append(cost)
    print(
        f"server CPU per call (median of {args.rounds} rounds of {args.calls} calls, "
        f"{CONCURRENCY} at a time):"
    )
    base = {name: statistics.median(v) for name, v in results["none"].items()}
    for mode in MODES:
        line = []
        for name, values in results[mode].items():
            cost = statistics.median(values)
            line.append(f"{name} {cost:6.1f} us ({cost - base[name]:+5.1f})")
        print(f"  {mode:8} " + "   ".join(line))


if __name__ == "__main__":
    asyncio.run(main())
