"""The overview and topics pages: brokers, partitions, offsets, sizes and configs.

Metadata and DescribeCluster give brokers, racks, the controller, leaders, replicas and
ISR; ListOffsets gives log start and end offsets (their sums over time are the overview's
produce and consume rates); DescribeConfigs and IncrementalAlterConfigs the configs;
DescribeLogDirs, when the cluster serves it (odradek does not yet), the sizes.
"""

from __future__ import annotations

import time
from typing import Any

from odradek.cli.common import TIMEOUT_S
from odradek.cli.topic import SOURCES
from odradek.console.browse import Watermarks
from odradek.console.session import ConsoleError, Session

INTERNAL = ("__consumer_offsets", "__transaction_state")


def _node(node: Any) -> dict[str, Any]:
    return {"id": node.id, "host": node.host, "port": node.port, "rack": node.rack}


def watermarks(session: Session, tps: list[tuple[str, int]]) -> dict[tuple[str, int], Watermarks]:
    """Log start and end offsets of many partitions: two ListOffsets per leader, not two per partition."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]  # re-exported without __all__

    if not tps:
        return {}
    found: dict[str, dict[tuple[str, int], int]] = {}
    for name, spec in (("low", OffsetSpec.earliest()), ("high", OffsetSpec.latest())):  # type: ignore[no-untyped-call]
        futures = session.admin().list_offsets({TopicPartition(t, p): spec for t, p in tps},
                                               request_timeout=TIMEOUT_S)
        found[name] = {}
        for tp, future in futures.items():
            result = session.wait(future, f"cannot list the offsets of {tp.topic}-{tp.partition}")
            found[name][(tp.topic, tp.partition)] = int(result.offset)
    return {tp: Watermarks(found["low"][tp], found["high"][tp]) for tp in tps}


def _partitions(metadata: Any) -> list[tuple[str, Any]]:
    return [(name, p) for name, t in metadata.topics.items() for p in t.partitions.values()]


def overview(session: Session) -> dict[str, Any]:
    """What the overview page shows; each call is a sample of the produce and consume rates."""
    cluster = session.wait(session.admin().describe_cluster(request_timeout=TIMEOUT_S), "cannot describe the cluster")
    metadata = session.metadata()
    parts = _partitions(metadata)
    user_tps = [(t, p.id) for t, p in parts if t not in INTERNAL]
    now = time.monotonic()
    ends = watermarks(session, user_tps)
    produced = session.produced.add(now, sum(m.high for m in ends.values()))
    consumed_total, groups = _committed_total(session)
    consumed = session.consumed.add(now, consumed_total)
    racks = sorted({n.rack for n in cluster.nodes if n.rack})
    return {
        "cluster_id": cluster.cluster_id,
        "controller": cluster.controller.id if cluster.controller is not None else None,
        "brokers": sorted((_node(n) for n in cluster.nodes), key=lambda n: n["id"]),
        "racks": racks,
        "topics": len([t for t in metadata.topics if t not in INTERNAL]),
        "partitions": len(parts),
        "replicas": sum(len(p.replicas) for _, p in parts),
        "under_replicated": sorted(f"{t}-{p.id}" for t, p in parts if len(p.isrs) < len(p.replicas)),
        "offline": sorted(f"{t}-{p.id}" for t, p in parts if p.leader < 0),
        "groups": groups,
        "produce_rate": produced,
        "consume_rate": consumed,
        "principal": session.principal,
    }


def _committed_total(session: Session) -> tuple[int, int]:
    """The sum of every group's committed offsets (what consumers have read), and the group count."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    listed = session.wait(session.admin().list_consumer_groups(request_timeout=TIMEOUT_S), "cannot list groups")
    total = 0
    for group in listed.valid:
        futures = session.admin().list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group.group_id)], request_timeout=TIMEOUT_S)
        try:
            result = session.wait(futures[group.group_id], "")
        except ConsoleError:
            continue  # a group this principal may not describe counts for nothing
        total += sum(tp.offset for tp in result.topic_partitions or [] if tp.offset >= 0)
    return total, len(listed.valid)


def list_topics(session: Session) -> list[dict[str, Any]]:
    metadata = session.metadata()
    rows = []
    for name, t in sorted(metadata.topics.items()):
        parts = list(t.partitions.values())
        rows.append({
            "name": name, "internal": name in INTERNAL or name.startswith("__"),
            "partitions": len(parts), "replication": len(parts[0].replicas) if parts else 0,
            "under_replicated": sum(1 for p in parts if len(p.isrs) < len(p.replicas)),
            "error": t.error.str() if t.error is not None else None,
        })
    return rows


def create_topic(session: Session, name: str, partitions: int, replication: int, configs: dict[str, str]) -> None:
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]  # re-exported without __all__

    if not name:
        raise ConsoleError("a topic needs a name")
    if partitions < 1:
        raise ConsoleError("a topic needs at least 1 partition")
    futures = session.admin().create_topics([NewTopic(name, partitions, replication, config=configs)],
                                            request_timeout=TIMEOUT_S)
    session.wait(futures[name], f"cannot create topic {name}")


def delete_topic(session: Session, name: str) -> None:
    futures = session.admin().delete_topics([name], request_timeout=TIMEOUT_S)
    session.wait(futures[name], f"cannot delete topic {name}")


def describe_topic(session: Session, name: str) -> dict[str, Any]:
    """Partitions with leader, replicas, ISR and offsets; configs with their sources. The
    sizes come after (add_sizes): DescribeLogDirs needs the partitions' numbers."""
    from confluent_kafka import TopicCollection

    futures = session.admin().describe_topics(TopicCollection([name]), request_timeout=TIMEOUT_S)
    desc = session.wait(futures[name], f"cannot describe topic {name}")
    marks = watermarks(session, [(name, p.id) for p in desc.partitions])
    partitions = []
    for p in sorted(desc.partitions, key=lambda p: p.id):
        m = marks[(name, p.id)]
        partitions.append({
            "partition": p.id, "leader": p.leader.id if p.leader is not None else None,
            "replicas": [r.id for r in p.replicas], "isr": [r.id for r in p.isr],
            "log_start_offset": m.low, "log_end_offset": m.high,
            "size": None,
        })
    try:
        configs, configs_error = describe_configs(session, name), None
    except ConsoleError as exc:  # a principal may describe a topic but not its configs: show the rest
        configs, configs_error = [], exc.message
    return {"name": name, "internal": desc.is_internal, "partitions": partitions,
            "sizes_available": False, "configs": configs, "configs_error": configs_error}


def add_sizes(described: dict[str, Any], sizes: dict[tuple[str, int], int] | None) -> dict[str, Any]:
    """The partition sizes DescribeLogDirs gave, when the cluster serves it."""
    if sizes is not None:
        described["sizes_available"] = True
        for p in described["partitions"]:
            p["size"] = sizes.get((described["name"], p["partition"]))
    return described


def describe_configs(session: Session, name: str) -> list[dict[str, Any]]:
    from confluent_kafka.admin import ConfigResource  # type: ignore[attr-defined]  # re-exported without __all__

    resource = ConfigResource("topic", name)
    configs = session.wait(session.admin().describe_configs([resource], request_timeout=TIMEOUT_S)[resource],
                           f"cannot describe the configs of {name}")
    return [{"name": key, "value": None if e.is_sensitive else e.value, "sensitive": e.is_sensitive,
             "read_only": e.is_read_only, "source": SOURCES.get(int(e.source), "unknown")}
            for key, e in sorted(configs.items())]


def alter_config(session: Session, name: str, key: str, value: str | None) -> None:
    """Set one topic config, or (value None) delete it back to its default: IncrementalAlterConfigs."""
    from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported without __all__
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
    )

    if not key:
        raise ConsoleError("a config needs a name")
    op = AlterConfigOpType.DELETE if value is None else AlterConfigOpType.SET
    resource = ConfigResource("topic", name, incremental_configs=[ConfigEntry(key, value, incremental_operation=op)])
    futures = session.admin().incremental_alter_configs([resource], request_timeout=TIMEOUT_S)
    session.wait(futures[resource], f"cannot {'delete' if value is None else 'set'} {key} of {name}")
