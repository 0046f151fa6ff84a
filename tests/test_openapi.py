"""make openapi: build/openapi.json describes every google.api.http rule as Envoy serves it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api import annotations_pb2

from participation_grpc.v1 import participation_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
SERVICE = pb.DESCRIPTOR.services_by_name["ParticipationService"]


def _rules() -> list[tuple[str, str, str]]:
    """(RPC, verb, path) of every http rule of the proto, additional bindings included."""
    found = []
    for method in SERVICE.methods:
        rule = method.GetOptions().Extensions[annotations_pb2.http]
        for each in (rule, *rule.additional_bindings):
            verb = each.WhichOneof("pattern")
            found.append((method.name, verb, getattr(each, verb)))
    return found


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("openapi")
    for cmd in (
        ["scripts/protogen.py", "--descriptor", str(out / "d.binpb")],
        ["scripts/openapi.py", str(out / "d.binpb"), str(out / "openapi.json")],
    ):
        subprocess.run([sys.executable, *cmd], cwd=ROOT, check=True, capture_output=True)
    document: dict[str, Any] = json.loads((out / "openapi.json").read_text())
    return document


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(verb, path, op) for path, ops in spec["paths"].items() for verb, op in ops.items()]


def test_every_http_rule_is_one_operation(spec: dict[str, Any]) -> None:
    rules = _rules()
    assert len(rules) >= len(SERVICE.methods) == 18
    operations = _operations(spec)
    assert len(operations) == len(rules)
    for rpc, verb, path in rules:
        op = spec["paths"][path][verb]
        assert op["operationId"].split("_")[0] == rpc and op["summary"]
    assert len({op["operationId"] for _, _, op in operations}) == len(operations)


def test_path_parameters_match_the_templates(spec: dict[str, Any]) -> None:
    for verb, path, op in _operations(spec):
        in_path = {p["name"] for p in op["parameters"] if p["in"] == "path"}
        assert in_path == set(re.findall(r"\{(\w+)\}", path)), (verb, path)
        if verb == "get":
            assert "requestBody" not in op
        else:
            assert not in_path & set(op["requestBody"]["content"]["application/json"]["schema"]["properties"])


def test_lists_take_their_paging_as_query_parameters(spec: dict[str, Any]) -> None:
    op = spec["paths"]["/v1/activities/{activity_id}/participants"]["get"]
    query = {p["name"] for p in op["parameters"] if p["in"] == "query"}
    assert {"page_size", "page_token", "participation_status", "role"} <= query


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_reference_resolves_and_names_are_the_protos(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    refs = set(_refs(spec))
    assert refs and all(r.removeprefix("#/components/schemas/") in schemas for r in refs)
    joined = schemas["participation.v1.JoinActivityResponse"]["properties"]
    assert {"waitlist_position", "joined_at", "participation_status"} <= set(joined)
    assert (joined["joined_at"]["type"], joined["joined_at"]["format"]) == ("string", "date-time")
    assert "PARTICIPATION_STATUS_REGISTERED" in schemas["participation.v1.ParticipationStatus"]["enum"]
    for _, _, op in _operations(spec):
        assert op["responses"]["default"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "google.rpc.Status"
        )
