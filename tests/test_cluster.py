"""Cluster mode: a real ZooKeeper, three real broker processes, SIGKILL.

Every test talks to the brokers with real clients (confluent-kafka, kafka-python).
Failover is quick because the fixtures configure a 2 s ZooKeeper session and a
1.5 s replica lag; the tests wait for conditions, never for fixed times.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from conftest import unique

if TYPE_CHECKING:
    from cluster_fixtures import Cluster

pytest_plugins = ["cluster_fixtures"]  # the zookeeper and cluster_factory fixtures

pytestmark = pytest.mark.timeout(240)


def consume_values(cluster: Cluster, topic: str, expected: int, timeout: float = 60.0) -> list[int]:
    """Read partition 0 from the beginning until `expected` records or the end."""
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": unique("g"), "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "enable.partition.eof": True, "fetch.wait.max.ms": 100})
    c.assign([TopicPartition(topic, 0, 0)])
    values: list[int] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for msg in c.consume(10000, 0.5):
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        if len(values) >= expected:
                            return values
                        continue
                    raise AssertionError(msg.error())
                values.append(int(msg.value()))
    finally:
        c.close()
    return values


def assert_acked_in_order(acked: set[int], values: list[int]) -> None:
    """Every acknowledged record is there, and records appear in the order produced.

    Without an idempotent producer a retried batch may be written twice; the
    first appearance of each value must still follow the production order.
    """
    first = list(dict.fromkeys(values))  # each value's first appearance, in the order read
    seen = set(first)
    missing = acked - seen
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:10]}"
    assert first == sorted(first), "records out of order"


def test_rf3_topic_leaders_and_brokers_visible_everywhere(cluster_factory: Any) -> None:
    cluster: Cluster = cluster_factory(3)
    topic = unique("rf3")
    cluster.create_topic(topic, partitions=3, rf=3)
    for b in cluster.brokers:
        md = cluster.metadata(topic, via=b)
        assert sorted(md.brokers) == [0, 1, 2]
        assert md.controller_id in (0, 1, 2)
        parts = md.topics[topic].partitions
        assert sorted({p.leader for p in parts.values()}) == [0, 1, 2]  # leaders spread over brokers
        for p in parts.values():
            assert sorted(p.replicas) == [0, 1, 2]
    from confluent_kafka.admin import NewTopic

    fs = cluster.admin().create_topics([NewTopic(unique("rf4"), 1, 4)], operation_timeout=10)
    with pytest.raises(Exception) as excinfo:
        next(iter(fs.values())).result(10)
    assert "INVALID_REPLICATION_FACTOR" in str(excinfo.value)


def test_acks_all_survives_repeated_leader_sigkill(cluster_factory: Any) -> None:
    cluster: Cluster = cluster_factory(3)
    topic = unique("kill")
    cluster.create_topic(topic, configs={"min.insync.replicas": "2"})
    total = 100_000
    acked: set[int] = set()
    errors: list[str] = []
    producer = Producer({
        "bootstrap.servers": cluster.bootstrap, "acks": "all", "enable.idempotence": True,
        "retry.backoff.ms": 50, "linger.ms": 5, "message.timeout.ms": 120000,
        "topic.metadata.refresh.interval.ms": 1000,
    })

    def on_delivery(err: Any, msg: Any) -> None:
        if err is None:
            acked.add(int(msg.value()))
        else:
            errors.append(str(err))

    leaders: list[int] = []
    kill_at = [total // 4, total // 2, 3 * total // 4]
    elected = [threading.Event() for _ in kill_at]
    done = threading.Event()
    in_flight = 20_000  # records the producer may run ahead of a kill

    def chaos() -> None:
        # SIGKILL the leader once kill_at[n] records are acknowledged, while up to `in_flight`
        # more are queued or in flight; restart it once another broker leads
        for n, threshold in enumerate(kill_at):
            while len(acked) < threshold and not done.is_set():
                time.sleep(0.005)
            if done.is_set():
                return
            part = cluster.wait_leader(topic, isr_size=3)
            victim = cluster.by_id(part.leader)
            leaders.append(part.leader)
            victim.kill()
            cluster.wait_leader(topic, not_in=(victim.broker_id,))
            elected[n].set()
            victim.start()

    killer = threading.Thread(target=chaos)
    killer.start()
    try:
        for i in range(total):
            for n, threshold in enumerate(kill_at):
                if i == threshold + in_flight:
                    while not elected[n].is_set() and killer.is_alive():
                        producer.poll(0.02)
            while True:
                try:
                    producer.produce(topic, str(i).encode(), partition=0, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        assert producer.flush(120) == 0
    finally:
        done.set()
        killer.join(60)
    assert not errors, errors[:5]
    assert len(leaders) == 3, leaders
    assert len(acked) == total
    values = consume_values(cluster, topic, total)
    assert values == list(range(total)), "idempotent producer: every record exactly once, in order"


def test_killed_follower_catches_up_and_rejoins_isr(cluster_factory: Any) -> None:
    cluster: Cluster = cluster_factory(3)
    topic = unique("follower")
    cluster.create_topic(topic, configs={"min.insync.replicas": "2"})
    part = cluster.wait_leader(topic, isr_size=3)
    follower = cluster.by_id(next(b for b in part.replicas if b != part.leader))
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 2})
    hws: list[int] = []
    watching = threading.Event()

    def watch_hw() -> None:
        c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": unique("hw")})
        while not watching.is_set():
            with contextlib.suppress(KafkaException):  # the leader just killed: the next look sees the new one
                hws.append(c.get_watermark_offsets(TopicPartition(topic, 0), timeout=2, cached=False)[1])
            time.sleep(0.01)
        c.close()

    watcher = threading.Thread(target=watch_hw)
    watcher.start()
    try:
        for i in range(2000):
            producer.produce(topic, str(i).encode(), partition=0)
        assert producer.flush(30) == 0
        follower.kill()
        cluster.wait_for("the ISR to drop the killed follower",
                         lambda: follower.broker_id not in cluster.partition(topic).isrs)
        for i in range(2000, 6000):
            producer.produce(topic, str(i).encode(), partition=0)
        assert producer.flush(30) == 0
        follower.start()
        cluster.wait_for("the follower back in the ISR",
                         lambda: sorted(cluster.partition(topic).isrs) == [0, 1, 2])
        for i in range(6000, 7000):
            producer.produce(topic, str(i).encode(), partition=0)
        assert producer.flush(30) == 0
    finally:
        watching.set()
        watcher.join(10)
    assert hws and all(a <= b for a, b in itertools.pairwise(hws)), "the high watermark went backwards"
    # The restarted follower holds everything: make it the only broker left and read from it.
    for b in cluster.brokers:
        if b is not follower:
            b.kill()
    cluster.wait_leader(topic)
    assert cluster.partition(topic).leader == follower.broker_id
    assert consume_values(cluster, topic, 7000) == list(range(7000))


def test_restarted_leader_truncates_its_unreplicated_tail(cluster_factory: Any) -> None:
    """Records a leader appended but no follower fetched (acks=1) before it died were never
    committed: back as a follower, it truncates them at the new leader's epoch boundary."""
    # the followers stay paused while the leader takes its tail: 8 s of ZooKeeper session and
    # replica lag (not FAST_ENV's 2 s) keep them in the ISR through that on a loaded machine
    cluster: Cluster = cluster_factory(3, env={"ODRADEK_ZOOKEEPER_SESSION_TIMEOUT_MS": "8000",
                                               "ODRADEK_REPLICA_LAG_TIME_MAX_MS": "8000"})
    topic = unique("trunc")
    cluster.create_topic(topic)
    part = cluster.wait_leader(topic, isr_size=3)
    leader = cluster.by_id(part.leader)
    followers = [cluster.by_id(b) for b in part.replicas if b != part.leader]
    committed = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 2})
    for i in range(1000):
        committed.produce(topic, str(i).encode(), partition=0)
    assert committed.flush(30) == 0
    tail = Producer({"bootstrap.servers": leader.bootstrap, "acks": "1", "linger.ms": 0})
    tail.produce(topic, b"-1", partition=0)  # connect first: the pause below must be short
    assert tail.flush(30) == 0
    watcher = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": unique("hw")})
    cluster.wait_for("the first acks=1 record replicated", lambda: watcher.get_watermark_offsets(
        TopicPartition(topic, 0), timeout=5, cached=False)[1] == 1001)
    watcher.close()
    for f in followers:
        f.pause()  # stop fetching (well within the 8 s session and replica lag)
    try:
        for _ in range(2):  # answers the fetches the frozen followers had parked at the leader
            tail.produce(topic, b"-2", partition=0)
            assert tail.flush(30) == 0
        for _ in range(50):  # only the leader ever has these
            tail.produce(topic, b"-3", partition=0)
        assert tail.flush(30) == 0
        leader.kill()
    finally:
        for f in followers:
            f.resume()
    cluster.wait_leader(topic, not_in=(leader.broker_id,))
    for i in range(1000, 2000):
        committed.produce(topic, str(i).encode(), partition=0)
    assert committed.flush(30) == 0
    leader.start()
    cluster.wait_for("the old leader back in the ISR", lambda: len(cluster.partition(topic).isrs) == 3)
    assert "truncating from" in leader.logs()
    for f in followers:
        f.kill()
    cluster.wait_leader(topic)
    assert cluster.partition(topic).leader == leader.broker_id
    values = consume_values(cluster, topic, 2001)  # stops at the end of the log
    assert [v for v in values if v >= 0] == list(range(2000))
    assert values.count(-1) == 1 and -3 not in values


def test_two_of_three_down_refuses_acks_all_and_loses_nothing(cluster_factory: Any) -> None:
    from kafka import KafkaProducer
    from kafka.errors import NotEnoughReplicasError

    cluster: Cluster = cluster_factory(3)
    topic = unique("ner")
    cluster.create_topic(topic, configs={"min.insync.replicas": "2"})
    part = cluster.wait_leader(topic, isr_size=3)
    kp = KafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all", retries=0)
    for i in range(100):
        kp.send(topic, str(i).encode(), partition=0)
    kp.flush(30)
    followers = [cluster.by_id(b) for b in part.replicas if b != part.leader]
    for f in followers:
        f.kill()
    cluster.wait_for("the ISR to shrink to the leader", lambda: list(cluster.partition(topic).isrs) == [part.leader])
    with pytest.raises(NotEnoughReplicasError):
        kp.send(topic, b"refused", partition=0).get(timeout=30)
    for f in followers:
        f.start()
    cluster.wait_for("the full ISR", lambda: len(cluster.partition(topic).isrs) == 3)
    kp.send(topic, b"100", partition=0).get(timeout=30)
    kp.close()
    assert consume_values(cluster, topic, 101) == list(range(101))


def test_controlled_shutdown_moves_leadership_without_errors(cluster_factory: Any) -> None:
    cluster: Cluster = cluster_factory(3)
    topic = unique("ctl")
    cluster.create_topic(topic, configs={"min.insync.replicas": "2"})
    part = cluster.wait_leader(topic, isr_size=3)
    leader = cluster.by_id(part.leader)
    errors: list[str] = []
    acked: set[int] = set()
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 2,
                         "enable.idempotence": True, "retry.backoff.ms": 20,
                         "topic.metadata.refresh.interval.ms": 500})

    def on_delivery(err: Any, msg: Any) -> None:
        (errors.append(str(err)) if err else acked.add(int(msg.value())))

    for i in range(3000):
        producer.produce(topic, str(i).encode(), partition=0, on_delivery=on_delivery)
        producer.poll(0)
        if i == 1000:
            started = time.monotonic()
            assert leader.stop() == 0
            took = time.monotonic() - started
    assert producer.flush(60) == 0
    assert not errors, errors[:5]
    # no wall-clock bound (it was 10 s; a loaded machine trips one): the controlled shutdown succeeds
    # within Kafka's bound (max.retries x retry.backoff.ms) and the stop ends by itself
    assert "the shutdown did not end within" not in leader.logs(), f"the stop took {took:.1f} s"
    assert "stopping without it" not in leader.logs(), f"the controlled shutdown failed ({took:.1f} s)"
    new = cluster.wait_leader(topic, not_in=(leader.broker_id,))
    assert new.leader != leader.broker_id
    shutdown_log = leader.logs().split("controlled shutdown: moved 1 leadership", 1)
    assert len(shutdown_log) == 2
    # the partition-state events that reach it afterwards start no fetcher that would outlive the logs
    assert "following leader" not in shutdown_log[1], shutdown_log[1][-2000:]
    assert consume_values(cluster, topic, 3000) == list(range(3000))
    # auto.leader.rebalance.enable: back and in sync, the preferred replica leads again
    leader.start()
    preferred = part.replicas[0]
    cluster.wait_for("the preferred replica leading again", lambda: cluster.partition(topic).leader == preferred)


def test_leader_that_lost_its_zookeeper_session_steps_down(cluster_factory: Any) -> None:
    """A leader frozen past its session timeout (SIGSTOP) is replaced; when it wakes up it
    must not act as leader: it re-registers, truncates, follows, and rejoins the ISR."""
    cluster: Cluster = cluster_factory(3)
    topic = unique("zombie")
    cluster.create_topic(topic, configs={"min.insync.replicas": "2"})
    part = cluster.wait_leader(topic, isr_size=3)
    zombie = cluster.by_id(part.leader)
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 2, "retry.backoff.ms": 50, "topic.metadata.refresh.interval.ms": 500,
                         "message.timeout.ms": 60000, "socket.timeout.ms": 3000})
    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    for i in range(1000):
        producer.produce(topic, str(i).encode(), partition=0, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    zombie.pause()
    try:
        for i in range(1000, 2000):
            producer.produce(topic, str(i).encode(), partition=0, on_delivery=on_delivery)
            producer.poll(0)
        new = cluster.wait_leader(topic, not_in=(zombie.broker_id,))
        assert producer.flush(60) == 0
    finally:
        zombie.resume()
    for i in range(2000, 3000):
        producer.produce(topic, str(i).encode(), partition=0, on_delivery=on_delivery)
    assert producer.flush(60) == 0
    assert not errors, errors[:5]
    cluster.wait_for("the woken broker back in the ISR", lambda: len(cluster.partition(topic).isrs) == 3)
    assert cluster.partition(topic).leader in (new.leader, zombie.broker_id)
    assert "stops acting as leader" in zombie.logs()
    assert consume_values(cluster, topic, 3000) == list(range(3000))


def test_unclean_leader_election_only_when_the_topic_allows_it(cluster_factory: Any) -> None:
    """With every in-sync replica dead, an out-of-sync one may lead only with
    unclean.leader.election.enable=true on the topic (off by default)."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    cluster: Cluster = cluster_factory(3)
    topic = unique("unclean")
    cluster.create_topic(topic)
    part = cluster.wait_leader(topic, isr_size=3)
    leader = cluster.by_id(part.leader)
    stale, other = (cluster.by_id(b) for b in part.replicas if b != part.leader)
    stale.kill()
    cluster.wait_for("the ISR without the stale replica", lambda: stale.broker_id not in cluster.partition(topic).isrs)
    other.kill()
    leader.kill()
    stale.start()
    time.sleep(3)  # two controller rounds (REBALANCE_INTERVAL_S): nothing may elect the stale replica
    offline = cluster.partition(topic, via=stale)
    assert offline.leader == -1, "an out-of-sync replica was elected without unclean.leader.election.enable"
    resource = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry("unclean.leader.election.enable", "true", incremental_operation=AlterConfigOpType.SET)])
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": stale.bootstrap})
    admin.incremental_alter_configs([resource])[resource].result(10)
    part = cluster.wait_leader(topic)
    assert part.leader == stale.broker_id and list(part.isrs) == [stale.broker_id]


def test_controller_death_elects_another_controller(cluster_factory: Any) -> None:
    cluster: Cluster = cluster_factory(3)
    (first,) = cluster.wait_for("a controller", lambda: (
        (c,) if (c := cluster.metadata().controller_id) in (0, 1, 2) else None))
    cluster.by_id(first).kill()
    (new,) = cluster.wait_for("another controller", lambda: (
        (c,) if (c := cluster.metadata().controller_id) not in (first, -1) else None))
    assert new != first
    # the new controller does its job: a topic whose leader dies gets a new one
    topic = unique("after")
    cluster.create_topic(topic, rf=2)
    part = cluster.wait_leader(topic, isr_size=2)
    cluster.by_id(part.leader).kill()
    assert cluster.wait_leader(topic, not_in=(part.leader,)).leader != part.leader


def test_consumer_group_offsets_survive_coordinator_death(cluster_factory: Any) -> None:
    cluster: Cluster = cluster_factory(3)  # __consumer_offsets gets RF 3 by default in a cluster
    topic = unique("grp")
    group = unique("group")
    cluster.create_topic(topic)
    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
    for i in range(100):
        p.produce(topic, str(i).encode(), partition=0)
    assert p.flush(30) == 0

    def consumer() -> Consumer:
        c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group, "enable.auto.commit": False,
                      "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
        c.subscribe([topic])
        return c

    c = consumer()
    got: list[Any] = []
    deadline = time.monotonic() + 60
    while len(got) < 40 and time.monotonic() < deadline:
        got.extend(m for m in c.consume(40 - len(got), 0.5) if not m.error())
    assert len(got) == 40
    c.commit(message=got[-1], asynchronous=False)
    coordinator = _coordinator_of(cluster, group)
    c.close()
    # odradek answers OffsetCommit once the coordinator appended the record, before its followers
    # fetched it (Kafka waits for the ISR, offsets.commit.required.acks=-1); so wait until the
    # record is below the high watermark, i.e. on every in-sync replica, before the SIGKILL.
    cluster.wait_for("the commit replicated to every in-sync replica",
                     lambda: _commit_replicated(cluster, group, topic, 40), timeout=60)
    cluster.by_id(coordinator).kill()
    cluster.wait_for("the new coordinator serving the committed offset",
                     lambda: _committed_offset(cluster, group, topic, not_from=coordinator) == 40, timeout=60)
    c2 = consumer()
    first = None
    deadline = time.monotonic() + 60
    while first is None and time.monotonic() < deadline:
        for m in c2.consume(1, 0.5):
            if not m.error():
                first = m
    c2.close()
    assert first is not None and int(first.value()) == 40


def _coordinator_of(cluster: Cluster, group: str) -> int:
    from confluent_kafka import ConsumerGroupTopicPartitions  # noqa: F401

    futures = cluster.admin().describe_consumer_groups([group], request_timeout=10)
    return int(futures[group].result(10).coordinator.id)


def _committed_offset(cluster: Cluster, group: str, topic: str, not_from: int) -> int | None:
    """The group's committed offset of topic-0 as OffsetFetch returns it, once a broker
    other than `not_from` coordinates the group (None before)."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    if _coordinator_of(cluster, group) == not_from:
        return None
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0)])
    result = cluster.admin().list_consumer_group_offsets([request], request_timeout=10)[group].result(10)
    return next((tp.offset for tp in result.topic_partitions if tp.topic == topic and tp.partition == 0), None)


def _commit_replicated(cluster: Cluster, group: str, topic: str, offset: int, timeout: float = 10.0) -> bool:
    """The OffsetCommit record of group/topic-0 at `offset` is readable from __consumer_offsets.

    Consumers read only below the high watermark, the offset every in-sync replica has.
    Keys are version 0/1 (group, topic, partition), values start with version and offset.
    """
    import struct

    md = cluster.metadata("__consumer_offsets")
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": unique("peek"), "enable.auto.commit": False,
                  "enable.partition.eof": True, "fetch.wait.max.ms": 100})
    parts = list(md.topics["__consumer_offsets"].partitions)
    c.assign([TopicPartition("__consumer_offsets", p, 0) for p in parts])
    want = struct.pack(">h", len(group)) + group.encode() + struct.pack(">h", len(topic)) + topic.encode() + \
        struct.pack(">i", 0)
    eof: set[int] = set()
    try:
        deadline = time.monotonic() + timeout
        while len(eof) < len(parts) and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        eof.add(m.partition())
                    continue
                key, value = m.key() or b"", m.value()
                if key[2:] == want and value is not None and struct.unpack_from(">q", value, 2)[0] == offset:
                    return True
    finally:
        c.close()
    return False


def test_internal_topics_take_the_brokers_registered_and_say_so(cluster_factory: Any) -> None:
    """Unless offsets.topic.replication.factor is configured, __consumer_offsets gets as many
    replicas as brokers are registered (at most 3), and a broker that gives it fewer than 3
    says so in one line naming the key that would require more."""
    cluster: Cluster = cluster_factory(2)
    topic = unique("two")
    cluster.create_topic(topic, partitions=1, rf=2)
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": unique("g"), "auto.offset.reset": "earliest"})
    try:  # the group's FindCoordinator creates __consumer_offsets
        c.assign([TopicPartition(topic, 0, 0)])
        cluster.wait_for("a committed offset", lambda: c.commit(
            offsets=[TopicPartition(topic, 0, 0)], asynchronous=False) is not None)
    finally:
        c.close()
    parts = cluster.metadata("__consumer_offsets").topics["__consumer_offsets"].partitions
    assert parts and all(sorted(p.replicas) == [0, 1] for p in parts.values())
    said = [line for b in cluster.brokers for line in b.logs().splitlines() if "gets replication factor" in line]
    assert said and all("__consumer_offsets gets replication factor 2: only 2 broker(s) registered; set "
                        "offsets.topic.replication.factor to require more" in line for line in said), said
