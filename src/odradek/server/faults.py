"""Fault injection for tests of client error handling (like librdkafka's mock cluster).

`Faults.inject("Produce", ["NOT_LEADER_OR_FOLLOWER"], topic="t")` makes the next
Produce requests touching topic t fail with those codes, one request per code;
`delay("Fetch", 200)` adds latency to every Fetch. The error response is the real
handler's response with every error code of the matching topics replaced, so
each API keeps its own shape without a per-API error builder.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from odradek.protocol.apis import api_key_of

if TYPE_CHECKING:
    from odradek.server.dispatcher import Handler, RequestContext

log = logging.getLogger("odradek.faults")


def error_code_named(name: str) -> ErrorCode:
    try:
        return ErrorCode[name.lower()]
    except KeyError:
        raise ValueError(f"{name!r} is not a Kafka error name (e.g. NOT_LEADER_OR_FOLLOWER)") from None


@dataclass
class _Injection:
    errors: deque[ErrorCode]
    topic: str | None


@dataclass
class Faults:
    _errors: dict[int, list[_Injection]] = field(default_factory=dict)
    _delays_ms: dict[int, int] = field(default_factory=dict)

    def inject(self, api: str, errors: list[str], topic: str | None = None) -> None:
        key = api_key_of(api)
        codes = deque(error_code_named(e) for e in errors)
        self._errors.setdefault(key, []).append(_Injection(codes, topic))

    def delay(self, api: str, ms: int) -> None:
        key = api_key_of(api)
        if ms <= 0:
            self._delays_ms.pop(key, None)
        else:
            self._delays_ms[key] = ms

    def clear(self) -> None:
        self._errors.clear()
        self._delays_ms.clear()

    def _next_error(self, api_key: int, request: Any) -> tuple[ErrorCode, str | None] | None:
        injections = self._errors.get(api_key)
        if not injections:
            return None
        topics = _request_topics(request)
        for inj in injections:
            if inj.errors and (inj.topic is None or inj.topic in topics):
                code = inj.errors.popleft()
                if not inj.errors:
                    injections.remove(inj)
                return code, inj.topic
        return None

    async def intercept(self, ctx: RequestContext, request: Any, handler: Handler) -> Any:
        delay = self._delays_ms.get(ctx.header.api_key)
        if delay:
            await asyncio.sleep(delay / 1000)
        injected = self._next_error(ctx.header.api_key, request)
        if injected is None:
            return await handler(ctx, request)
        code, topic = injected
        log.info("injecting %s into %s (correlation id %d)", code.name.upper(), type(request).__name__,
                 ctx.header.correlation_id)
        if ctx.header.api_key == 0:  # Produce: fail before anything is written
            response = ctx.respond(responses=[
                {"name": t.name, "partition_responses": [
                    {"index": p.index, "error_code": code, "base_offset": -1} for p in t.partition_data]}
                for t in request.topic_data])
            return response if request.acks != 0 else None
        response = await handler(ctx, request)
        return _replace_errors(response, code, topic)


def _request_topics(request: Any) -> set[str]:
    names: set[str] = set()
    for attr in ("topic_data", "topics", "resources"):
        for item in getattr(request, attr, None) or ():
            for name_attr in ("name", "topic", "resource_name"):
                value = getattr(item, name_attr, None)
                if isinstance(value, str):
                    names.add(value)
    return names


def _replace_errors(entity: Any, code: ErrorCode, topic: str | None, matched: bool | None = None) -> Any:
    """A copy of a kio response with every error_code under the matching topic set to `code`."""
    if not dataclasses.is_dataclass(entity) or isinstance(entity, type):
        return entity
    if matched is None:
        matched = topic is None
    name = getattr(entity, "name", getattr(entity, "topic", None))
    if topic is not None and isinstance(name, str):
        matched = name == topic
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(entity):
        value = getattr(entity, f.name)
        if f.name == "error_code" and matched:
            changes[f.name] = code
        elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            changes[f.name] = tuple(_replace_errors(v, code, topic, matched) for v in value)
    return dataclasses.replace(entity, **changes) if changes else entity
