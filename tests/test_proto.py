"""The API definition: generated code in step with the proto, buf STANDARD lint, annotations."""

import asyncio
import shutil
import sys
from pathlib import Path

import pytest
from google.api import annotations_pb2

from participation_grpc.v1 import participation_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
SERVICE = pb.DESCRIPTOR.services_by_name["ParticipationService"]


async def run(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*args, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_generated_code_matches_the_proto() -> None:
    code, out = await run(sys.executable, "scripts/protogen.py", "--check")
    assert code == 0, out


@pytest.mark.skipif(shutil.which("npx") is None, reason="npx (Node.js) is needed to run buf")
async def test_buf_standard_lint_passes(tmp_path: Path) -> None:
    image = tmp_path / "participation.binpb"
    code, out = await run(sys.executable, "scripts/protogen.py", "--descriptor", str(image))
    assert code == 0, out
    code, out = await run("npx", "--yes", "@bufbuild/buf@1.75.0", "lint", str(image),
                          "--config", "buf.yaml", "--path", "participation/v1/participation.proto")
    assert code == 0, out


def test_every_rpc_has_an_http_annotation() -> None:
    assert len(SERVICE.methods) == 17
    for method in SERVICE.methods:
        rule = method.GetOptions().Extensions[annotations_pb2.http]
        assert rule.WhichOneof("pattern") in ("get", "post"), method.name
