"""Process-wide counters, read through snapshot() (tests, a debugger); no exporter yet."""

from __future__ import annotations

_registry: dict[str, Counter] = {}


class Counter:
    """A monotonically increasing count of events in this process."""

    def __init__(self, name: str, description: str) -> None:
        self.name = name
        self.description = description
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


def counter(name: str, description: str) -> Counter:
    """The counter with this name, created on first use so every module shares one."""
    if name not in _registry:
        _registry[name] = Counter(name, description)
    return _registry[name]


def snapshot() -> dict[str, int]:
    """Every counter's current value, by name."""
    return {name: c.value for name, c in _registry.items()}


# WORKERS > 1 (workers.py): each worker is a process of its own, so an exporter must sum their
# counters. The supervisor calls these two; they are where a multiprocess registry is prepared
# (a directory shared by the workers, named in their environment) and told of a dead worker.


def before_workers() -> None:
    """The supervisor is about to start its workers (it has imported nothing else yet)."""


def worker_exited(pid: int) -> None:
    """The worker with this pid has exited and been reaped; its counters stay summed."""
