"""Rows to messages and back: ids as canonical text, timestamps, enums by their database labels."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any, Protocol, TypeVar

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

M = TypeVar("M", bound=Message)
_TIMESTAMP = Timestamp.DESCRIPTOR.full_name


class Row(Protocol):
    """What a message is filled from: an asyncpg Record or a decoded JSON object."""

    def get(self, key: str, /) -> Any: ...


def _prefix(enum: EnumDescriptor) -> str:
    """Enum values are the database label under the enum's prefix: co_organizer ->
    PARTICIPANT_ROLE_CO_ORGANIZER."""
    return enum.values_by_number[0].name.removesuffix("UNSPECIFIED")


def enum_number(enum: EnumDescriptor, label: str | None) -> int:
    if label is None:
        return 0
    return enum.values_by_name[_prefix(enum) + label.upper()].number


def enum_label(enum: EnumDescriptor, number: int) -> str | None:
    """The database label of an enum value; None for UNSPECIFIED (no filter)."""
    if number == 0:
        return None
    return enum.values_by_number[number].name.removeprefix(_prefix(enum)).lower()


def timestamp(value: datetime | str) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(datetime.fromisoformat(value) if isinstance(value, str) else value)
    return ts


def to_message(cls: type[M], row: Row) -> M:
    """A message from a row or a JSON object, by field name; missing and null values stay unset."""
    message = cls()
    _fill(message, row)
    return message


def _fill(message: Message, row: Row) -> None:
    for name, kind, sub in _plan(message.DESCRIPTOR):
        value = row.get(name)
        if value is None:
            continue
        if kind == "repeated_message":
            for item in value:
                _fill(getattr(message, name).add(), item)
        elif kind == "repeated":
            getattr(message, name).extend(str(v) for v in value)
        elif kind == "timestamp":
            getattr(message, name).CopyFrom(timestamp(value))
        elif kind == "enum":
            setattr(message, name, enum_number(sub, value))
        elif kind == "string":
            setattr(message, name, str(value))
        else:
            setattr(message, name, value)


@cache
def _plan(descriptor: Descriptor) -> tuple[tuple[str, str, Any], ...]:
    """How to fill each field, worked out once per message type."""
    plan = []
    for f in descriptor.fields:
        if f.is_repeated:
            kind = "repeated_message" if f.message_type is not None else "repeated"
        elif f.message_type is not None and f.message_type.full_name == _TIMESTAMP:
            kind = "timestamp"
        elif f.enum_type is not None:
            kind = "enum"
        elif f.type == FieldDescriptor.TYPE_STRING:
            kind = "string"
        else:
            kind = "scalar"
        plan.append((f.name, kind, f.enum_type))
    return tuple(plan)
