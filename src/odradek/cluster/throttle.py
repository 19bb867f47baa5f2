"""Replication throttles with Kafka's names (KIP-73), and where their values live in ZooKeeper.

Two broker configs, set dynamically (kafka-configs --entity-type brokers, or
kafka-reassign-partitions --throttle): leader.replication.throttled.rate and
follower.replication.throttled.rate, in bytes/s, kept as Kafka's ZooKeeper mode keeps them
in /config/brokers/<id> and /config/brokers/<default>. Two topic configs say which replicas
the rates apply to: leader.replication.throttled.replicas and
follower.replication.throttled.replicas, "partition:broker,..." or "*".

The follower of a throttled replica leaves it out of its fetch while the follower quota is
used up, as Kafka's ReplicaFetcherThread does (shouldFollowerThrottle), unless it is in sync;
the quota is a token bucket refilled at the rate, holding at most one second of it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import NodeExistsError, NoNodeError  # type: ignore[import-untyped]

from odradek.cluster.zk import ZkMetadataStore

log = logging.getLogger("odradek.replication")

LEADER_RATE = "leader.replication.throttled.rate"
FOLLOWER_RATE = "follower.replication.throttled.rate"
LEADER_REPLICAS = "leader.replication.throttled.replicas"
FOLLOWER_REPLICAS = "follower.replication.throttled.replicas"
# kafka-reassign-partitions clears this one too; odradek has one log dir, so it has no effect
ALTER_LOG_DIRS_RATE = "replica.alter.log.dirs.io.max.bytes.per.second"
DYNAMIC_BROKER_CONFIGS = (LEADER_RATE, FOLLOWER_RATE, ALTER_LOG_DIRS_RATE)
DEFAULT_ENTITY = "<default>"


class Quota:
    """bytes/s with a burst of one second; `exceeded` once the bucket is empty."""

    def __init__(self) -> None:
        self.rate: float | None = None
        self._tokens = 0.0
        self._stamp = time.monotonic()

    def set_rate(self, rate: float | None) -> None:
        if rate != self.rate:
            self.rate = rate
            self._tokens = rate or 0.0
            self._stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        if self.rate is not None:
            self._tokens = min(self.rate, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def exceeded(self) -> bool:
        if self.rate is None:
            return False
        self._refill()
        return self._tokens <= 0

    def record(self, n: int) -> None:
        if self.rate is not None:
            self._refill()
            self._tokens -= n


def throttled(value: str | None, partition: int, broker_id: int) -> bool:
    """Whether "p:b,..." (or "*") names this broker's replica of `partition`."""
    if not value:
        return False
    items = [v.strip() for v in value.split(",")]
    return "*" in items or f"{partition}:{broker_id}" in items


def parse_rate(name: str, value: str | None) -> float | None:
    if value is None or value == "":
        return None
    rate = int(value)  # ValueError for the caller
    if rate < 0:
        raise ValueError(f"{name} must be at least 0")
    return float(rate)


class ReplicationThrottle:
    """This broker's two quotas, configured from its dynamic broker configs."""

    def __init__(self, broker_id: int) -> None:
        self.broker_id = broker_id
        self.leader = Quota()
        self.follower = Quota()

    def configure(self, values: dict[str, str]) -> None:
        for quota, name in ((self.leader, LEADER_RATE), (self.follower, FOLLOWER_RATE)):
            try:
                quota.set_rate(parse_rate(name, values.get(name)))
            except ValueError:
                log.warning("ignoring %s=%r: not a number of bytes per second", name, values.get(name))

    def follower_throttled(self, topic_configs: dict[str, str], partition: int) -> bool:
        return self.follower.rate is not None and throttled(topic_configs.get(FOLLOWER_REPLICAS), partition,
                                                            self.broker_id)

    def leader_throttled(self, topic_configs: dict[str, str], partition: int) -> bool:
        return self.leader.rate is not None and throttled(topic_configs.get(LEADER_REPLICAS), partition,
                                                          self.broker_id)


class DynamicBrokerConfigs:
    """/config/brokers/<id> and /config/brokers/<default>: {"version": 1, "config": {...}}."""

    def __init__(self, store: ZkMetadataStore, broker_id: int) -> None:
        self.store = store
        self.broker_id = broker_id
        self._seen: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def entity(resource_name: str) -> str:
        return resource_name or DEFAULT_ENTITY

    def watch(self, on_change: Callable[[dict[str, str]], None]) -> None:
        """`on_change(effective values)` through the store's `post`, now and at every change."""
        for entity in (DEFAULT_ENTITY, str(self.broker_id)):
            def changed(data: bytes | None, stat: Any, event: Any = None, entity: str = entity) -> None:
                with self._lock:
                    self._seen[entity] = _configs(data)
                    merged = {**self._seen.get(DEFAULT_ENTITY, {}), **self._seen.get(str(self.broker_id), {})}
                self.store.post(on_change, merged)

            self.store.zk.DataWatch(f"/config/brokers/{entity}", changed)

    def read(self, resource_name: str) -> dict[str, str]:
        """Blocking (the store's executor)."""
        try:
            raw, _ = self.store.ops.get(f"/config/brokers/{self.entity(resource_name)}")
        except NoNodeError:
            return {}
        return _configs(raw)

    def write(self, resource_name: str, configs: dict[str, str]) -> None:
        """Blocking (the store's executor)."""
        path = f"/config/brokers/{self.entity(resource_name)}"
        payload = json.dumps({"version": 1, "config": configs}).encode()
        try:
            self.store.ops.set(path, payload)
        except NoNodeError:
            try:
                self.store.ops.create(path, payload, makepath=True)
            except NodeExistsError:
                self.store.ops.set(path, payload)


def _configs(data: bytes | None) -> dict[str, str]:
    if not data:
        return {}
    try:
        return {str(k): str(v) for k, v in (json.loads(data).get("config") or {}).items()}
    except (ValueError, AttributeError):
        return {}
