"""Metadata: brokers, controller, topics and their partition leaders.

v10 adds topic ids, v12 looks topics up by id, v13 a top-level error code, set when
the whole request is refused (MetadataRequest.getErrorResponse).
"""

from __future__ import annotations

import dataclasses
import struct
import weakref
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.cluster.metadata import TopicError, TopicMetadata, validate_topic_name
from odradek.protocol.build import ZERO_UUID
from odradek.protocol.framing import EncodedBody, encode_body, response_type
from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server.admin_calls import off_loop
from odradek.server.broker import Broker
from odradek.server.dispatcher import RequestContext

# Kafka sends this when the client did not ask for authorized operations.
NO_AUTHORIZED_OPERATIONS = -(2**31)

# The fields a Metadata response may have after `topics`, and their sizes on the wire.
_AFTER_TOPICS = {"cluster_authorized_operations": 4, "error_code": 2}
# Per broker: (version, topic name) -> (what the entry was built from, its wire bytes).
_TOPIC_BYTES: weakref.WeakKeyDictionary[Any, dict[tuple[int, str], tuple[object, bytes]]] = weakref.WeakKeyDictionary()


def topic_entry(ctx: RequestContext, topic: TopicMetadata) -> dict[str, Any]:
    broker = ctx.broker
    partitions = []
    for index, replicas in enumerate(topic.replicas):
        state = broker.partition_state(topic.name, index)
        partitions.append(
            {
                "error_code": state.error,
                "partition_index": index,
                "leader_id": state.leader,
                "leader_epoch": state.leader_epoch,
                "replica_nodes": replicas,
                "isr_nodes": state.isr,
                "offline_replicas": state.offline,
            }
        )
    return {
        "error_code": ErrorCode.none,
        "name": topic.name,
        "topic_id": topic.topic_id,
        "is_internal": topic.internal,
        "partitions": partitions,
        "topic_authorized_operations": NO_AUTHORIZED_OPERATIONS,
    }


def _topic_cache(ctx: RequestContext, request: Any) -> dict[tuple[int, str], tuple[object, bytes]] | None:
    """The cache of encoded topic entries, when this answer may use it: a single-node broker
    (partition states never change; cluster mode's do with every leader move), no KIP-430
    bit fields asked for, and a schema whose fields after `topics` are known. 10,000
    partitions took 130-640 ms to build and encode, on the event loop, for every client's
    periodic refresh (librdkafka's topic.metadata.refresh.interval.ms, 5 minutes) and start."""
    broker = ctx.broker
    if type(broker).partition_state is not Broker.partition_state or broker.faults is not None:
        return None  # (injected faults rewrite the response entity)
    if ctx.version >= 8 and getattr(request, "include_topic_authorized_operations", False):
        return None
    if not _splice_layout(ctx.version):
        return None
    cache = _TOPIC_BYTES.get(broker)
    if cache is None:
        cache = _TOPIC_BYTES[broker] = {}
    elif len(cache) > 2 * len(broker.topics()) + 64:  # deleted topics' entries: start over
        cache.clear()
    return cache


def _splice_layout(version: int) -> tuple[int, int] | None:
    """(length of the empty topics array, bytes after it) in the encoded response, or None."""
    cls = response_type(3, version)
    names = [f.name for f in dataclasses.fields(cls)]
    after = names[names.index("topics") + 1:]
    if any(n not in _AFTER_TOPICS for n in after):
        return None
    return (1 if cls.__flexible__ else 4), sum(_AFTER_TOPICS[n] for n in after) + (1 if cls.__flexible__ else 0)


def _encoded_topic(ctx: RequestContext, entry: dict[str, Any]) -> bytes:
    return encode_body(ctx.respond(topics=[entry]).topics[0])


def _cached_topic(ctx: RequestContext, topic: TopicMetadata, cache: dict[tuple[int, str], tuple[object, bytes]]) -> bytes:
    key = (ctx.version, topic.name)
    stamp = (topic.topic_id, len(topic.replicas), topic.internal)
    hit = cache.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    data = _encoded_topic(ctx, topic_entry(ctx, topic))
    cache[key] = (stamp, data)
    return data


def _spliced(ctx: RequestContext, items: list[bytes], fields: dict[str, Any]) -> EncodedBody:
    """The response with `items` (encoded topic entries) as its topics array."""
    layout = _splice_layout(ctx.version)
    assert layout is not None
    marker, tail = layout
    empty = encode_body(ctx.respond(topics=[], **fields))
    cut = len(empty) - tail - marker
    flexible = bool(response_type(3, ctx.version).__flexible__)
    if flexible:
        n, length = len(items) + 1, bytearray()
        while n >= 0x80:
            length.append((n & 0x7F) | 0x80)
            n >>= 7
        length.append(n)
    else:
        length = bytearray(struct.pack(">i", len(items)))
    return EncodedBody(b"".join((empty[:cut], length, *items, empty[cut + marker:])), flexible)


def current_leader(ctx: RequestContext, topic: str, partition: int,
                   endpoints: dict[int, dict[str, Any]]) -> dict[str, int]:
    """KIP-951 (KafkaApis.getCurrentLeader): the leader and epoch a client should turn to after
    NOT_LEADER_OR_FOLLOWER; the leader's address on the request's listener, when it is alive,
    joins `endpoints` (node id -> the response's NodeEndpoint)."""
    state = ctx.broker.partition_state(topic, partition)
    if state.leader >= 0 and state.leader not in endpoints:
        for node in ctx.broker.live_nodes():
            if node.node_id == state.leader:
                host, port = ctx.address(node)
                endpoints[node.node_id] = {"node_id": node.node_id, "host": host, "port": port, "rack": node.rack}
                break
    return {"leader_id": state.leader, "leader_epoch": state.leader_epoch}


def cluster_authorized_operations(ctx: RequestContext, include: bool) -> int:
    """KafkaApis: asked for, the cluster's KIP-430 bit field, 0 without DESCRIBE on the cluster
    (Metadata v8-10 and DescribeCluster; the request itself needs no permission)."""
    if not include:
        return NO_AUTHORIZED_OPERATIONS
    if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.CLUSTER):
        return 0
    return ctx.authorized_operations(ResourceType.CLUSTER)


def _error_entry(name: str | None, code: ErrorCode) -> dict[str, Any]:
    return {"error_code": code, "name": name, "partitions": [], "topic_authorized_operations": NO_AUTHORIZED_OPERATIONS}


def _invalid_request(ctx: RequestContext, requested: Any) -> Any:
    """Kafka's MetadataRequest.getErrorResponse: INVALID_REQUEST for every topic asked for
    (a null name as ""), no brokers, and from v13 the top-level error code."""
    return ctx.respond(brokers=[], cluster_id=None, controller_id=-1, error_code=ErrorCode.invalid_request, topics=[
        {"error_code": ErrorCode.invalid_request, "name": item.name or "", "topic_id": item.topic_id,
         "partitions": [], "topic_authorized_operations": NO_AUTHORIZED_OPERATIONS}
        for item in requested
    ], cluster_authorized_operations=NO_AUTHORIZED_OPERATIONS)


async def handle(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    known = broker.topics()
    requested = request.topics
    # KafkaApis: v10 and v11 carry topic ids and nullable names in the schema, but a null
    # name or a topic id is only answered from v12 on (INVALID_REQUEST before).
    if requested and 10 <= ctx.version < 12 and any(
        item.name is None or item.topic_id not in (None, ZERO_UUID) for item in requested
    ):
        return _invalid_request(ctx, requested)
    # KafkaApis: topics the principal may not DESCRIBE are left out of "all topics" and
    # answered TOPIC_AUTHORIZATION_FAILED when named (whether or not they exist); creating one
    # automatically also needs CREATE on the cluster or on the topic.
    def described(name: str) -> bool:
        return ctx.authorized(AclOperation.DESCRIBE, ResourceType.TOPIC, name)

    cache = _topic_cache(ctx, request)
    if requested is None or (ctx.version == 0 and not requested):
        if cache is not None:
            fields = _response_fields(ctx, request)
            return _spliced(ctx, [_cached_topic(ctx, t, cache) for t in known.values() if described(t.name)], fields)
        entries = [topic_entry(ctx, t) for t in known.values() if described(t.name)]
    else:
        allow_auto = getattr(request, "allow_auto_topic_creation", True)
        by_id = {t.topic_id: t for t in known.values()}
        entries = []
        for item in requested:
            name = item.name
            if name is None:
                topic = by_id.get(item.topic_id) if getattr(item, "topic_id", None) is not None else None
                if topic is None:
                    entries.append(_error_entry(None, ErrorCode.unknown_topic_id))
                elif not described(topic.name):  # the id is not secret, the name is
                    entries.append({**_error_entry(None, ErrorCode.topic_authorization_failed),
                                    "topic_id": topic.topic_id})
                else:
                    entries.append(topic_entry(ctx, topic))
                continue
            if not described(name):
                entries.append(_error_entry(name, ErrorCode.topic_authorization_failed))
                continue
            topic = known.get(name)
            if topic is None and allow_auto and broker.config.auto_create_topics_enable and not (
                    ctx.authorized(AclOperation.CREATE, ResourceType.CLUSTER)
                    or ctx.authorized(AclOperation.CREATE, ResourceType.TOPIC, name)):
                entries.append(_error_entry(name, ErrorCode.topic_authorization_failed))
                continue
            if topic is None:
                try:
                    validate_topic_name(name)
                except TopicError:
                    entries.append(_error_entry(name, ErrorCode.invalid_topic_exception))
                    continue
                topic = await off_loop(broker, broker.auto_create, name) if allow_auto else None
            if topic is None:
                entries.append(_error_entry(name, ErrorCode.unknown_topic_or_partition))
            else:
                entries.append(topic_entry(ctx, topic))
    if ctx.version >= 8 and getattr(request, "include_topic_authorized_operations", False):
        for entry in entries:
            if entry["name"] and entry["error_code"] != ErrorCode.topic_authorization_failed:
                entry["topic_authorized_operations"] = ctx.authorized_operations(ResourceType.TOPIC, entry["name"])
    return ctx.respond(topics=entries, **_response_fields(ctx, request))


def _response_fields(ctx: RequestContext, request: Any) -> dict[str, Any]:
    broker = ctx.broker
    return {
        "brokers": [
            {"node_id": n.node_id, "host": ctx.address(n)[0], "port": ctx.address(n)[1], "rack": n.rack}
            for n in broker.live_nodes()
        ],
        "cluster_id": broker.cluster_id,
        "controller_id": broker.controller_id(),
        "cluster_authorized_operations": cluster_authorized_operations(
            ctx, 8 <= ctx.version <= 10 and getattr(request, "include_cluster_authorized_operations", False)),
    }
