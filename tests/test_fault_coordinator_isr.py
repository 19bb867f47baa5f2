"""Issue 18: the coordinators' own writes are acknowledged as Kafka's are (acks=-1).

Kafka's group coordinator appends to __consumer_offsets with
offsets.commit.required.acks=-1 and its transaction coordinator to
__transaction_state with acks=-1: while the partition's ISR is smaller than its
min.insync.replicas the append fails with NOT_ENOUGH_REPLICAS, which the
coordinators answer as COORDINATOR_NOT_AVAILABLE (GroupMetadataManager.storeGroup,
TransactionStateManager, CoordinatorOperationExceptionHelper); and a SyncGroup is
answered only once the group's assignment is held by the ISR, so no member acts on
an assignment the next coordinator does not know.

Real ZooKeeper, real brokers; the followers are SIGSTOPped (test_fault_offsets.py's
way) so the coordinator is left alone, and the requests are kio-built over TCP so
that the error each one gets is the one checked; confluent-kafka shows the client
side (a transactional producer retries and succeeds once the followers are back).
"""

from __future__ import annotations

import socket
import struct
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from conftest import recv_exact, unique
from kio.schema.errors import ErrorCode as E

from odradek.coordinator.records import partition_for
from odradek.protocol.build import build
from odradek.protocol.framing import decode_response, encode_request, request_type

if TYPE_CHECKING:
    from cluster_fixtures import Cluster, ClusterBroker

pytest_plugins = ["cluster_fixtures"]  # the zookeeper and cluster_factory fixtures

pytestmark = pytest.mark.timeout(150)

PARTITIONS = 3  # of __consumer_offsets (cluster_fixtures.FAST_ENV) and of __transaction_state here
MIN_ISR = {
    "ODRADEK_MIN_INSYNC_REPLICAS": "2",  # the broker's default: __consumer_offsets sets none of its own
    "ODRADEK_OFFSETS_TOPIC_REPLICATION_FACTOR": "3",
    "ODRADEK_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "3",
    "ODRADEK_TRANSACTION_STATE_LOG_NUM_PARTITIONS": str(PARTITIONS),
}
# __transaction_state has its own (Kafka's transaction.state.log.min.isr), whatever the broker's default
TXN_MIN_ISR = {**MIN_ISR, "ODRADEK_MIN_INSYNC_REPLICAS": "1", "ODRADEK_TRANSACTION_STATE_LOG_MIN_ISR": "2"}


def call(bootstrap: str, api_key: int, version: int, io_timeout: float = 20, **body: Any) -> Any:
    """One request on its own connection."""
    host, port = bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=io_timeout) as s:
        s.sendall(encode_request(api_key, version, 7, build(request_type(api_key, version), body)))
        size = struct.unpack(">i", recv_exact(s, 4))[0]
        return decode_response(recv_exact(s, size), api_key, version)[1]


def subscription(topic: str) -> bytes:
    """ConsumerProtocolSubscription v0 of one topic."""
    return struct.pack(">hih", 0, 1, len(topic)) + topic.encode() + struct.pack(">i", -1)


def join(bootstrap: str, group: str, topic: str) -> Any:
    """JoinGroup v5 of one new member (KIP-394: the second request carries the id it was given)."""
    body = {"group_id": group, "session_timeout": 60000, "rebalance_timeout": 60000, "group_instance_id": None,
            "protocol_type": "consumer", "protocols": [{"name": "range", "metadata": subscription(topic)}]}
    first = call(bootstrap, 11, 5, member_id="", **body)
    assert first.error_code == E.member_id_required
    return call(bootstrap, 11, 5, member_id=first.member_id, **body)


def sync_body(group: str, joined: Any) -> dict[str, Any]:
    return {"group_id": group, "generation_id": joined.generation_id, "member_id": joined.member_id,
            "group_instance_id": None, "assignments": [{"member_id": joined.member_id, "assignment": b"mine"}]}


def commit(bootstrap: str, group: str, topic: str, offset: int) -> E:
    """OffsetCommit v8 of a simple consumer (generation -1), topic-0."""
    response = call(bootstrap, 8, 8, group_id=group, generation_id_or_member_epoch=-1, member_id="",
                    group_instance_id=None, topics=[{"name": topic, "partitions": [
                        {"partition_index": 0, "committed_offset": offset, "committed_leader_epoch": -1,
                         "committed_metadata": ""}]}])
    return E(response.topics[0].partitions[0].error_code)


def committed(bootstrap: str, group: str, topic: str) -> int:
    response = call(bootstrap, 9, 7, group_id=group, topics=[{"name": topic, "partition_indexes": [0]}],
                    require_stable=False)
    assert response.error_code == E.none
    return int(response.topics[0].partitions[0].committed_offset)


def init_producer_id(bootstrap: str, transactional_id: str) -> tuple[E, int, int]:
    response = call(bootstrap, 22, 4, transactional_id=transactional_id, transaction_timeout=10000,
                    producer_id=-1, producer_epoch=-1)
    return E(response.error_code), int(response.producer_id), int(response.producer_epoch)


def add_partition(bootstrap: str, transactional_id: str, producer: tuple[int, int], topic: str, partition: int) -> E:
    response = call(bootstrap, 24, 3, v3_and_below_transactional_id=transactional_id,
                    v3_and_below_producer_id=producer[0], v3_and_below_producer_epoch=producer[1],
                    v3_and_below_topics=[{"name": topic, "partitions": [partition]}])
    return E(response.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code)


def end_txn(bootstrap: str, transactional_id: str, producer: tuple[int, int]) -> E:
    response = call(bootstrap, 26, 3, transactional_id=transactional_id, producer_id=producer[0],
                    producer_epoch=producer[1], committed=True)
    return E(response.error_code)


SETTLING = (E.not_coordinator, E.coordinator_load_in_progress, E.coordinator_not_available)


def coordinator_of(cluster: Cluster, key: str, key_type: int) -> ClusterBroker:
    """FindCoordinator (group 0, transaction 1) from a live broker; the first one creates the topic.
    The broker named is returned once it answers as the coordinator (a read of the key: DescribeGroups
    or DescribeTransactions), as a client retries while the partition's leadership settles (CI: the
    first InitProducerId or OffsetCommit answered NOT_COORDINATOR by the broker just named)."""
    def find() -> ClusterBroker | None:
        via = next(b for b in cluster.brokers if b.alive)
        entry = call(via.bootstrap, 10, 4, key_type=key_type, coordinator_keys=[key]).coordinators[0]
        if entry.error_code != E.none:
            return None
        named = cluster.by_id(int(entry.node_id))
        if key_type == 0:
            code = call(named.bootstrap, 15, 5, groups=[key], include_authorized_operations=False).groups[0].error_code
        else:
            code = call(named.bootstrap, 65, 0, transactional_ids=[key]).transaction_states[0].error_code
        return None if E(code) in SETTLING else named

    found: ClusterBroker = cluster.wait_for(f"the coordinator of {key}", find, timeout=60)
    return found


def first_commit(cluster: Cluster, group: str, topic: str, offset: int) -> ClusterBroker:
    """Commit before any fault, as a client does: re-find the coordinator while the offsets
    partition's leadership settles (CI: NOT_COORDINATOR from the broker FindCoordinator had named)."""
    deadline = time.monotonic() + 60
    while True:
        coordinator = coordinator_of(cluster, group, 0)
        code = commit(coordinator.bootstrap, group, topic, offset)
        if code == E.none:
            return coordinator
        assert code in SETTLING, code
        assert time.monotonic() < deadline, f"no commit of {group} within 60 s: {code}"
        time.sleep(0.5)


def isolate(cluster: Cluster, topic: str, partition: int, leader: ClusterBroker) -> list[ClusterBroker]:
    """SIGSTOP the partition's followers and wait until its leader has shrunk the ISR to itself."""
    state = cluster.wait_leader(topic, partition, isr_size=3, timeout=30)
    assert state.leader == leader.broker_id, f"broker {leader.broker_id} leads {topic}-{partition}"
    followers = [cluster.by_id(b) for b in state.replicas if b != leader.broker_id]
    for f in followers:
        f.pause()
    cluster.wait_for(f"the ISR of {topic}-{partition} shrunk to its leader", lambda: list(
        cluster.partition(topic, partition, via=leader).isrs) == [leader.broker_id], timeout=30)
    return followers


def rejoin(cluster: Cluster, topic: str, partition: int, leader: ClusterBroker, followers: list[ClusterBroker]) -> None:
    """SIGCONT the followers and wait until the leader has them in the ISR again."""
    for f in followers:
        f.resume()
    cluster.wait_for(f"the ISR of {topic}-{partition} back to min.insync.replicas", lambda: len(
        cluster.partition(topic, partition, via=leader).isrs) >= 2, timeout=60)


def test_offset_commit_and_sync_group_refused_while_the_offsets_isr_is_below_min_isr(cluster_factory: Any) -> None:
    cluster: Cluster = cluster_factory(3, env=MIN_ISR)
    topic, group = unique("mi"), unique("mi-group")
    part = partition_for(group, PARTITIONS)
    # a classic group (its members run a generation) and a KIP-848 consumer group in the same partition
    members = next(m for m in (f"{group}-members-{i}" for i in range(1000)) if partition_for(m, PARTITIONS) == part)
    consumers = next(m for m in (f"{group}-kip848-{i}" for i in range(1000)) if partition_for(m, PARTITIONS) == part)
    cluster.create_topic(topic)
    coordinator = first_commit(cluster, group, topic, 10)

    followers = isolate(cluster, "__consumer_offsets", part, coordinator)
    # NOT_ENOUGH_REPLICAS before the append, answered as Kafka's coordinator does; nothing to read back
    assert commit(coordinator.bootstrap, group, topic, 20) == E.coordinator_not_available
    assert committed(coordinator.bootstrap, group, topic) == 10
    # the leader's SyncGroup: its assignment cannot be stored, so no member is told it
    joined = join(coordinator.bootstrap, members, topic)
    assert joined.error_code == E.none and joined.leader == joined.member_id
    synced = call(coordinator.bootstrap, 14, 3, **sync_body(members, joined))
    assert synced.error_code == E.coordinator_not_available and synced.assignment == b""
    # and the group rebalances (Kafka's resetAndPropagateAssignmentWithError)
    beat = call(coordinator.bootstrap, 12, 3, group_id=members, generation_id=joined.generation_id,
                member_id=joined.member_id, group_instance_id=None)
    assert beat.error_code == E.rebalance_in_progress

    # a KIP-848 member's join: the group's new epoch and assignment are written and not answered
    # (Kafka's CoordinatorRuntime waits for the high watermark, which stays below min ISR)
    member = str(uuid.uuid4())
    heartbeat = call(coordinator.bootstrap, 68, 1, group_id=consumers, member_id=member, member_epoch=0,
                     rebalance_timeout=30000, subscribed_topic_names=[topic], topic_partitions=[])
    assert heartbeat.error_code == E.coordinator_not_available and heartbeat.assignment is None, heartbeat

    rejoin(cluster, "__consumer_offsets", part, coordinator, followers)
    assert commit(coordinator.bootstrap, group, topic, 20) == E.none
    assert committed(coordinator.bootstrap, group, topic) == 20
    # a real consumer commits again as well
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(topic, 0, 30)], asynchronous=False)
    finally:
        c.close()
    assert committed(coordinator.bootstrap, group, topic) == 30
    again = call(coordinator.bootstrap, 11, 5, group_id=members, session_timeout=60000, rebalance_timeout=60000,
                 member_id=joined.member_id, group_instance_id=None, protocol_type="consumer",
                 protocols=[{"name": "range", "metadata": subscription(topic)}])
    assert again.error_code == E.none and again.generation_id > joined.generation_id
    synced = call(coordinator.bootstrap, 14, 3, **sync_body(members, again))
    assert synced.error_code == E.none and synced.assignment == b"mine"
    # the KIP-848 member joins again (epoch 0, as a client does after COORDINATOR_NOT_AVAILABLE on its join)
    heartbeat = call(coordinator.bootstrap, 68, 1, group_id=consumers, member_id=member, member_epoch=0,
                     rebalance_timeout=30000, subscribed_topic_names=[topic], topic_partitions=[])
    assert heartbeat.error_code == E.none and heartbeat.member_epoch > 0, heartbeat
    assert [list(tp.partitions) for tp in heartbeat.assignment.topic_partitions] == [[0]]


def test_sync_group_is_answered_only_once_the_isr_holds_the_assignment(cluster_factory: Any) -> None:
    # the followers stay SIGSTOPped for about 2 s: an 8 s session keeps them registered and a 15 s
    # replica lag in the ISR, so the write waits for them and the next coordinator is one of them
    cluster: Cluster = cluster_factory(3, env={"ODRADEK_ZOOKEEPER_SESSION_TIMEOUT_MS": "8000",
                                               "ODRADEK_REPLICA_LAG_TIME_MAX_MS": "15000"})
    topic, group = unique("sg"), unique("sg-group")
    cluster.create_topic(topic)
    coordinator = coordinator_of(cluster, group, 0)
    part = partition_for(group, PARTITIONS)
    state = cluster.wait_leader("__consumer_offsets", part, isr_size=3, timeout=30)
    followers = [cluster.by_id(b) for b in state.replicas if b != coordinator.broker_id]
    joined = join(coordinator.bootstrap, group, topic)
    assert joined.error_code == E.none and joined.leader == joined.member_id

    for f in followers:
        f.pause()
    time.sleep(0.5)  # the followers' parked fetches come back empty first
    host, port = coordinator.bootstrap.split(":")
    answer: Any = None
    with socket.create_connection((host, int(port)), timeout=20) as s:
        s.sendall(encode_request(14, 3, 9, build(request_type(14, 3), sync_body(group, joined))))
        s.settimeout(1.5)
        try:
            size = struct.unpack(">i", recv_exact(s, 4))[0]
            answer = decode_response(recv_exact(s, size), 14, 3)[1]
        except TimeoutError:  # still waiting for the followers, as Kafka's storeGroup does
            pass
        coordinator.kill()  # before the followers could fetch the group's assignment
    for f in followers:
        f.resume()

    cluster.wait_leader("__consumer_offsets", part, not_in=(coordinator.broker_id,), timeout=60)

    def described() -> Any:
        new = coordinator_of(cluster, group, 0)
        found = call(new.bootstrap, 15, 5, groups=[group], include_authorized_operations=False).groups[0]
        return found if found.error_code == E.none else None

    seen = cluster.wait_for("the new coordinator describing the group", described, timeout=60)
    told = {m.member_id: m.member_assignment for m in seen.members}
    assert answer is None or answer.error_code != E.none or (
        seen.group_state == "Stable" and told.get(joined.member_id) == answer.assignment), (
        f"SyncGroup answered {answer} (generation {joined.generation_id}) by the SIGKILLed coordinator; "
        f"the next coordinator knows the group as {seen.group_state} with {told}")
    # the group goes on at the new coordinator
    new = coordinator_of(cluster, group, 0)
    again = join(new.bootstrap, group, topic)
    assert again.error_code == E.none
    synced = call(new.bootstrap, 14, 3, **sync_body(group, again))
    assert synced.error_code == E.none and synced.assignment == b"mine"


def test_transaction_coordinator_refuses_writes_while_its_isr_is_below_min_isr(cluster_factory: Any) -> None:
    cluster: Cluster = cluster_factory(3, env=TXN_MIN_ISR)
    topic, tid = unique("tx"), unique("tx-id")
    cluster.create_topic(topic, partitions=2)
    # __transaction_state is created by the first FindCoordinator of a transactional id
    coordinator = coordinator_of(cluster, tid, 1)
    error, *producer = init_producer_id(coordinator.bootstrap, tid)
    assert error == E.none
    pid_epoch = (producer[0], producer[1])
    assert add_partition(coordinator.bootstrap, tid, pid_epoch, topic, 0) == E.none
    part = partition_for(tid, PARTITIONS)
    # a librdkafka producer's own transactional id, in the same partition (its InitProducerId retries
    # go on after init_transactions times out, and must not fence the raw producer's transaction)
    client_tid = next(t for t in (f"{tid}-client-{i}" for i in range(1000)) if partition_for(t, PARTITIONS) == part)

    # each state change of the transaction is refused: Kafka's TransactionStateManager answers
    # NOT_ENOUGH_REPLICAS as COORDINATOR_NOT_AVAILABLE, which every client retries
    followers = isolate(cluster, "__transaction_state", part, coordinator)
    assert add_partition(coordinator.bootstrap, tid, pid_epoch, topic, 1) == E.coordinator_not_available
    assert end_txn(coordinator.bootstrap, tid, pid_epoch) == E.coordinator_not_available
    assert init_producer_id(coordinator.bootstrap, tid)[0] == E.coordinator_not_available
    p = Producer({"bootstrap.servers": coordinator.bootstrap, "transactional.id": client_tid, "linger.ms": 0})
    with pytest.raises(KafkaException):  # librdkafka retries COORDINATOR_NOT_AVAILABLE until its timeout
        p.init_transactions(5)

    rejoin(cluster, "__transaction_state", part, coordinator, followers)
    assert end_txn(coordinator.bootstrap, tid, pid_epoch) == E.none  # the retried EndTxn
    p.init_transactions(60)  # librdkafka: a timed-out init_transactions may be called again
    p.begin_transaction()
    p.produce(topic, b"after", partition=1)
    p.commit_transaction(60)


def static_join(bootstrap: str, group: str, topic: str) -> Any:
    """JoinGroup v5 of the static member "s1" with no member id: a first join or a restart's rejoin."""
    return call(bootstrap, 11, 5, group_id=group, session_timeout=60000, rebalance_timeout=60000, member_id="",
                group_instance_id="s1", protocol_type="consumer",
                protocols=[{"name": "range", "metadata": subscription(topic)}])


def same_partition(prefix: str, part: int) -> str:
    """A group id whose __consumer_offsets partition is `part`."""
    return next(g for g in (f"{prefix}-{i}" for i in range(1000)) if partition_for(g, PARTITIONS) == part)


def listed(bootstrap: str) -> set[str]:
    return {g.group_id for g in call(bootstrap, 16, 4, states_filter=[]).groups}


def describe(bootstrap: str, group: str) -> Any:
    found = call(bootstrap, 15, 5, groups=[group], include_authorized_operations=False).groups[0]
    assert found.error_code == E.none
    return found


def test_group_writes_refused_while_the_offsets_isr_is_below_min_isr(cluster_factory: Any) -> None:
    # Kafka's LeaveGroup (of the last member: the Empty group is written), DeleteGroups, OffsetDelete
    # and a static member's rejoin are coordinator writes like a commit: refused while the ISR is
    # short with nothing changed, done once the ISR is back
    cluster: Cluster = cluster_factory(3, env=MIN_ISR)
    topic = unique("gw")
    cluster.create_topic(topic)
    part = partition_for(topic, PARTITIONS)
    doomed, trimmed, members, static, consumers = (same_partition(f"{topic}-{kind}", part)
                                                   for kind in ("doomed", "trimmed", "members", "static", "kip848"))
    coordinator = first_commit(cluster, doomed, topic, 10)
    assert commit(coordinator.bootstrap, trimmed, topic, 10) == E.none
    joined = join(coordinator.bootstrap, members, topic)
    assert joined.error_code == E.none
    assert call(coordinator.bootstrap, 14, 3, **sync_body(members, joined)).error_code == E.none
    assert describe(coordinator.bootstrap, members).group_state == "Stable"
    # a static member (KIP-345) whose restart rejoins with its instance id and no member id
    first = static_join(coordinator.bootstrap, static, topic)
    assert first.error_code == E.none
    assert call(coordinator.bootstrap, 14, 3, **{**sync_body(static, first), "group_instance_id": "s1"}
                ).error_code == E.none

    # a KIP-848 member, whose leave (epoch -1) writes its tombstones and the group's next epoch
    member = str(uuid.uuid4())
    heartbeat = call(coordinator.bootstrap, 68, 1, group_id=consumers, member_id=member, member_epoch=0,
                     rebalance_timeout=30000, subscribed_topic_names=[topic], topic_partitions=[])
    assert heartbeat.error_code == E.none and heartbeat.member_epoch > 0, heartbeat

    def beat(member_id: str) -> E:
        return E(call(coordinator.bootstrap, 12, 3, group_id=static, generation_id=first.generation_id,
                      member_id=member_id, group_instance_id="s1").error_code)

    def delete_groups() -> E:
        return E(call(coordinator.bootstrap, 42, 2, groups_names=[doomed]).results[0].error_code)

    def offset_delete() -> tuple[E, list[E]]:
        response = call(coordinator.bootstrap, 47, 0, group_id=trimmed,
                        topics=[{"name": topic, "partitions": [{"partition_index": 0}]}])
        return E(response.error_code), [E(p.error_code) for t in response.topics for p in t.partitions]

    def leave() -> tuple[E, list[E]]:
        response = call(coordinator.bootstrap, 13, 4, group_id=members, members=[
            {"member_id": joined.member_id, "group_instance_id": None}])
        return E(response.error_code), [E(m.error_code) for m in response.members]

    followers = isolate(cluster, "__consumer_offsets", part, coordinator)
    assert delete_groups() == E.coordinator_not_available
    assert offset_delete()[0] == E.coordinator_not_available
    assert leave()[0] == E.coordinator_not_available
    # Kafka's updateStaticMemberAndRebalance: the new member id is not stored, the old member stays
    assert static_join(coordinator.bootstrap, static, topic).error_code == E.coordinator_not_available
    assert beat(first.member_id) == E.none
    # Kafka's CoordinatorRuntime: the leave is applied and appended, its answer waits for the high watermark
    left = call(coordinator.bootstrap, 68, 1, group_id=consumers, member_id=member, member_epoch=-1,
                rebalance_timeout=-1, subscribed_topic_names=None, topic_partitions=None)
    assert left.error_code == E.coordinator_not_available, left
    # nothing changed: the group is listed, the offsets are there, the member is in its Stable group
    assert {doomed, trimmed, members} <= listed(coordinator.bootstrap)
    assert committed(coordinator.bootstrap, doomed, topic) == 10
    assert committed(coordinator.bootstrap, trimmed, topic) == 10
    seen = describe(coordinator.bootstrap, members)
    assert seen.group_state == "Stable" and [m.member_id for m in seen.members] == [joined.member_id]

    rejoin(cluster, "__consumer_offsets", part, coordinator, followers)
    assert delete_groups() == E.none
    assert offset_delete() == (E.none, [E.none])
    assert leave() == (E.none, [E.none])
    assert doomed not in listed(coordinator.bootstrap)
    assert committed(coordinator.bootstrap, doomed, topic) == -1
    assert committed(coordinator.bootstrap, trimmed, topic) == -1
    seen = describe(coordinator.bootstrap, members)
    assert seen.group_state == "Empty" and list(seen.members) == []
    again = static_join(coordinator.bootstrap, static, topic)
    assert again.error_code == E.none and again.member_id != first.member_id
    assert again.generation_id == first.generation_id  # no rebalance (KIP-345)
    assert beat(first.member_id) == E.fenced_instance_id
    assert beat(again.member_id) == E.none


def consumer_join(bootstrap: str, group: str, member: str, topic: str) -> Any:
    """ConsumerGroupHeartbeat v1 of a new KIP-848 member (epoch 0)."""
    return call(bootstrap, 68, 1, group_id=group, member_id=member, member_epoch=0, rebalance_timeout=30000,
                subscribed_topic_names=[topic], topic_partitions=[])


def test_group_migrations_refused_while_the_offsets_isr_is_below_min_isr(cluster_factory: Any) -> None:
    # KIP-848 online migration: a classic member's join of a consumer group, and a consumer-protocol
    # member's upgrade of a Stable classic group, are coordinator writes like any other: refused with
    # nothing changed while the ISR is short, answered once the ISR holds them (before, both were
    # appended unchecked: the join answered NONE, the group turned into a consumer group)
    cluster: Cluster = cluster_factory(3, env=MIN_ISR)
    topic = unique("mig")
    cluster.create_topic(topic)
    part = partition_for(topic, PARTITIONS)
    mixed, upgraded = (same_partition(f"{topic}-{kind}", part) for kind in ("mixed", "upgraded"))
    coordinator = coordinator_of(cluster, mixed, 0)
    first = consumer_join(coordinator.bootstrap, mixed, str(uuid.uuid4()), topic)
    assert first.error_code == E.none and first.member_epoch > 0, first
    classic = join(coordinator.bootstrap, upgraded, topic)
    assert classic.error_code == E.none
    assert call(coordinator.bootstrap, 14, 3, **sync_body(upgraded, classic)).error_code == E.none

    def beat() -> E:
        return E(call(coordinator.bootstrap, 12, 3, group_id=upgraded, generation_id=classic.generation_id,
                      member_id=classic.member_id, group_instance_id=None).error_code)

    followers = isolate(cluster, "__consumer_offsets", part, coordinator)
    assert join(coordinator.bootstrap, mixed, topic).error_code == E.coordinator_not_available
    upgrade = consumer_join(coordinator.bootstrap, upgraded, str(uuid.uuid4()), topic)
    assert upgrade.error_code == E.coordinator_not_available, upgrade
    # the group is still the classic group its member runs
    seen = describe(coordinator.bootstrap, upgraded)
    assert (seen.group_state, seen.protocol_type) == ("Stable", "consumer")
    assert [m.member_id for m in seen.members] == [classic.member_id]
    assert beat() == E.none

    rejoin(cluster, "__consumer_offsets", part, coordinator, followers)
    again = join(coordinator.bootstrap, mixed, topic)
    assert again.error_code == E.none and again.generation_id > 0, again
    upgrade = consumer_join(coordinator.bootstrap, upgraded, str(uuid.uuid4()), topic)
    assert upgrade.error_code == E.none and upgrade.member_epoch > 0, upgrade


def test_offsets_commit_timeout_ms_bounds_the_wait_for_the_isr(cluster_factory: Any) -> None:
    # offsets.commit.timeout.ms: a commit waits that long for every in-sync replica. A follower stopped
    # (its ZooKeeper session outlives the test) leaves the ISR only after replica.lag.time.max.ms, 20 s:
    # a commit waiting up to 90 s outlasts that and succeeds; the former fixed 5 s answered
    # COORDINATOR_NOT_AVAILABLE
    cluster: Cluster = cluster_factory(3, env={**MIN_ISR, "ODRADEK_MIN_INSYNC_REPLICAS": "1",
                                               "ODRADEK_ZOOKEEPER_SESSION_TIMEOUT_MS": "120000",
                                               "ODRADEK_REPLICA_LAG_TIME_MAX_MS": "20000",
                                               "ODRADEK_OFFSETS_COMMIT_TIMEOUT_MS": "90000"})
    topic, group = unique("ct"), unique("ct-group")
    cluster.create_topic(topic)
    part = partition_for(group, PARTITIONS)
    coordinator = coordinator_of(cluster, group, 0)
    state = cluster.wait_leader("__consumer_offsets", part, isr_size=3, timeout=60)
    assert state.leader == coordinator.broker_id
    assert commit(coordinator.bootstrap, group, topic, 10) == E.none
    stopped = cluster.by_id(next(b for b in state.replicas if b != coordinator.broker_id))
    stopped.pause()
    try:
        response = call(coordinator.bootstrap, 8, 8, io_timeout=150, group_id=group,
                        generation_id_or_member_epoch=-1, member_id="", group_instance_id=None,
                        topics=[{"name": topic, "partitions": [{"partition_index": 0, "committed_offset": 20,
                                                                "committed_leader_epoch": -1,
                                                                "committed_metadata": ""}]}])
    finally:
        stopped.resume()
    assert E(response.topics[0].partitions[0].error_code) == E.none
    assert committed(coordinator.bootstrap, group, topic) == 20
