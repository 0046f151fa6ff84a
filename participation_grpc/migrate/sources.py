"""The SQL migrate applies, read from the installed package: migrations, procedures, repairs."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

PACKAGED = files("participation_grpc.sql")
_DEFINED = re.compile(r"CREATE OR REPLACE FUNCTION activity\.(\w+)\s*\(")


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _read(folder: Traversable) -> list[tuple[str, str]]:
    return sorted((p.name, p.read_text()) for p in folder.iterdir() if p.name.endswith(".sql"))


@dataclass(frozen=True)
class Source:
    migrations: list[tuple[str, str]]  # (file name, text) in the order they apply
    procedures: str  # every procedure file, one text, replaced as a whole
    repairs: list[tuple[str, str]]

    @classmethod
    def read(cls, root: Traversable = PACKAGED) -> Source:
        return cls(
            _read(root / "migrations"),
            "\n".join(text for _, text in _read(root / "procedures")),
            _read(root / "repairs"),
        )

    @property
    def procedures_checksum(self) -> str:
        return checksum(self.procedures)

    @property
    def procedure_names(self) -> list[str]:
        """Every function name the procedures define in schema activity."""
        return sorted(set(_DEFINED.findall(self.procedures)))
