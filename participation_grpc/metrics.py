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
