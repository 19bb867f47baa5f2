"""Issue 18: an acknowledged offset commit never goes backwards across coordinator failover.

The fault campaign (bench/fault_campaign.py) read consumer-group offsets back 2-3 s
after a fault 17 and 19 times lower than commits the coordinator had answered NONE:
the coordinator answered OffsetCommit as soon as it had appended the record to its
own __consumer_offsets partition, and a coordinator cut from its followers a moment
later (a partition, a one-way cut) acknowledged commits the next leader never had.
Kafka answers a commit only once every in-sync replica holds it
(offsets.commit.required.acks=-1), and OffsetFetch shows it only then.

The test does what the campaign did, deterministically: both followers of the
group's __consumer_offsets partition are SIGSTOPped, a commit goes to the
coordinator, the coordinator is SIGKILLed and the followers resume. Whatever the
client was told, an offset it saw acknowledged (or read back) must still be there
when the new coordinator answers. Real ZooKeeper, real brokers, confluent-kafka.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from conftest import unique

from odradek.coordinator.records import partition_for

if TYPE_CHECKING:
    from cluster_fixtures import Cluster

pytest_plugins = ["cluster_fixtures"]  # the zookeeper and cluster_factory fixtures

pytestmark = pytest.mark.timeout(300)  # a bound on a hang; a loaded machine makes a passing run slow

OFFSETS_PARTITIONS = 3  # cluster_fixtures.FAST_ENV's offsets.topic.num.partitions
# The followers stay SIGSTOPped for about 3 s: an 8 s session keeps them registered and a 15 s
# replica lag keeps them in the ISR meanwhile, so only the SIGKILLed coordinator leaves.
ENV = {"ODRADEK_ZOOKEEPER_SESSION_TIMEOUT_MS": "8000", "ODRADEK_REPLICA_LAG_TIME_MAX_MS": "15000"}


def _coordinator_of(cluster: Cluster, group: str) -> int:
    futures = cluster.admin().describe_consumer_groups([group], request_timeout=10)
    return int(futures[group].result(10).coordinator.id)


def _fetch_committed(admin: Any, group: str, topic: str, timeout: float = 10.0) -> int | None:
    """OffsetFetch through an AdminClient (its own coordinator lookup): the group's committed
    offset of topic-0, None when the request fails."""
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0)])
    try:
        result = admin.list_consumer_group_offsets([request], request_timeout=timeout)[group]
        tps = result.result(timeout + 5).topic_partitions  # the request times out first
    except (KafkaException, TimeoutError):
        return None
    return next((tp.offset for tp in tps if tp.topic == topic and tp.partition == 0 and tp.error is None), None)


@pytest.mark.parametrize("seed", [18])
def test_acknowledged_commit_survives_failover_of_a_coordinator_cut_from_its_followers(
        cluster_factory: Any, seed: int) -> None:
    cluster: Cluster = cluster_factory(3, env=ENV)  # __consumer_offsets gets RF 3 in a cluster
    topic = unique("fo")
    group = unique(f"fo-group-{seed}")
    cluster.create_topic(topic)
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group, "enable.auto.commit": False,
                  "socket.timeout.ms": 30000})
    try:
        # a simple consumer's commit (generation -1): no rebalance can move the offset itself
        c.commit(offsets=[TopicPartition(topic, 0, 10)], asynchronous=False)
        acked = 10
        coordinator = _coordinator_of(cluster, group)
        part = partition_for(group, OFFSETS_PARTITIONS)
        state = cluster.wait_leader("__consumer_offsets", part, isr_size=3, timeout=60)
        assert state.leader == coordinator, f"the coordinator {coordinator} leads __consumer_offsets-{part}"
        followers = [cluster.by_id(b) for b in state.replicas if b != coordinator]
        assert len(followers) == 2
        # while the followers are paused, an AdminClient that knows the coordinator only
        # (Cluster.admin() would first wait for metadata from a paused broker)
        near = AdminClient({"bootstrap.servers": cluster.by_id(coordinator).bootstrap})
        cluster.wait_for("the coordinator serving the first commit",
                         lambda: _fetch_committed(near, group, topic) == 10, timeout=60)

        for f in followers:
            f.pause()
        # The followers' fetches parked in the coordinator's purgatory (replica.fetch.wait.max.ms 200)
        # come back empty before the commit, so nothing of it sits in a paused follower's socket.
        time.sleep(0.5)
        # The consumer's commitSync in a thread: the broker answered it at once before the fix; now it
        # waits for the ISR, answers COORDINATOR_NOT_AVAILABLE after offsets.commit.timeout.ms and
        # librdkafka sends it again to the coordinator it finds next.
        outcome: dict[str, Any] = {}

        def commit() -> None:
            try:
                res = c.commit(offsets=[TopicPartition(topic, 0, 20)], asynchronous=False)
                outcome["acked"] = all(tp.error is None for tp in res or [])
            except KafkaException as exc:
                outcome["error"] = exc
            outcome["in"] = time.monotonic() - started

        started = time.monotonic()
        t = threading.Thread(target=commit, daemon=True)
        t.start()
        t.join(1.0)
        before_kill = "in" in outcome
        # what OffsetFetch says while the followers cannot have the commit (the campaign's
        # consumer read the group's offsets every 2 s so): this too must never go backwards
        seen = _fetch_committed(near, group, topic, timeout=2)
        # the SIGKILL before the followers resume: they never fetch what only the coordinator has
        cluster.by_id(coordinator).kill()
        for f in followers:
            f.resume()
        t.join(60)
        assert not t.is_alive(), "the commit neither succeeded nor failed within 60 s of the failover"
        if outcome.get("acked"):
            acked = 20
        floor = max(acked, seen or -1)

        new_leader = cluster.wait_leader("__consumer_offsets", part, not_in=(coordinator,), timeout=60).leader
        # a client that never knew the dead broker (librdkafka would wait for it as the coordinator)
        alive = AdminClient({"bootstrap.servers": ",".join(b.bootstrap for b in cluster.brokers if b.alive)})
        after = cluster.wait_for("the new coordinator answering OffsetFetch",
                                 lambda: _fetch_committed(alive, group, topic, timeout=5), timeout=60)
        assert after >= floor, (
            f"a committed offset went backwards: {acked} acknowledged (the commit of 20: {outcome}, "
            f"{'before' if before_kill else 'after'} the coordinator's SIGKILL), "
            f"{seen} read back while the followers were paused, {after} from the new coordinator "
            f"{new_leader}")
        # and the group goes on: a commit to the new coordinator is acknowledged and read back
        c.commit(offsets=[TopicPartition(topic, 0, 30)], asynchronous=False)
        # read back as a client would, through a retriable error (None) of a coordinator still loading
        cluster.wait_for("the commit of 30 read back", lambda: _fetch_committed(alive, group, topic) == 30)
    finally:
        c.close()
