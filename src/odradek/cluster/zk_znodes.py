"""What cluster/zk.py keeps in ZooKeeper's znodes: the values, their paths and their JSON, in
Kafka's ZooKeeper-era layout (the path table is in cluster/zk.py's docstring).

Pure functions of bytes and values: no client, no watch, no thread.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kazoo.exceptions import NoNodeError  # type: ignore[import-untyped]

from odradek.cluster.metadata import TopicError, TopicMetadata

CONTROLLER_EPOCH_PATH = "/controller_epoch"
Fence = tuple[str, int]  # (path, version) checked in the same transaction as a write


class ControllerMoved(TopicError):
    """A controller's write refused because /controller_epoch moved on (a newer controller),
    or a controller's call asked of a broker that is not the controller: Kafka's
    ControllerMovedException, answered NOT_CONTROLLER."""

    def __init__(self, message: str = "this broker is no longer the controller") -> None:
        super().__init__("not_controller", message)


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    broker_id: int
    host: str
    port: int
    rack: str | None = None
    # (listener name, security protocol, host, port) of every listener (Kafka's "endpoints"
    # and "listener_security_protocol_map" in /brokers/ids/<id>)
    endpoints: tuple[tuple[str, str, str, int], ...] = ()


def broker_json(info: BrokerInfo) -> bytes:
    """/brokers/ids/<id> as Kafka's brokers write it (version 5)."""
    endpoints = info.endpoints or (("PLAINTEXT", "PLAINTEXT", info.host, info.port),)
    return json.dumps({
        "version": 5, "host": info.host, "port": info.port, "rack": info.rack, "jmx_port": -1,
        "timestamp": str(int(time.time() * 1000)),
        "endpoints": [f"{name}://{host}:{port}" for name, _, host, port in endpoints],
        "listener_security_protocol_map": {name: protocol for name, protocol, _, _ in endpoints},
    }).encode()


def parse_broker(broker_id: int, raw: bytes) -> BrokerInfo:
    """/brokers/ids/<id>; ValueError or KeyError when it is not a broker's registration."""
    d = json.loads(raw)
    return BrokerInfo(broker_id, d["host"], int(d["port"]), d.get("rack"), _parse_endpoints(d))


def _parse_endpoints(d: dict[str, object]) -> tuple[tuple[str, str, str, int], ...]:
    protocols = d.get("listener_security_protocol_map") or {}
    result = []
    for item in d.get("endpoints") or []:  # type: ignore[attr-defined]
        name, _, address = str(item).partition("://")
        host, _, port = address.rpartition(":")
        if not name or not port.isdigit():
            continue
        protocol = protocols.get(name, name) if isinstance(protocols, dict) else name
        result.append((name, str(protocol), host.strip("[]"), int(port)))
    return tuple(result)


@dataclass(frozen=True, slots=True)
class LeaderAndIsr:
    """A partition's state znode (Kafka's LeaderAndIsr) plus the znode version for CAS."""

    leader: int
    leader_epoch: int
    isr: tuple[int, ...]
    controller_epoch: int = 0
    zk_version: int = -1

    def to_json(self) -> bytes:
        return json.dumps({
            "controller_epoch": self.controller_epoch, "leader": self.leader, "version": 1,
            "leader_epoch": self.leader_epoch, "isr": list(self.isr),
        }).encode()

    @classmethod
    def from_json(cls, raw: bytes, zk_version: int) -> LeaderAndIsr:
        d = json.loads(raw)
        return cls(int(d["leader"]), int(d["leader_epoch"]), tuple(int(b) for b in d["isr"]),
                   int(d.get("controller_epoch", 0)), zk_version)


def with_version(state: LeaderAndIsr, version: int) -> LeaderAndIsr:
    return LeaderAndIsr(state.leader, state.leader_epoch, state.isr, state.controller_epoch, version)


def topic_path(topic: str) -> str:
    return f"/brokers/topics/{topic}"


def state_path(topic: str, partition: int) -> str:
    return f"/brokers/topics/{topic}/partitions/{partition}/state"


def config_path(topic: str) -> str:
    return f"/config/topics/{topic}"


def config_json(configs: dict[str, str]) -> bytes:
    return json.dumps({"version": 1, "config": configs}).encode()


def assignment_json(topic: TopicMetadata) -> bytes:
    """/brokers/topics/<t>: the replicas of every partition, and those of a reassignment under way."""
    return json.dumps({
        "version": 3, "topic_id": str(topic.topic_id),
        "partitions": {str(p): r for p, r in enumerate(topic.replicas)},
        "adding_replicas": {str(p): r for p, r in topic.adding.items()},
        "removing_replicas": {str(p): r for p, r in topic.removing.items()},
    }).encode()


def parse_topic(name: str, data: bytes, get: Callable[[str], tuple[bytes, Any]]) -> TopicMetadata:
    """/brokers/topics/<name> (`data`) with /config/topics/<name> read through `get`: kazoo's own
    (a watch waits for the reconnection), or a bounded one."""
    d = json.loads(data)
    parts = d["partitions"]
    replicas = [list(map(int, parts[str(p)])) for p in range(len(parts))]
    try:
        raw, _ = get(config_path(name))
        configs = {str(k): str(v) for k, v in json.loads(raw).get("config", {}).items()}
    except NoNodeError:
        configs = {}
    topic_id = uuid.UUID(d["topic_id"]) if d.get("topic_id") else uuid.uuid5(uuid.NAMESPACE_DNS, name)
    moving = [{int(p): list(map(int, r)) for p, r in (d.get(k) or {}).items() if r}
              for k in ("adding_replicas", "removing_replicas")]
    return TopicMetadata(name, topic_id, replicas, configs, moving[0], moving[1])


def cluster_id_json(cluster_id: str | None) -> bytes:
    """/cluster/id, with a new id (22 characters of base64, as Kafka's) unless one is given."""
    cluster_id = cluster_id or base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    return json.dumps({"version": "1", "id": cluster_id}).encode()


def parse_cluster_id(raw: bytes) -> str:
    return str(json.loads(raw)["id"])


def parse_controller(data: bytes | None) -> int:
    """/controller's broker id; -1 when there is none or it cannot be read."""
    try:
        return int(json.loads(data)["brokerid"]) if data else -1
    except (ValueError, KeyError):
        return -1


PRODUCER_ID_BLOCK_PATH = "/latest_producer_id_block"


def next_producer_id_block(raw: bytes | None) -> int:
    """The first producer id after the block /latest_producer_id_block holds (0 when empty)."""
    return int(json.loads(raw)["block_end"]) + 1 if raw else 0


def producer_id_block_json(broker_id: int, start: int, size: int) -> bytes:
    """/latest_producer_id_block as Kafka's ProducerIdManager writes it."""
    return json.dumps({"version": 1, "broker": broker_id, "block_start": str(start),
                       "block_end": str(start + size - 1)}).encode()
