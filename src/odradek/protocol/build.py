"""Build kio entities of any API version from plain Python values.

Handlers describe a response once, as nested dicts with the field names of
Kafka's message JSON specs; `build(ResponseClass, values)` turns that into the
generated dataclass of the negotiated version: fields the version lacks are
dropped, fields the caller left out get Kafka's neutral default (0, null, empty
array). This keeps one handler per API instead of one per version.
"""

from __future__ import annotations

import dataclasses
import datetime
import typing
import uuid
from collections.abc import Callable, Mapping
from functools import cache
from types import NoneType, UnionType
from typing import Any

from kio.schema.errors import ErrorCode

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
ZERO_UUID = uuid.UUID(int=0)

Converter = Callable[[Any], Any]


def ms_to_datetime(value: int) -> datetime.datetime:
    return _EPOCH + datetime.timedelta(milliseconds=value)


_MILLISECOND = datetime.timedelta(milliseconds=1)  # made once: a timedelta made a call was 3/4 of its cost


def datetime_to_ms(value: datetime.datetime | None) -> int:
    if value is None:
        return -1
    return (value - _EPOCH) // _MILLISECOND


def timedelta_to_ms(value: datetime.timedelta | int) -> int:
    if isinstance(value, datetime.timedelta):
        return value // _MILLISECOND
    return int(value)


def _to_timedelta(value: Any) -> datetime.timedelta:
    return value if isinstance(value, datetime.timedelta) else datetime.timedelta(milliseconds=int(value))


def _to_datetime(value: Any) -> datetime.datetime | None:
    if value is None or isinstance(value, datetime.datetime):
        return value
    return ms_to_datetime(int(value))


def _to_error(value: Any) -> ErrorCode:
    return value if isinstance(value, ErrorCode) else ErrorCode(int(value))


def _identity(value: Any) -> Any:
    return value


_PRIMITIVE_DEFAULTS: dict[str, Any] = {
    "bool": False,
    "bytes": b"",
    "error_code": ErrorCode.none,
    "float64": 0.0,
    "int8": 0,
    "int16": 0,
    "int32": 0,
    "int64": 0,
    "uint16": 0,
    "string": "",
    "uuid": ZERO_UUID,
    "records": None,
    "timedelta_i32": datetime.timedelta(0),
    "timedelta_i64": datetime.timedelta(0),
    "datetime_i64": _EPOCH,
}

_CONVERTERS: dict[str, Converter] = {
    "error_code": _to_error,
    "timedelta_i32": _to_timedelta,
    "timedelta_i64": _to_timedelta,
    "datetime_i64": _to_datetime,
}


def _optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (UnionType, typing.Union) and NoneType in typing.get_args(tp)


def _entity_type(tp: Any) -> type | None:
    """The nested entity class inside `X`, `X | None`, or `tuple[X, ...]`, if any."""
    if typing.get_origin(tp) is tuple:
        tp = typing.get_args(tp)[0]
    if _optional(tp):
        tp = next(a for a in typing.get_args(tp) if a is not NoneType)
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


@dataclasses.dataclass(frozen=True, slots=True)
class _FieldPlan:
    name: str
    is_array: bool
    nested: type | None
    convert: Converter
    default: Any


@cache
def _plan(cls: type) -> tuple[_FieldPlan, ...]:
    hints = typing.get_type_hints(cls)
    plans = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        is_array = typing.get_origin(tp) is tuple or (
            _optional(tp) and any(typing.get_origin(a) is tuple for a in typing.get_args(tp))
        )
        if is_array and _optional(tp):
            tp = next(a for a in typing.get_args(tp) if a is not NoneType)
        nested = _entity_type(tp)
        kafka_type = f.metadata.get("kafka_type", "")
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif is_array:
            default = ()
        elif _optional(tp):
            default = None
        elif nested is not None:
            default = None  # filled with build(nested, {}) lazily
        else:
            default = _PRIMITIVE_DEFAULTS.get(kafka_type)
        convert = _CONVERTERS.get(kafka_type, _identity)
        plans.append(_FieldPlan(f.name, is_array, nested, convert, default))
    return tuple(plans)


def build(cls: type, values: Mapping[str, Any] | None = None, /, **extra: Any) -> Any:
    """Instantiate the kio dataclass `cls` from `values`, dropping unknown keys."""
    data: Mapping[str, Any] = {**values, **extra} if values else extra
    kwargs: dict[str, Any] = {}
    for plan in _plan(cls):
        if plan.name in data:
            value = data[plan.name]
            if plan.nested is not None and value is not None:
                if plan.is_array:
                    value = tuple(
                        v if isinstance(v, plan.nested) else build(plan.nested, v) for v in value
                    )
                elif not isinstance(value, plan.nested):
                    value = build(plan.nested, value)
            elif plan.is_array:
                value = tuple(plan.convert(v) for v in value) if value is not None else None
            elif value is not None:
                value = plan.convert(value)
        else:
            value = plan.default
            if value is None and plan.nested is not None and not plan.is_array:
                value = build(plan.nested, {})
        kwargs[plan.name] = value
    return cls(**kwargs)


def field_names(cls: type) -> frozenset[str]:
    return frozenset(p.name for p in _plan(cls))
