"""Write the OpenAPI 3.1 description of the REST surface from the descriptor set (make openapi).

Usage: openapi.py DESCRIPTOR_SET OUT.json. One operation per google.api.http rule (additional
bindings included), shaped as Envoy's transcoder serves it (deploy/envoy/envoy.yaml): proto field
names, enums by name, 64-bit integers as strings, errors as a google.rpc.Status body.
No well-kept generator ships on PyPI (grpc-gateway's protoc-gen-openapiv2 is a Go binary; the PyPI
packages of that name hold only its option messages), hence this small one.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

SERVICE = "participation.v1.ParticipationService"
STATUS = "google.rpc.Status"
F = descriptor_pb2.FieldDescriptorProto
SCALARS: dict[int, dict[str, str]] = {
    F.TYPE_STRING: {"type": "string"},
    F.TYPE_BOOL: {"type": "boolean"},
    F.TYPE_BYTES: {"type": "string", "format": "byte"},
    F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    F.TYPE_FLOAT: {"type": "number", "format": "float"},
    **{t: {"type": "integer", "format": "int32"} for t in (F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32)},
    **{t: {"type": "integer", "format": "uint32"} for t in (F.TYPE_UINT32, F.TYPE_FIXED32)},
    # proto3 JSON writes 64-bit integers as strings.
    **{
        t: {"type": "string", "format": "int64"}
        for t in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64, F.TYPE_UINT64, F.TYPE_FIXED64)
    },
}
WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?\d+(\.\d+)?s$"},
    "google.protobuf.Any": {
        "type": "object",
        "required": ["@type"],
        "additionalProperties": True,
        "properties": {"@type": {"type": "string"}},
    },
}


class Protos:
    """Messages, enums and their comments from a descriptor set, by full name."""

    def __init__(self, files: list[descriptor_pb2.FileDescriptorProto]) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.comments: dict[tuple[str, ...], str] = {}
        for file in files:
            for loc in file.source_code_info.location:
                if loc.leading_comments:  # protoc keeps the space after each //
                    text = "\n".join(line.removeprefix(" ") for line in loc.leading_comments.splitlines())
                    self.comments[(file.name, *map(str, loc.path))] = text.strip()
            for i, message in enumerate(file.message_type):
                self._add(f"{file.package}.{message.name}", message, (file.name, "4", str(i)))
            for enum in file.enum_type:
                self.enums[f"{file.package}.{enum.name}"] = enum
        self.files = files

    def _add(self, name: str, message: descriptor_pb2.DescriptorProto, path: tuple[str, ...]) -> None:
        self.messages[name] = message
        self.comments.setdefault(("message", name), self.comments.get(path, ""))
        for j, field in enumerate(message.field):
            self.comments[("field", name, field.name)] = self.comments.get((*path, "2", str(j)), "")
        for j, nested in enumerate(message.nested_type):
            self._add(f"{name}.{nested.name}", nested, (*path, "3", str(j)))
        for nested_enum in message.enum_type:
            self.enums[f"{name}.{nested_enum.name}"] = nested_enum


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def field_schema(field: descriptor_pb2.FieldDescriptorProto, wanted: set[str]) -> dict[str, Any]:
    kind = field.type_name.lstrip(".")
    if field.type in (F.TYPE_MESSAGE, F.TYPE_ENUM):
        schema = WELL_KNOWN.get(kind) or _ref(kind)
        wanted.add(kind)
    else:
        schema = dict(SCALARS[field.type])
    return {"type": "array", "items": schema} if field.label == F.LABEL_REPEATED else schema


def message_schema(
    protos: Protos, name: str, wanted: set[str], skip: frozenset[str] = frozenset()
) -> dict[str, Any]:
    message = protos.messages[name]
    properties = {}
    for field in message.field:
        if field.name not in skip:
            prop = field_schema(field, wanted)
            if text := protos.comments.get(("field", name, field.name)):
                # Beside a $ref a description is ignored by older tools: wrap it.
                prop = (
                    {"allOf": [prop], "description": text}
                    if "$ref" in prop
                    else {**prop, "description": text}
                )
            properties[field.name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if text := protos.comments.get(("message", name)):
        schema["description"] = text
    return schema


def components(protos: Protos, wanted: set[str]) -> dict[str, Any]:
    """Schemas of every message and enum reachable from the operations."""
    schemas: dict[str, Any] = {}
    while pending := sorted(wanted - set(schemas) - set(WELL_KNOWN)):
        for name in pending:
            if name in protos.enums:
                schemas[name] = {"type": "string", "enum": [v.name for v in protos.enums[name].value]}
            else:
                schemas[name] = message_schema(protos, name, wanted)
    return dict(sorted(schemas.items()))


def bindings(rule: Any) -> list[tuple[str, str, str]]:
    """(verb, path template, body) of a rule and of its additional bindings."""
    found = []
    for each in (rule, *rule.additional_bindings):
        verb = each.WhichOneof("pattern")
        if verb == "custom":
            found.append((each.custom.kind.lower(), each.custom.path, each.body))
        elif verb:
            found.append((verb, getattr(each, verb), each.body))
    return found


def operation(
    protos: Protos,
    method: descriptor_pb2.MethodDescriptorProto,
    comment: str,
    path: str,
    body: str,
    wanted: set[str],
) -> dict[str, Any]:
    request, response = method.input_type.lstrip("."), method.output_type.lstrip(".")
    path_fields = re.findall(r"\{([^}=]+)", path)
    fields = {f.name: f for f in protos.messages[request].field}
    params = [
        {"name": n, "in": "path", "required": True, "schema": field_schema(fields[n], wanted)}
        for n in path_fields
    ]
    summary = re.split(r"(?<=\.)\s", comment.replace("\n", " "), maxsplit=1)[0]
    op: dict[str, Any] = {
        "operationId": method.name,
        "summary": summary,
        "description": comment,
        "tags": [SERVICE.rsplit(".", 1)[1]],
    }
    if body == "*":
        op["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": message_schema(protos, request, wanted, frozenset(path_fields))
                }
            },
        }
    elif body:
        op["requestBody"] = {"content": {"application/json": {"schema": field_schema(fields[body], wanted)}}}
    else:  # the other top-level fields travel as query parameters
        params += [
            {"name": f.name, "in": "query", "schema": field_schema(f, wanted)}
            for f in fields.values()
            if f.name not in path_fields and f.type != F.TYPE_MESSAGE
        ]
    wanted.update({response, STATUS})
    # A server stream arrives as one JSON message per line (stream_newline_delimited).
    media = "application/x-ndjson" if method.server_streaming else "application/json"
    op["parameters"] = params
    op["responses"] = {
        "200": {"description": "OK", "content": {media: {"schema": _ref(response)}}},
        "default": {
            "description": "An error: a google.rpc.Status whose details hold an ErrorInfo "
            "(and BadRequest, RetryInfo, QuotaFailure where they apply)",
            "content": {"application/json": {"schema": _ref(STATUS)}},
        },
    }
    return op


def build(descriptor_set: bytes) -> dict[str, Any]:
    files = list(descriptor_pb2.FileDescriptorSet.FromString(descriptor_set).file)
    protos = Protos(files)
    paths: dict[str, dict[str, Any]] = {}
    wanted: set[str] = set()
    for file in files:
        for s, service in enumerate(file.service):
            if f"{file.package}.{service.name}" != SERVICE:
                continue
            for m, method in enumerate(service.method):
                comment = protos.comments.get((file.name, "6", str(s), "2", str(m)), method.name)
                rule = method.options.Extensions[annotations_pb2.http]
                for n, (verb, path, body) in enumerate(bindings(rule)):
                    op = operation(protos, method, comment, path, body, wanted)
                    if n:
                        op["operationId"] += f"_{n + 1}"
                    template = re.sub(r"\{([^}=]+)(=[^}]*)?\}", r"{\1}", path)
                    paths.setdefault(template, {})[verb] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": SERVICE,
            "version": "v1",
            "description": "REST through Envoy's gRPC-JSON transcoder (deploy/envoy). Generated "
            "from protos/participation/v1/participation.proto by make openapi.",
        },
        "servers": [{"url": "http://127.0.0.1:8080", "description": "make gateway"}],
        "security": [{"bearer": []}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": components(protos, wanted),
        },
    }


def main() -> int:
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(build(source.read_bytes()), indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
