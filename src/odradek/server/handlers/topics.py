"""CreateTopics, DeleteTopics, CreatePartitions."""

from __future__ import annotations

import logging
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.cluster.metadata import TopicError
from odradek.cluster.topic_config import InvalidConfigError, effective_topic_configs
from odradek.server.dispatcher import RequestContext
from odradek.server.handlers.configs import CONFIG_SOURCE

log = logging.getLogger("odradek.topics")


def _failure(exc: Exception) -> tuple[ErrorCode, str]:
    if isinstance(exc, TopicError):
        return ErrorCode[exc.code], str(exc)
    if isinstance(exc, InvalidConfigError):
        return ErrorCode.invalid_config, str(exc)
    raise exc


async def create_topics(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    results = []
    seen: set[str] = set()
    for t in request.topics:
        entry: dict[str, Any] = {"name": t.name, "num_partitions": -1, "replication_factor": -1, "configs": None}
        if t.name in seen:
            entry.update(error_code=ErrorCode.invalid_request, error_message=f"topic {t.name!r} appears twice in the request")
            results.append(entry)
            continue
        seen.add(t.name)
        try:
            if t.assignments:
                raise TopicError("invalid_request", "manual replica assignment is not supported; give num_partitions")
            configs = {c.name: c.value for c in t.configs}
            topic = broker.create_topic(
                t.name, t.num_partitions, t.replication_factor, configs, validate_only=request.validate_only
            )
        except (TopicError, InvalidConfigError) as exc:
            code, message = _failure(exc)
            log.info("create topic %s refused: %s", t.name, message)
            entry.update(error_code=code, error_message=message)
            results.append(entry)
            continue
        entry["error_code"] = ErrorCode.none
        if topic is not None:
            entry.update(
                topic_id=topic.topic_id,
                num_partitions=topic.partitions,
                replication_factor=len(topic.replicas[0]),
                configs=[
                    {"name": c.name, "value": c.value, "read_only": False,
                     "config_source": CONFIG_SOURCE[c.source], "is_sensitive": False}
                    for c in effective_topic_configs(topic.configs, broker.config)
                ],
            )
        else:  # validate_only
            entry.update(num_partitions=t.num_partitions, replication_factor=t.replication_factor)
        results.append(entry)
    return ctx.respond(topics=results)


async def delete_topics(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    names: list[tuple[str | None, Any]]
    if hasattr(request, "topics"):
        by_id = {t.topic_id: t.name for t in broker.topics().values()}
        names = [(t.name if t.name is not None else by_id.get(t.topic_id), t.topic_id) for t in request.topics]
    else:
        names = [(n, None) for n in request.topic_names]
    results = []
    for name, topic_id in names:
        entry: dict[str, Any] = {"name": name, "error_code": ErrorCode.none}
        if topic_id is not None:
            entry["topic_id"] = topic_id
        if name is None:
            entry["error_code"] = ErrorCode.unknown_topic_id
        elif not broker.config.delete_topic_enable:
            entry.update(error_code=ErrorCode.topic_deletion_disabled)
        else:
            try:
                if broker.topics().get(name) is not None and broker.topics()[name].internal:
                    raise TopicError("invalid_topic_exception", f"internal topic {name} cannot be deleted")
                broker.delete_topic(name)
            except TopicError as exc:
                entry.update(error_code=ErrorCode[exc.code], error_message=str(exc))
        results.append(entry)
    return ctx.respond(responses=results)


async def create_partitions(ctx: RequestContext, request: Any) -> Any:
    results = []
    for t in request.topics:
        entry: dict[str, Any] = {"name": t.name, "error_code": ErrorCode.none}
        try:
            if t.assignments:
                raise TopicError("invalid_request", "manual replica assignment is not supported")
            ctx.broker.create_partitions(t.name, t.count, validate_only=request.validate_only)
        except TopicError as exc:
            entry.update(error_code=ErrorCode[exc.code], error_message=str(exc))
        results.append(entry)
    return ctx.respond(results=results)
