"""DescribeConfigs, AlterConfigs, IncrementalAlterConfigs for topics (and broker reads)."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.cluster.throttle import DYNAMIC_BROKER_CONFIGS, parse_rate
from odradek.cluster.topic_config import (
    TOPIC_CONFIGS,
    ConfigValue,
    InvalidConfigError,
    broker_config_entries,
    effective_topic_configs,
)
from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server.admin_calls import off_loop
from odradek.server.dispatcher import RequestContext
from odradek.server.handlers import share_groups

TOPIC = 2
BROKER = 4
# ConfigResource.Type ids beyond these two, for the authorization they need
BROKER_LOGGER, CLIENT_METRICS, GROUP = 8, 16, 32
# DescribeConfigsResponse config_source / synonym source values
CONFIG_SOURCE = {"TOPIC_CONFIG": 1, "DYNAMIC_BROKER_CONFIG": 2, "STATIC_BROKER_CONFIG": 4, "DEFAULT_CONFIG": 5}
GROUP_CONFIG_SOURCE = 8  # ConfigSource.GROUP_CONFIG
CONFIG_TYPE = {"BOOLEAN": 1, "STRING": 2, "INT": 3, "SHORT": 4, "LONG": 5, "DOUBLE": 6, "LIST": 7, "PASSWORD": 9}
SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3


def _entry(c: ConfigValue, read_only: bool, synonyms: bool, documentation: bool = False) -> dict[str, Any]:
    return {
        "name": c.name,
        "value": c.value,
        "read_only": read_only,
        "config_source": CONFIG_SOURCE[c.source],
        "is_default": c.source == "DEFAULT_CONFIG",
        "is_sensitive": c.kind == "PASSWORD",
        "synonyms": [
            {"name": n, "value": v, "source": CONFIG_SOURCE[s]} for n, v, s in c.synonyms
        ] if synonyms else [],
        "config_type": CONFIG_TYPE[c.kind],
        "documentation": c.documentation if documentation else None,  # v3+ include_documentation
    }


def _denied(ctx: RequestContext, resource_type: int, name: str, operation: AclOperation) -> ErrorCode | None:
    """KafkaApis/ConfigHelper: broker configs need `operation` (DESCRIBE_CONFIGS or ALTER_CONFIGS)
    on the cluster, a topic's or group's on itself; the error names what was missing."""
    if resource_type in (BROKER, BROKER_LOGGER, CLIENT_METRICS):
        if not ctx.authorized(operation, ResourceType.CLUSTER):
            return ErrorCode.cluster_authorization_failed
    elif resource_type == TOPIC:
        if not ctx.authorized(operation, ResourceType.TOPIC, name):
            return ErrorCode.topic_authorization_failed
    elif resource_type == GROUP and not ctx.authorized(operation, ResourceType.GROUP, name):
        return ErrorCode.group_authorization_failed
    return None


_DENIED_MESSAGE = {ErrorCode.cluster_authorization_failed: "Cluster authorization failed.",
                   ErrorCode.topic_authorization_failed: "Topic authorization failed.",
                   ErrorCode.group_authorization_failed: "Group authorization failed."}


async def describe_configs(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    results = []
    synonyms = getattr(request, "include_synonyms", False)
    documentation = getattr(request, "include_documentation", False)
    for res in request.resources:
        result: dict[str, Any] = {
            "resource_type": res.resource_type, "resource_name": res.resource_name,
            "error_code": ErrorCode.none, "error_message": None, "configs": [],
        }
        denied = _denied(ctx, res.resource_type, res.resource_name, AclOperation.DESCRIBE_CONFIGS)
        if denied is not None:
            result.update(error_code=denied, error_message=_DENIED_MESSAGE[denied])
        elif res.resource_type == TOPIC:
            topic = broker.topics().get(res.resource_name)
            if topic is None:
                result.update(error_code=ErrorCode.unknown_topic_or_partition,
                              error_message=f"topic {res.resource_name!r} does not exist")
            else:
                values = effective_topic_configs(topic.configs, broker.config)
                result["configs"] = [_entry(c, False, synonyms, documentation) for c in values]
        elif res.resource_type == GROUP:  # KIP-848/KIP-932 group configs
            result["configs"] = [
                {"name": n, "value": v, "read_only": False, "config_source": 5 if d else GROUP_CONFIG_SOURCE,
                 "is_default": d, "is_sensitive": False, "synonyms": [], "config_type": CONFIG_TYPE["STRING"],
                 "documentation": None} for n, v, d in share_groups.group_config_entries(ctx, res.resource_name)]
        elif res.resource_type == BROKER:
            if res.resource_name not in ("", str(broker.node_id)):
                result.update(error_code=ErrorCode.invalid_request,
                              error_message=f"this is broker {broker.node_id}, not {res.resource_name}")
            else:
                result["configs"] = await _dynamic_entries(ctx, res.resource_name)
                if res.resource_name != "":  # "": the cluster-wide dynamic defaults only (ConfigHelper)
                    shown = {c["name"] for c in result["configs"]}
                    result["configs"] += [_entry(c, True, synonyms, documentation)
                                          for c in broker_config_entries(broker.config) if c.name not in shown]
        else:
            result.update(error_code=ErrorCode.invalid_request,
                          error_message=f"resource type {res.resource_type} is not supported")
        keys = res.configuration_keys
        if keys is not None and result["configs"]:
            result["configs"] = [c for c in result["configs"] if c["name"] in keys]
        results.append(result)
    return ctx.respond(results=results)


async def _alter(ctx: RequestContext, res: Any, new_configs: dict[str, str] | None, validate_only: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"resource_type": res.resource_type, "resource_name": res.resource_name,
                           "error_code": ErrorCode.none, "error_message": None}
    denied = _denied(ctx, res.resource_type, res.resource_name, AclOperation.ALTER_CONFIGS)
    if denied is not None:
        out.update(error_code=denied)
        return out
    if res.resource_type != TOPIC:
        out.update(error_code=ErrorCode.invalid_request,
                   error_message="only topic configs can be altered; broker configs are static")
        return out
    if res.resource_name not in ctx.broker.topics():
        out.update(error_code=ErrorCode.unknown_topic_or_partition,
                   error_message=f"topic {res.resource_name!r} does not exist")
        return out
    try:
        assert new_configs is not None
        # a ZooKeeper write in cluster mode: off the event loop (server/admin_calls.py)
        await off_loop(ctx.broker, ctx.broker.set_topic_configs, res.resource_name, new_configs,
                       validate_only=validate_only)
    except InvalidConfigError as exc:
        out.update(error_code=ErrorCode.invalid_config, error_message=str(exc))
    return out


async def _dynamic_entries(ctx: RequestContext, name: str) -> list[dict[str, Any]]:
    """The replication throttles set dynamically (cluster mode: /config/brokers/<id|<default>>)."""
    read = getattr(ctx.broker, "broker_dynamic_configs", None)
    if read is None:
        return []
    source = 3 if name == "" else 2  # DYNAMIC_DEFAULT_BROKER_CONFIG, DYNAMIC_BROKER_CONFIG
    values: dict[str, str] = await read(name)
    return [{"name": k, "value": v, "read_only": False, "config_source": source, "is_default": False,
             "is_sensitive": False, "synonyms": [{"name": k, "value": v, "source": source}],
             "config_type": CONFIG_TYPE["LONG"], "documentation": None} for k, v in sorted(values.items())]


async def _alter_broker(ctx: RequestContext, res: Any, new_configs: dict[str, str], validate_only: bool) -> dict[str, Any]:
    """Broker resources: only the replication throttles are dynamic (KIP-73); others are static."""
    out: dict[str, Any] = {"resource_type": res.resource_type, "resource_name": res.resource_name,
                           "error_code": ErrorCode.none, "error_message": None}
    denied = _denied(ctx, res.resource_type, res.resource_name, AclOperation.ALTER_CONFIGS)
    write = getattr(ctx.broker, "set_broker_configs", None)
    static = sorted(k for k in new_configs if k not in DYNAMIC_BROKER_CONFIGS)
    if denied is not None:
        out.update(error_code=denied)
    elif write is None or static:
        out.update(error_code=ErrorCode.invalid_request, error_message=(
            f"Cannot update these configs dynamically: {', '.join(static)}" if write is not None
            else "only topic configs can be altered; broker configs are static"))
    elif res.resource_name != "" and not res.resource_name.isdigit():
        out.update(error_code=ErrorCode.invalid_request, error_message=f"{res.resource_name!r} is not a broker id")
    else:
        try:
            for k, v in new_configs.items():
                parse_rate(k, v)
        except ValueError:
            out.update(error_code=ErrorCode.invalid_config,
                       error_message=f"Invalid value for a replication throttle: {new_configs}")
            return out
        if not validate_only:
            await write(res.resource_name, new_configs)
    return out


def _preprocess(resources: Any, incremental: bool) -> list[tuple[ErrorCode, str] | None]:
    """Kafka's ConfigAdminManager.preprocess, per resource: a resource named twice, a config
    key named twice in one resource, a null value (except for DELETE) are INVALID_REQUEST."""
    counts: dict[tuple[int, str], int] = {}
    for res in resources:
        key = (res.resource_type, res.resource_name)
        counts[key] = counts.get(key, 0) + 1
    errors: list[tuple[ErrorCode, str] | None] = []
    for res in resources:
        names = [c.name for c in res.configs]
        nulls = [c.name for c in res.configs
                 if c.value is None and not (incremental and c.config_operation == DELETE)]
        if counts[(res.resource_type, res.resource_name)] > 1:
            errors.append((ErrorCode.invalid_request, "Each resource must appear at most once."))
        elif len(set(names)) != len(names):
            errors.append((ErrorCode.invalid_request, "Error due to duplicate config keys"))
        elif nulls:
            errors.append((ErrorCode.invalid_request, "Null value not supported for : " + ", ".join(nulls)))
        else:
            errors.append(None)
    return errors


def _refused(res: Any, error: tuple[ErrorCode, str]) -> dict[str, Any]:
    return {"resource_type": res.resource_type, "resource_name": res.resource_name,
            "error_code": error[0], "error_message": error[1]}


async def alter_configs(ctx: RequestContext, request: Any) -> Any:
    """AlterConfigs replaces a topic's whole set of overrides."""
    responses = [
        _refused(res, error) if error is not None
        else await _alter_broker(ctx, res, {c.name: c.value for c in res.configs}, request.validate_only)
        if res.resource_type == BROKER
        else await _alter(ctx, res, {c.name: c.value for c in res.configs}, request.validate_only)
        for res, error in zip(request.resources, _preprocess(request.resources, False), strict=True)
    ]
    return ctx.respond(responses=responses)


def _apply(configs: dict[str, str], changes: Any) -> tuple[ErrorCode, str] | None:
    """The changes of one resource, in order; the first one Kafka refuses stops them all."""
    for c in changes:
        op, name, value = c.config_operation, c.name, c.value
        if op == SET:
            configs[name] = value
        elif op == DELETE:
            configs.pop(name, None)
        elif op in (APPEND, SUBTRACT):
            if name != "cleanup.policy":  # the only list-typed topic config odradek has
                verb = "append" if op == APPEND else "subtract"
                return ErrorCode.invalid_config, f"Config value {verb} is not allowed for config key: {name}"
            # an unset key appends to its default, as Kafka's controller does (delete -> delete,compact)
            current = [v for v in configs.get(name, TOPIC_CONFIGS[name].default).split(",") if v]
            items = value.split(",")
            merged = current + [i for i in items if i not in current] if op == APPEND else [
                v for v in current if v not in items]
            configs[name] = ",".join(merged)
        else:
            return ErrorCode.invalid_request, f"unknown config operation {op} for {name}"
    return None


async def incremental_alter_configs(ctx: RequestContext, request: Any) -> Any:
    """IncrementalAlterConfigs (KIP-339): SET, DELETE, APPEND, SUBTRACT per key."""
    responses = []
    for res, error in zip(request.resources, _preprocess(request.resources, True), strict=True):
        topic = ctx.broker.topics().get(res.resource_name) if res.resource_type == TOPIC else None
        configs = dict(topic.configs) if topic is not None else None
        if res.resource_type == GROUP:
            configs = share_groups.group_configs(ctx, res.resource_name)
        dynamic = getattr(ctx.broker, "broker_dynamic_configs", None)
        if res.resource_type == BROKER and dynamic is not None and error is None:
            configs = await dynamic(res.resource_name)
        if error is None and configs is not None and _denied(
                ctx, res.resource_type, res.resource_name, AclOperation.ALTER_CONFIGS) is None:
            error = _apply(configs, res.configs)  # a denied resource is answered by _alter
        if error is not None:
            responses.append(_refused(res, error))
        elif res.resource_type == BROKER:
            responses.append(await _alter_broker(ctx, res, configs or {}, request.validate_only))
        elif res.resource_type == GROUP and configs is not None and _denied(
                ctx, GROUP, res.resource_name, AclOperation.ALTER_CONFIGS) is None:
            refused = share_groups.set_group_configs(ctx, res.resource_name, configs, request.validate_only)
            responses.append(_refused(res, refused) if refused else _refused(res, (ErrorCode.none, "")))
        else:
            responses.append(await _alter(ctx, res, configs, request.validate_only))
    return ctx.respond(responses=responses)
