"""Request checks that need no database: ids, enum values, sizes. Each names the request field."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import TypeVar

from google.protobuf.descriptor import EnumDescriptor

from participation_grpc.convert import enum_label
from participation_grpc.errors import invalid_argument

T = TypeVar("T")


def uuid_field(value: str, field: str) -> uuid.UUID:
    """A UUID in canonical text form (8-4-4-4-12 hex digits, either case); uuid.UUID alone would
    also take braces, URNs and bare hex, which the contract does not promise to accept."""
    parsed = None
    if len(value) == 36:
        try:
            parsed = uuid.UUID(value)
        except ValueError:
            pass
    if parsed is None or str(parsed) != value.lower():
        raise invalid_argument(field, "must be a UUID" if value else "is required", **{field: value[:64]})
    return parsed


def optional_uuid(value: str, field: str) -> uuid.UUID | None:
    return uuid_field(value, field) if value else None


def enum_field(
    enum: EnumDescriptor, number: int, field: str, allowed: Iterable[str] | None = None
) -> str | None:
    """The database label of an enum filter (None when unset), refusing unknown numbers."""
    if number != 0 and number not in enum.values_by_number:
        raise invalid_argument(field, f"{number} is not a {enum.name} value")
    label = enum_label(enum, number)
    if label is not None and allowed is not None and label not in allowed:
        raise invalid_argument(field, f"must be one of {', '.join(a.upper() for a in allowed)}")
    return label


def max_length(value: str, field: str, limit: int) -> str:
    if len(value) > limit:
        raise invalid_argument(field, f"must be at most {limit} characters")
    return value


def unique_ids(values: Iterable[str], field: str) -> list[uuid.UUID]:
    ids = [uuid_field(v, field) for v in values]
    if len(set(ids)) != len(ids):
        raise invalid_argument(field, "must not repeat an id")
    return ids


def bounded_list(values: Sequence[T], field: str, limit: int, too_many_reason: str) -> Sequence[T]:
    """1..limit items; too many is refused with the call's own reason (TOO_MANY_...)."""
    if not values:
        raise invalid_argument(field, "must not be empty")
    if len(values) > limit:
        raise invalid_argument(field, f"must hold at most {limit} items", reason=too_many_reason)
    return values


def required_enum(enum: EnumDescriptor, number: int, field: str, allowed: Iterable[str]) -> str:
    """Like enum_field, but UNSPECIFIED is refused too."""
    allowed = tuple(allowed)
    label = enum_field(enum, number, field, allowed)
    if label is None:
        raise invalid_argument(field, f"must be one of {', '.join(a.upper() for a in allowed)}")
    return label


def int_range(value: int, field: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise invalid_argument(field, f"must be between {low} and {high}")
    return value
