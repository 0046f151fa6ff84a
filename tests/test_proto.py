"""The API definition: generated code in step with the proto, buf lint and breaking, annotations."""

import asyncio
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from participation_grpc.v1 import participation_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
SERVICE = pb.DESCRIPTOR.services_by_name["ParticipationService"]
PROTO = "participation/v1/participation.proto"
BUF = str(Path(sys.executable).parent / "buf")  # the buf-bin wheel: no Node needed


async def run(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


def _protogen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("protogen", ROOT / "scripts" / "protogen.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _buf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BUF, *args, "--config", "buf.yaml", "--path", PROTO], cwd=ROOT, capture_output=True, text=True
    )


async def test_generated_code_matches_the_proto() -> None:
    code, out = await run(sys.executable, "scripts/protogen.py", "--check")
    assert code == 0, out


@pytest.fixture(scope="module")
async def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("buf") / "participation.binpb"
    code, out = await run(sys.executable, "scripts/protogen.py", "--descriptor", str(path))
    assert code == 0, out
    return path


def test_buf_standard_lint_passes(image: Path) -> None:
    linted = _buf("lint", str(image))
    assert linted.returncode == 0, linted


def test_buf_breaking_flags_a_removed_field(image: Path, tmp_path: Path) -> None:
    """make lint's breaking check, fed a proto that lost a field: buf must refuse it."""
    proto = (ROOT / "protos" / PROTO).read_text()
    field = "  string reason = 2;\n"  # CancelParticipationRequest.reason, the first of two
    (tmp_path / PROTO).parent.mkdir(parents=True)
    (tmp_path / PROTO).write_text(proto.replace(field, "", 1))
    shrunk = tmp_path / "shrunk.binpb"
    _protogen().build_descriptor(shrunk, protos=tmp_path)
    refused = _buf("breaking", str(shrunk), "--against", str(image))
    assert refused.returncode != 0 and '"reason"' in refused.stdout, refused
    assert _buf("breaking", str(image), "--against", str(image)).returncode == 0


def test_descriptor_set_carries_the_error_types_a_gateway_renders(image: Path) -> None:
    files = descriptor_pb2.FileDescriptorSet.FromString(image.read_bytes()).file
    messages = {f"{f.package}.{m.name}" for f in files for m in f.message_type}
    assert {
        "google.rpc.Status",
        "google.rpc.ErrorInfo",
        "google.rpc.BadRequest",
        "google.rpc.RetryInfo",
        "google.rpc.QuotaFailure",
    } <= messages


def test_every_rpc_has_an_http_annotation() -> None:
    assert len(SERVICE.methods) == 18
    for method in SERVICE.methods:
        rule = method.GetOptions().Extensions[annotations_pb2.http]
        assert rule.WhichOneof("pattern") in ("get", "post"), method.name
