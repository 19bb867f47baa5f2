"""Replication gaps of cluster mode closed by issue 17, one test each, on a real ZooKeeper with
real brokers and real clients; each fails on the main of commit 1c13748.

- A follower learns the leader's moved log start offset (DeleteRecords, retention) from its
  fetches: after a failover the records deleted before it stay deleted.
- A follower whose log ends below the leader's log start offset starts over at it (Kafka's
  truncateFullyAndStartAt) and rejoins the ISR, instead of asking for the same offset forever.
- ListOffsets checks current_leader_epoch before leadership (Partition.localLogWithEpochOrThrow).
- Fetch sessions (KIP-227): incremental fetches answer only the partitions that changed.
- No ZooKeeper call blocks the event loop: with ZooKeeper stopped, a CreateTopics waiting for
  it does not hold up other requests.
"""

from __future__ import annotations

import functools
import socket
import struct
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import cluster_fixtures
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from conftest import recv_exact, unique
from kio.schema.errors import ErrorCode

from odradek.cli.cluster_up import wait_for_port
from odradek.protocol.build import build
from odradek.protocol.framing import decode_response, encode_request, request_type

if TYPE_CHECKING:
    from cluster_fixtures import Cluster

pytest_plugins = ["cluster_fixtures"]

pytestmark = pytest.mark.timeout(300)

LIST_OFFSETS = 2
LATEST = -1


@pytest.fixture(scope="module", autouse=True)
def patient_start() -> Iterator[None]:
    """A broker of a loaded 2-core machine may take more than the fixtures' 20 s to listen."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cluster_fixtures, "wait_for_port", functools.partial(wait_for_port, timeout=90))
        yield


def call(bootstrap: str, api_key: int, version: int, **fields: Any) -> Any:
    """One kio-built request on a connection of its own, as a client would send it."""
    host, port = bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(encode_request(api_key, version, 1, build(request_type(api_key, version), fields)))
        size = struct.unpack(">i", recv_exact(sock, 4))[0]
        return decode_response(recv_exact(sock, size), api_key, version)[1]


def produce(cluster: Cluster, topic: str, count: int, acks: str = "all", start: int = 0) -> None:
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": acks, "linger.ms": 5,
                         "batch.num.messages": 50})
    for i in range(start, start + count):
        producer.produce(topic, value=b"%d" % i)
    assert producer.flush(60) == 0


def delete_records(cluster: Cluster, topic: str, before: int) -> None:
    (fut,) = cluster.admin().delete_records([TopicPartition(topic, 0, before)], request_timeout=30).values()
    assert fut.result(60).low_watermark == before


def read_all(cluster: Cluster, topic: str, expected: int) -> list[int]:
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": unique("g"), "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "enable.partition.eof": True, "fetch.wait.max.ms": 100})
    c.assign([TopicPartition(topic, 0, -2)])
    values: list[int] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and len(values) < expected:
            for msg in c.consume(1000, 0.5):
                if not msg.error():
                    values.append(int(msg.value()))
                elif msg.error().code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(msg.error())
    finally:
        c.close()
    return values


def test_followers_learn_the_leaders_log_start_offset(cluster_factory: object) -> None:
    cluster = cluster_factory(3)  # type: ignore[operator]
    topic = unique("lso")
    cluster.create_topic(topic, rf=3, configs={"segment.bytes": "2048", "min.insync.replicas": "2"})
    produce(cluster, topic, 1000)
    old = cluster.wait_leader(topic, isr_size=3)
    delete_records(cluster, topic, 600)
    produce(cluster, topic, 10, start=1000)  # a fetch round after the deletion reaches every follower
    cluster.by_id(old.leader).kill()
    cluster.wait_leader(topic, not_in=(old.leader,))
    # the new leader deleted them too: nothing below 600 comes back after the failover
    assert read_all(cluster, topic, 410) == list(range(600, 1010))

    # a follower that was down while the leader deleted past its log end starts over there
    topic2 = unique("behind")
    # the killed leader may have been the controller: CreateTopics waits for the next one (its
    # ZooKeeper session to expire), longer than create_topic's 15 s on a loaded machine
    from confluent_kafka.admin import NewTopic
    fs = cluster.admin().create_topics([NewTopic(topic2, 1, 2, config={"segment.bytes": "2048"})],
                                       operation_timeout=30)
    fs[topic2].result(60)
    part = cluster.wait_leader(topic2, isr_size=2)
    follower = cluster.by_id(next(b for b in part.replicas if b != part.leader))
    produce(cluster, topic2, 100)
    follower.kill()
    cluster.wait_leader(topic2, isr_size=1)
    cluster.wait_for("the ISR without the killed follower", lambda: len(cluster.partition(topic2).isrs) == 1)
    produce(cluster, topic2, 900, acks="1", start=100)
    delete_records(cluster, topic2, 800)
    follower.start()
    cluster.wait_for("the restarted follower back in the ISR",
                     lambda: follower.broker_id in cluster.partition(topic2).isrs, timeout=60)
    assert "starting over there" in follower.logs()
    leader = cluster.by_id(part.leader)
    leader.kill()
    cluster.wait_leader(topic2, not_in=(part.leader,))
    assert read_all(cluster, topic2, 200) == list(range(800, 1000))


def list_offsets_error(bootstrap: str, topic: str, current_leader_epoch: int) -> ErrorCode:
    fields = {"replica_id": -1, "isolation_level": 0, "timeout": 1000, "topics": [
        {"name": topic, "partitions": [{"partition_index": 0, "timestamp": LATEST,
                                        "current_leader_epoch": current_leader_epoch}]}]}
    (answer,) = call(bootstrap, LIST_OFFSETS, 6, **fields).topics
    return ErrorCode(answer.partitions[0].error_code)


def test_list_offsets_checks_the_current_leader_epoch(cluster_factory: object) -> None:
    cluster = cluster_factory(2, env={"ODRADEK_AUTO_LEADER_REBALANCE_ENABLE": "false"})  # type: ignore[operator]
    topic = unique("epoch")
    cluster.create_topic(topic, rf=2)
    part = cluster.wait_leader(topic, isr_size=2)
    old = cluster.by_id(part.leader)
    # one leader change: epoch 0 becomes stale, the other broker leads at epoch 1
    old.kill()
    new = cluster.by_id(cluster.wait_leader(topic, not_in=(old.broker_id,)).leader)
    cluster.wait_for("epoch 1 on the new leader", lambda: list_offsets_error(new.bootstrap, topic, 1) == ErrorCode.none)
    assert list_offsets_error(new.bootstrap, topic, 0) == ErrorCode.fenced_leader_epoch
    assert list_offsets_error(new.bootstrap, topic, 7) == ErrorCode.unknown_leader_epoch
    assert list_offsets_error(new.bootstrap, topic, -1) == ErrorCode.none
    # the old leader comes back as a follower: it fences a stale epoch before it says it does not lead
    old.start()
    cluster.wait_leader(topic, isr_size=2)
    cluster.wait_for("the returned broker following at epoch 1",
                     lambda: list_offsets_error(old.bootstrap, topic, 1) == ErrorCode.not_leader_or_follower)
    assert list_offsets_error(old.bootstrap, topic, 0) == ErrorCode.fenced_leader_epoch


FETCH = 1


def fetch(bootstrap: str, session_id: int, epoch: int, parts: dict[int, int], topic: str,
          forget: list[int] | None = None) -> Any:
    """Fetch v12 (topics by name) of `parts` {partition: fetch offset} in a session."""
    return call(bootstrap, FETCH, 12, replica_id=-1, max_wait=50, min_bytes=1, max_bytes=1 << 20,
                isolation_level=0, session_id=session_id, session_epoch=epoch,
                topics=[{"topic": topic, "partitions": [
                    {"partition": p, "current_leader_epoch": -1, "fetch_offset": o, "last_fetched_epoch": -1,
                     "log_start_offset": -1, "partition_max_bytes": 1 << 20} for p, o in parts.items()]}]
                if parts else [],
                forgotten_topics_data=[{"topic": topic, "partitions": forget}] if forget else [], rack_id="")


def answered(response: Any) -> dict[int, tuple[int, int]]:
    """{partition: (high watermark, records bytes)} of what a fetch answered."""
    assert response.error_code == ErrorCode.none, response.error_code
    return {p.partition_index: (p.high_watermark, len(p.records or b"")) for t in response.responses
            for p in t.partitions}


def test_fetch_sessions_answer_only_what_changed(broker_factory: Any) -> None:
    b = broker_factory()
    topic = unique("sessions")
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(15)
    producer = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0})

    def send(partition: int, n: int) -> None:
        for i in range(n):
            producer.produce(topic, value=b"%d" % i, partition=partition)
        assert producer.flush(15) == 0

    send(0, 5)
    # a full fetch with epoch 0 opens a session and answers every partition
    full = fetch(b.bootstrap, 0, 0, {0: 0, 1: 0, 2: 0}, topic)
    assert full.session_id != 0
    got = answered(full)
    assert set(got) == {0, 1, 2} and got[0][0] == 5 and got[0][1] > 0
    sid = full.session_id
    # incremental: the consumer moved on in partition 0 only; nothing is new anywhere
    assert answered(fetch(b.bootstrap, sid, 1, {0: 5}, topic)) == {}
    # records in partition 1: only it is answered, though the request names no partition
    send(1, 2)
    got = answered(fetch(b.bootstrap, sid, 2, {}, topic))
    assert list(got) == [1] and got[1][0] == 2 and got[1][1] > 0
    # an epoch out of turn, and a session that does not exist, as Kafka's FetchSessionCache answers
    assert fetch(b.bootstrap, sid, 2, {}, topic).error_code == ErrorCode.invalid_fetch_session_epoch
    assert fetch(b.bootstrap, sid + 1, 1, {}, topic).error_code == ErrorCode.fetch_session_id_not_found
    # a forgotten partition is no longer read: new records in it are not answered
    assert answered(fetch(b.bootstrap, sid, 3, {1: 2}, topic, forget=[2])) == {}
    send(2, 3)
    send(1, 1)
    assert list(answered(fetch(b.bootstrap, sid, 4, {}, topic))) == [1]
    # epoch -1 closes the session: a full answer without one, and the id is gone
    closed = fetch(b.bootstrap, sid, -1, {2: 0}, topic)
    assert closed.session_id == 0 and list(answered(closed)) == [2]
    assert fetch(b.bootstrap, sid, 5, {}, topic).error_code == ErrorCode.fetch_session_id_not_found


CREATE_TOPICS, API_VERSIONS = 19, 18


def test_a_zookeeper_write_does_not_hold_up_other_requests(cluster_factory: Any, zookeeper: Any) -> None:
    """CreateTopics waits for a stopped ZooKeeper in the store's executor; meanwhile the broker
    answers other connections (it used to wait on its event loop, answering nobody)."""
    import signal

    cluster = cluster_factory(1)
    broker = cluster.brokers[0]
    topic = unique("stalled")
    host, port = broker.bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as admin, \
            socket.create_connection((host, int(port)), timeout=30) as other:
        zookeeper.proc.send_signal(signal.SIGSTOP)
        try:
            body = build(request_type(CREATE_TOPICS, 4), {"topics": [
                {"name": topic, "num_partitions": 1, "replication_factor": 1, "assignments": [], "configs": []}],
                "timeout_ms": 30000, "validate_only": False})
            admin.sendall(encode_request(CREATE_TOPICS, 4, 1, body))
            time.sleep(0.5)  # the CreateTopics is in the broker, waiting for ZooKeeper
            body = build(request_type(API_VERSIONS, 3), {"client_software_name": "test",
                                                          "client_software_version": "1"})
            other.sendall(encode_request(API_VERSIONS, 3, 1, body))
            size = struct.unpack(">i", recv_exact(other, 4))[0]
            _, answer = decode_response(recv_exact(other, size), API_VERSIONS, 3)
            assert answer.error_code == ErrorCode.none
            admin.setblocking(False)
            with pytest.raises(BlockingIOError):  # answered while the CreateTopics still waits
                admin.recv(1)
        finally:
            zookeeper.proc.send_signal(signal.SIGCONT)
