"""The project's wheel, built as pip would build it for a user (what the packaging tests and the
client-only install test both install)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build_wheel(out: Path) -> Path:
    """Builds the wheel of this checkout into `out` (no dependencies, no build isolation: the
    build backend is already in the test environment) and returns its path."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    return next(out.glob("participation_grpc-*.whl"))
