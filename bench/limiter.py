"""What the rate limiter costs per call: sequential decisions against Redis and in process.

Run with `make bench`, or `.venv/bin/python bench/limiter.py --calls 20000 --redis-url URL`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

from redis.asyncio import Redis
from redis.exceptions import RedisError

from participation_grpc.ratelimit import Limiter, LocalLimiter, build_limiter
from participation_grpc.settings import RateLimits, Settings

USERS = 1000  # spread over many users, so every admitted call finds a realistic small log
CONCURRENCY = 64


async def timings(limiter: Limiter, calls: int, subjects: list[str], limit_class: str) -> list[float]:
    """Microseconds of each of `calls` sequential decisions."""
    spent = []
    for i in range(calls):
        start = time.perf_counter()
        await limiter.acquire(subjects[i % len(subjects)], limit_class)
        spent.append((time.perf_counter() - start) * 1e6)
    return spent


def report(label: str, spent: list[float]) -> None:
    ordered = sorted(spent)
    print(
        f"{label:<40} mean {statistics.fmean(spent):7.1f} µs   "
        f"p50 {ordered[len(ordered) // 2]:7.1f} µs   p99 {ordered[int(len(ordered) * 0.99)]:7.1f} µs"
    )


async def throughput(limiter: Limiter, calls: int) -> float:
    """Decisions per second with CONCURRENCY callers at once (separate users, all admitted)."""
    subjects = [str(uuid.uuid4()) for _ in range(calls)]
    start = time.perf_counter()
    for batch in range(0, calls, CONCURRENCY):
        await asyncio.gather(*(limiter.acquire(s, "read") for s in subjects[batch : batch + CONCURRENCY]))
    return calls / (time.perf_counter() - start)


async def measure(name: str, limiter: Limiter, calls: int) -> None:
    users = [str(uuid.uuid4()) for _ in range(USERS)]
    await timings(limiter, 200, [str(uuid.uuid4())], "read")  # connect, load the script
    # Default limits: reads 60/min, so calls / USERS per user stay admitted below that.
    report(f"{name}, admitted", await timings(limiter, calls, users, "read"))
    report(f"{name}, refused (over the limit)", await timings(limiter, calls, [str(uuid.uuid4())], "write"))
    print(f"{name}, {CONCURRENCY} concurrent callers: {await throughput(limiter, calls):,.0f} decisions/s")


async def _ping(client: Redis) -> float:
    start = time.perf_counter()
    await client.ping()
    return (time.perf_counter() - start) * 1e6


async def redis_answers(url: str) -> bool:
    client = Redis.from_url(url, socket_connect_timeout=1)
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    print(
        f"{args.calls} sequential decisions per row, {USERS} users, default limits, Redis at {args.redis_url}"
    )
    await measure("in process", LocalLimiter(RateLimits()), args.calls)
    if not await redis_answers(args.redis_url):
        print(f"Redis at {args.redis_url} does not answer: Redis rows skipped")
        return
    client = Redis.from_url(args.redis_url)
    report("Redis PING alone (round trip)", [await _ping(client) for _ in range(args.calls)])
    await client.aclose()
    limiter = build_limiter(Settings(redis_url=args.redis_url))
    await measure("Redis", limiter, args.calls)
    await limiter.close()


if __name__ == "__main__":
    asyncio.run(main())
