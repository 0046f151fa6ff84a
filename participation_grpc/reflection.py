"""Server reflection in both protocols: grpc.reflection.v1 (buf curl, newer grpcurl) and v1alpha.

grpcio-reflection ships only v1alpha. v1 is the same protocol promoted: the same messages with the
same fields, in package grpc.reflection.v1. So the v1 file is derived here from v1alpha's
descriptor (renamed, registered in the default pool so reflection can describe itself), and the
one servicer answers both: the bytes on the wire are identical.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1ALPHA = reflection.SERVICE_NAME
V1 = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"
_OLD, _NEW = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."


def add_to(registrar: Any, services: Sequence[str]) -> None:
    """Both reflection services on `registrar` (the pipeline), listing `services` and themselves."""
    _register_v1_file()
    servicer = reflection.aio.ReflectionServicer((*services, V1, V1ALPHA), pool=_MethodAwarePool())
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    for service in (V1, V1ALPHA):
        registrar.add_registered_method_handlers(service, {"ServerReflectionInfo": handler})


def _register_v1_file() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
        return  # another App of this process registered it
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = _V1_FILE
    proto.package = "grpc.reflection.v1"
    proto.options.Clear()  # v1alpha's say deprecated, and name v1alpha's Java and Go packages
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(_OLD):
                field.type_name = _NEW + field.type_name[len(_OLD) :]
    for service in proto.service:
        for method in service.method:
            method.input_type = _NEW + method.input_type[len(_OLD) :]
            method.output_type = _NEW + method.output_type[len(_OLD) :]
    pool.Add(proto)


class _MethodAwarePool:
    """The default descriptor pool, also finding the file of a method name, which upb's pool
    does not: without it `grpcurl describe participation.v1.ParticipationService.JoinActivity`
    answers "Symbol not found"."""

    def __init__(self) -> None:
        self._pool = descriptor_pool.Default()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    def FindFileContainingSymbol(self, symbol: str) -> Any:
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            return self._pool.FindMethodByName(symbol).containing_service.file
