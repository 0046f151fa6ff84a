"""Rows to messages and back: a procedure's columns are its response message's field names.

Messages are built by their constructors (C code under upb), never field by field in Python.
A row's columns carry the database's types: timestamps go in as they are (or are parsed, when
they came inside jsonb as text), ids become their canonical text, enum labels (co_organizer)
their numbers; those few conversions are worked out once per message type. List items and
bulk results are already the JSON of their messages, built by the procedures
(sql/procedures/00_rules.sql, pa_pb_*), so each decoded object goes to the constructor untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar

import asyncpg
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

M = TypeVar("M", bound=Message)
_TIMESTAMP = Timestamp.DESCRIPTOR.full_name
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Conversion = Callable[[Any], Any]


def _prefix(enum: EnumDescriptor) -> str:
    """Enum values are the database label under the enum's prefix: co_organizer ->
    PARTICIPANT_ROLE_CO_ORGANIZER."""
    return enum.values_by_number[0].name.removesuffix("UNSPECIFIED")


def enum_label(enum: EnumDescriptor, number: int) -> str | None:
    """The database label of an enum value; None for UNSPECIFIED (no filter)."""
    if number == 0:
        return None
    return enum.values_by_number[number].name.removeprefix(_prefix(enum)).lower()


@cache
def _numbers(enum: EnumDescriptor) -> Mapping[str, int]:
    prefix = _prefix(enum)
    return {v.name.removeprefix(prefix).lower(): v.number for v in enum.values if v.number}


def to_message(cls: type[M], row: Mapping[str, Any] | asyncpg.Record) -> M:
    """A message from a procedure's row; null columns stay unset."""
    values = dict(row)
    for name, convert in _conversions(cls.DESCRIPTOR):
        value = values.get(name)
        if value is not None:
            values[name] = convert(value)
    return cls(**values)


def _text_list(values: list[Any]) -> list[str]:
    return [str(v) for v in values]


def _timestamp(value: datetime | str) -> dict[str, int]:
    """A timestamp column (or one that travelled inside jsonb as ISO 8601 text) as the
    Timestamp's fields, by arithmetic: handed a datetime, upb converts it through the Python
    Timestamp.FromDatetime, 12 us a time against 1 us for these two numbers."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # as FromDatetime: a naive time is UTC
    delta = moment - _EPOCH
    return {"seconds": delta.days * 86_400 + delta.seconds, "nanos": delta.microseconds * 1000}


@cache
def _conversions(descriptor: Descriptor) -> tuple[tuple[str, Conversion], ...]:
    """The fields whose column values the constructor would not take as they come."""
    plan: list[tuple[str, Conversion]] = []
    for f in descriptor.fields:
        if f.is_repeated:
            if f.message_type is None:
                plan.append((f.name, _text_list))  # uuid[] -> repeated string
        elif f.message_type is not None and f.message_type.full_name == _TIMESTAMP:
            plan.append((f.name, _timestamp))
        elif f.enum_type is not None:
            plan.append((f.name, _numbers(f.enum_type).__getitem__))
        elif f.type == FieldDescriptor.TYPE_STRING:
            plan.append((f.name, str))  # uuid -> canonical text
    return tuple(plan)
