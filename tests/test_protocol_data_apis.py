"""The data-path APIs at the versions Kafka 4.x clients send (issue 21).

Produce v13 and Fetch v13+ name topics by id (KIP-516), Fetch v15 carries the
replica in ReplicaState (KIP-903), Metadata v13 has a top-level error code,
DescribeTopicPartitions pages its answer (KIP-966), NOT_LEADER_OR_FOLLOWER comes
with the current leader and its address (KIP-951), and a compacted topic refuses
a record without a key with INVALID_RECORD and its index (KIP-467).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import socket
import struct
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
)
from confluent_kafka.admin import ResourceType as AclResourceType
from conftest import BrokerProcess, free_port, module_broker, recv_exact, unique
from kio.schema.errors import ErrorCode
from kio.static.primitive import Records

from odradek.protocol.build import ZERO_UUID, build
from odradek.protocol.framing import decode_response, encode_request, request_type
from odradek.protocol.record_errors import InvalidRecordError
from odradek.protocol.records import (
    decode_batch,
    encode_batch,
    keyless_records,
    parse_batches,
)

if TYPE_CHECKING:
    from cluster_fixtures import Cluster

ROOT = Path(__file__).resolve().parent.parent
PRODUCE, FETCH, METADATA, DESCRIBE_TOPIC_PARTITIONS = 0, 1, 3, 75

data_broker = module_broker("data_broker")
pytest_plugins = ["cluster_fixtures"]  # the zookeeper and cluster_factory fixtures


# -- talking to a broker with kio-built requests --------------------------------------------


def call(bootstrap: str, api_key: int, version: int, **values: Any) -> Any:
    """One request of `version`, built from Kafka's field names, and its decoded response."""
    host, port = bootstrap.split(":")
    body = build(request_type(api_key, version), values)
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(encode_request(api_key, version, 11, body))
        size = struct.unpack(">i", recv_exact(s, 4))[0]
        frame = recv_exact(s, size)
    return decode_response(frame, api_key, version)[1]


def create_topic(bootstrap: str, name: str, partitions: int = 1, config: dict[str, str] | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1, config=config or {})], operation_timeout=30)[name].result(60)
    deadline = time.monotonic() + 60  # Kafka's brokers learn of a new topic a moment after the controller
    while call(bootstrap, METADATA, 12, topics=[{"name": name}], allow_auto_topic_creation=False).topics[
            0].error_code != ErrorCode.none:
        assert time.monotonic() < deadline, f"{name} not in Metadata 60 s after CreateTopics"
        time.sleep(0.05)


def topic_id(bootstrap: str, name: str) -> uuid.UUID:
    resp = call(bootstrap, METADATA, 12, topics=[{"name": name}], allow_auto_topic_creation=False)
    assert resp.topics[0].error_code == ErrorCode.none
    return resp.topics[0].topic_id  # type: ignore[no-any-return]


def batch(*records: tuple[bytes | None, bytes]) -> Records:
    return Records(encode_batch([(k, v, ()) for k, v in records], base_offset=0, timestamp_ms=1_700_000_000_000))


def produce_v13(bootstrap: str, tid: uuid.UUID, records: Records, partition: int = 0) -> Any:
    return call(bootstrap, PRODUCE, 13, acks=-1, timeout=datetime.timedelta(seconds=30), topic_data=[
        {"topic_id": tid, "partition_data": [{"index": partition, "records": records}]}])


def fetch(bootstrap: str, version: int, topic: dict[str, Any], partition: int = 0, offset: int = 0,
          leader_epoch: int = -1, **extra: Any) -> Any:
    return call(bootstrap, FETCH, version, max_wait=datetime.timedelta(milliseconds=10), min_bytes=0,
                max_bytes=1 << 20, isolation_level=0, session_epoch=-1, replica_id=-1, topics=[
                    {**topic, "partitions": [{"partition": partition, "current_leader_epoch": leader_epoch,
                                              "fetch_offset": offset, "partition_max_bytes": 1 << 20}]}], **extra)


def keys_values(records: bytes | None) -> list[tuple[bytes | None, bytes | None]]:
    out = []
    pos = 0
    data = bytes(records or b"")
    while pos < len(data):
        decoded = decode_batch(data, pos)
        out += [(r.key, r.value) for r in decoded.records]
        pos += decoded.header.size
    return out


# -- a proxy that notes which API versions clients send ----------------------------------


class VersionSniffer:
    """A TCP proxy in front of one broker that records (api key, version) of each request; the
    broker advertises the proxy's address, so clients send everything through it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.target = 0
        self.seen: set[tuple[int, int]] = set()
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _requests(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                head = recv_exact(src, 4)
                frame = recv_exact(src, struct.unpack(">i", head)[0])
                self.seen.add(struct.unpack(">hh", frame[:4]))
                dst.sendall(head + frame)
        except OSError:
            dst.close()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        dst.close()

    def versions(self, api_key: int) -> set[int]:
        return {v for k, v in self.seen if k == api_key}

    def close(self) -> None:
        self._server.close()


# -- tests ---------------------------------------------------------------------------------


def test_java_client_produces_and_fetches_by_topic_id_and_pages_describe_topics(broker_factory: Any) -> None:
    sniffer = VersionSniffer()
    try:
        b: BrokerProcess = broker_factory("--advertise", f"127.0.0.1:{sniffer.port}")
        sniffer.target = b.port
        topic, wide = unique("java-ids"), unique("java-wide")
        create_topic(b.bootstrap, topic)
        create_topic(b.bootstrap, wide, partitions=25)
        out = subprocess.run(
            ["java", "-cp", str(ROOT / "tests/java/lib/*"), str(ROOT / "tests/java/DataApis.java"),
             f"127.0.0.1:{sniffer.port}", topic, "50", wide, "10"],
            check=False, capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert out.returncode == 0, out.stderr[-3000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        sniffer.close()
    assert result["offsets"] == list(range(50))
    assert result["consumed"] == [f"k{i}=v{i}" for i in range(50)]
    assert result["described"][topic]["topic_id"] == str_uuid_base64(topic_id(b.bootstrap, topic))
    assert result["described"][wide]["partitions"] == list(range(25))  # gathered over three pages of 10
    assert result["described"][wide]["leaders"] == [0] * 25
    assert result["described"][wide]["isr_sizes"] == [1] * 25
    assert result["described"][wide]["elr"] == 0
    # what Kafka 4.3.1's client chose once odradek advertised it
    assert 13 in sniffer.versions(PRODUCE)
    assert max(sniffer.versions(FETCH)) >= 17
    assert sniffer.versions(DESCRIBE_TOPIC_PARTITIONS) == {0}


def str_uuid_base64(value: uuid.UUID) -> str:
    """Kafka's Uuid.toString: URL-safe base64 of the 16 bytes, without padding."""
    import base64

    return base64.urlsafe_b64encode(value.bytes).decode().rstrip("=")


@pytest.mark.kafka_behaviour
def test_produce_and_fetch_by_topic_id_and_a_wrong_id_is_unknown_topic_id(data_broker: BrokerProcess) -> None:
    topic = unique("by-id")
    create_topic(data_broker.bootstrap, topic)
    tid = topic_id(data_broker.bootstrap, topic)
    resp = produce_v13(data_broker.bootstrap, tid, batch((b"k", b"by id")))
    assert resp.responses[0].topic_id == tid
    assert resp.responses[0].partition_responses[0].error_code == ErrorCode.none
    assert resp.responses[0].partition_responses[0].base_offset == 0
    wrong = uuid.uuid4()
    resp = produce_v13(data_broker.bootstrap, wrong, batch((b"k", b"lost")))
    assert resp.responses[0].topic_id == wrong
    assert resp.responses[0].partition_responses[0].error_code == ErrorCode.unknown_topic_id
    for version in (13, 15, 16, 17, 18):
        got = fetch(data_broker.bootstrap, version, {"topic_id": tid})
        assert got.responses[0].topic_id == tid
        part = got.responses[0].partitions[0]
        assert part.error_code == ErrorCode.none and part.high_watermark == 1
        assert keys_values(part.records) == [(b"k", b"by id")]
        got = fetch(data_broker.bootstrap, version, {"topic_id": wrong})
        assert got.responses[0].topic_id == wrong
        assert got.responses[0].partitions[0].error_code == ErrorCode.unknown_topic_id
    # v12 still names the topic
    got = fetch(data_broker.bootstrap, 12, {"topic": topic})
    assert keys_values(got.responses[0].partitions[0].records) == [(b"k", b"by id")]


@pytest.mark.kafka_behaviour
def test_fetch_v15_consumer_in_replica_state_and_an_epoch_ahead_is_unknown_leader_epoch(data_broker: BrokerProcess) -> None:
    topic = unique("v15")
    create_topic(data_broker.bootstrap, topic)
    tid = topic_id(data_broker.bootstrap, topic)
    produced = produce_v13(data_broker.bootstrap, tid, batch((b"a", b"1"), (b"b", b"2")))
    assert produced.responses[0].partition_responses[0].error_code == ErrorCode.none
    md = call(data_broker.bootstrap, METADATA, 13, topics=[{"name": topic}], allow_auto_topic_creation=False)
    epoch = md.topics[0].partitions[0].leader_epoch
    got = fetch(data_broker.bootstrap, 15, {"topic_id": tid}, leader_epoch=epoch, offset=1,
                replica_state={"replica_id": -1, "replica_epoch": -1})
    part = got.responses[0].partitions[0]
    assert part.error_code == ErrorCode.none
    assert keys_values(part.records)[-1] == (b"b", b"2")
    # KIP-320: an epoch the leader has not reached yet is UNKNOWN_LEADER_EPOCH (retriable)
    got = fetch(data_broker.bootstrap, 18, {"topic_id": tid}, leader_epoch=epoch + 1)
    assert got.responses[0].partitions[0].error_code == ErrorCode.unknown_leader_epoch


@pytest.mark.kafka_behaviour
def test_metadata_v13_answers_by_name_and_by_id(data_broker: BrokerProcess) -> None:
    topic = unique("md13")
    create_topic(data_broker.bootstrap, topic, partitions=2)
    resp = call(data_broker.bootstrap, METADATA, 13, topics=[{"name": topic}], allow_auto_topic_creation=False)
    assert resp.error_code == ErrorCode.none
    assert resp.topics[0].error_code == ErrorCode.none and len(resp.topics[0].partitions) == 2
    tid = resp.topics[0].topic_id
    assert tid != ZERO_UUID
    by_id = call(data_broker.bootstrap, METADATA, 13, topics=[{"topic_id": tid, "name": None}],
                 allow_auto_topic_creation=False)
    assert by_id.error_code == ErrorCode.none and by_id.topics[0].name == topic
    unknown = call(data_broker.bootstrap, METADATA, 13, topics=[{"topic_id": uuid.uuid4(), "name": None}],
                   allow_auto_topic_creation=False)
    assert unknown.error_code == ErrorCode.none
    assert unknown.topics[0].error_code == ErrorCode.unknown_topic_id and unknown.topics[0].name is None


def describe(bootstrap: str, names: list[str], limit: int, cursor: tuple[str, int] | None = None) -> Any:
    return call(bootstrap, DESCRIBE_TOPIC_PARTITIONS, 0, topics=[{"name": n} for n in names],
                response_partition_limit=limit,
                cursor=None if cursor is None else {"topic_name": cursor[0], "partition_index": cursor[1]})


@pytest.mark.kafka_behaviour
def test_describe_topic_partitions_pages_in_name_order_with_a_cursor(data_broker: BrokerProcess) -> None:
    prefix = unique("dtp")
    a, b, missing = f"{prefix}-a", f"{prefix}-b", f"{prefix}-c-missing"
    create_topic(data_broker.bootstrap, a, partitions=3)
    create_topic(data_broker.bootstrap, b, partitions=4)
    first = describe(data_broker.bootstrap, [missing, b, a], 5)
    assert [(t.name, [p.partition_index for p in t.partitions]) for t in first.topics] == [(a, [0, 1, 2]), (b, [0, 1])]
    assert (first.next_cursor.topic_name, first.next_cursor.partition_index) == (b, 2)
    part = first.topics[0].partitions[0]
    node = call(data_broker.bootstrap, METADATA, 13, topics=[]).brokers[0].node_id
    assert part.leader_id == node and list(part.replica_nodes) == [node] and list(part.isr_nodes) == [node]
    assert list(part.eligible_leader_replicas or []) == [] and list(part.offline_replicas) == []
    assert first.topics[0].topic_id == topic_id(data_broker.bootstrap, a)
    assert first.topics[0].topic_authorized_operations > 0  # KIP-430 bits: everything, without an authorizer
    second = describe(data_broker.bootstrap, [missing, b, a], 5, cursor=(b, 2))
    assert [(t.name, t.error_code, [p.partition_index for p in t.partitions]) for t in second.topics] == [
        (b, ErrorCode.none, [2, 3]), (missing, ErrorCode.unknown_topic_or_partition, [])]
    assert second.next_cursor is None
    # a page that ends with a topic's last partition points at the next topic's first
    exact = describe(data_broker.bootstrap, [a, b], 3)
    assert [t.name for t in exact.topics] == [a]
    assert (exact.next_cursor.topic_name, exact.next_cursor.partition_index) == (b, 0)
    # the cursor's topic must be among those asked for
    bad = describe(data_broker.bootstrap, [a], 5, cursor=(b, 0))
    assert [(t.name, t.error_code) for t in bad.topics] == [(a, ErrorCode.invalid_request)]
    # no names: every topic from the cursor on
    everything = describe(data_broker.bootstrap, [], 2000, cursor=(b, 1))
    assert everything.topics[0].name == b
    assert [p.partition_index for p in everything.topics[0].partitions] == [1, 2, 3]


@pytest.mark.kafka_behaviour
def test_describe_topic_partitions_refuses_or_hides_topics_the_principal_may_not_describe(
        broker_factory: Any) -> None:
    b = broker_factory(env={"ODRADEK_AUTHORIZER_CLASS_NAME": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                            "ODRADEK_ALLOW_EVERYONE_IF_NO_ACL_FOUND": "true"})
    prefix = unique("dtp-acl")
    visible, hidden = f"{prefix}-open", f"{prefix}-secret"
    create_topic(b.bootstrap, visible)
    create_topic(b.bootstrap, hidden, partitions=2)
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    deny = AclBinding(AclResourceType.TOPIC, hidden, ResourcePatternType.LITERAL, "User:ANONYMOUS", "*",
                      AclOperation.DESCRIBE, AclPermissionType.DENY)
    admin.create_acls([deny])[deny].result(10)

    def named() -> Any:
        resp = describe(b.bootstrap, [hidden, visible], 100)
        done = [(t.name, t.error_code == ErrorCode.none) for t in resp.topics] == [(visible, True), (hidden, False)]
        return resp if done else None  # once both topics and the ACL have reached the broker

    deadline = time.monotonic() + 10
    while (resp := named()) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert resp is not None, "the ACL did not take effect"
    shown, refused = resp.topics
    assert shown.error_code == ErrorCode.none and len(shown.partitions) == 1
    assert shown.topic_authorized_operations & (1 << AclOperation.DESCRIBE.value)
    # refused without its id or partitions, as Metadata refuses it
    assert refused.error_code == ErrorCode.topic_authorization_failed
    assert refused.topic_id in (None, ZERO_UUID) and list(refused.partitions) == []
    assert refused.topic_authorized_operations == -(2**31)
    everything = describe(b.bootstrap, [], 2000)
    names = {t.name for t in everything.topics}
    assert visible in names and hidden not in names  # all topics: left out, not refused


@pytest.mark.kafka_behaviour
def test_keyless_record_to_a_compacted_topic_is_invalid_record_and_nothing_is_stored(
        data_broker: BrokerProcess) -> None:
    topic = unique("compacted")
    create_topic(data_broker.bootstrap, topic, config={"cleanup.policy": "compact"})
    errors: dict[int, int] = {}
    producer = Producer({"bootstrap.servers": data_broker.bootstrap, "linger.ms": 100, "retries": 0})
    for i in range(10):
        producer.produce(topic, value=f"v{i}".encode(), key=None if i in (3, 7) else f"k{i}".encode(),
                         partition=0, on_delivery=lambda err, msg, i=i: errors.__setitem__(
                             i, err.code() if err is not None else 0))
    assert producer.flush(15) == 0
    # librdkafka marks the records named in record_errors, and the rest of their batch
    assert errors == {i: KafkaError.INVALID_RECORD if i in (3, 7) else KafkaError._INVALID_DIFFERENT_RECORD
                      for i in range(10)}
    tid = topic_id(data_broker.bootstrap, topic)
    resp = produce_v13(data_broker.bootstrap, tid, batch((b"k", b"kept?"), (None, b"no key")))
    part = resp.responses[0].partition_responses[0]
    assert part.error_code == ErrorCode.invalid_record
    message = f"Compacted topic cannot accept message without key in topic partition {topic}-0"
    assert [(e.batch_index, e.batch_index_error_message) for e in part.record_errors] == [(1, message)]
    assert part.error_message.startswith("One or more records have been rejected due to 1 record errors")
    consumer = Consumer({"bootstrap.servers": data_broker.bootstrap, "group.id": unique("g")})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        consumer.close()
    assert (low, high) == (0, 0)  # nothing of the refused batches was stored
    resp = produce_v13(data_broker.bootstrap, tid, batch((b"k", b"keyed")))
    assert resp.responses[0].partition_responses[0].base_offset == 0


@pytest.mark.parametrize("codec", [0, 1, 2, 3, 4])
def test_keyless_scan_agrees_with_the_record_decoder_and_refuses_broken_batches(codec: int) -> None:
    records = [(None if i % 7 == 3 else f"k{i}".encode(), b"v" * (i % 50), [("h", b"x")] if i % 2 else [])
               for i in range(300)] + [(b"", b"empty key is a key", [])]
    data = encode_batch(records, compression=codec, timestamp_ms=1_700_000_000_000)
    header = parse_batches(data)[0]
    expected = [i for i, r in enumerate(decode_batch(data).records) if r.key is None]
    assert keyless_records(data, header) == expected == [i for i in range(300) if i % 7 == 3]
    # behind another batch, and cut or lying about its count: CORRUPT_MESSAGE, never another error
    two = encode_batch([(b"k", b"v", [])]) + data
    assert keyless_records(two, parse_batches(two)[1]) == expected
    for cut in (61, 62, 70, len(data) // 2):  # (parse_batches has checked that the batch is whole)
        with pytest.raises(InvalidRecordError) as excinfo:
            keyless_records(data[:cut], header)
        assert excinfo.value.error_code == ErrorCode.corrupt_message
    with pytest.raises(InvalidRecordError):
        keyless_records(data, dataclasses.replace(header, record_count=header.record_count + 1))


def test_leader_hints_in_produce_and_fetch_after_the_leader_moves(cluster_factory: Any) -> None:
    cluster: Cluster = cluster_factory(3)
    topic = unique("hints")
    # RF 2 of 3 brokers: once the leader is killed, the other live broker holds no replica (a follower
    # would serve a Fetch v11+ consumer, KIP-392, as Kafka's does, instead of NOT_LEADER_OR_FOLLOWER)
    cluster.create_topic(topic, partitions=1, rf=2)
    old = cluster.wait_leader(topic, isr_size=2)
    tid = topic_id(cluster.by_id(old.leader).bootstrap, topic)
    stale_epoch = call(cluster.by_id(old.leader).bootstrap, METADATA, 13, topics=[{"name": topic}],
                       allow_auto_topic_creation=False).topics[0].partitions[0].leader_epoch
    cluster.by_id(old.leader).kill()
    new = cluster.wait_leader(topic, not_in=(old.leader,))
    leader = cluster.by_id(new.leader)
    follower = next(b for b in cluster.brokers if b.alive and b.broker_id != new.leader)

    def expect_hint(current: Any, endpoints: Any) -> None:
        assert current.leader_id == new.leader and current.leader_epoch > stale_epoch
        assert [(e.node_id, e.host, e.port) for e in endpoints] == [(new.leader, "127.0.0.1", leader.port)]

    def produced() -> Any:
        resp = produce_v13(follower.bootstrap, tid, batch((b"k", b"v")))
        part = resp.responses[0].partition_responses[0]
        assert part.error_code == ErrorCode.not_leader_or_follower
        return resp if part.current_leader.leader_id == new.leader else None

    resp = cluster.wait_for("the follower to know the new leader", produced)
    expect_hint(resp.responses[0].partition_responses[0].current_leader, resp.node_endpoints)
    got = fetch(follower.bootstrap, 18, {"topic_id": tid})
    assert got.responses[0].partitions[0].error_code == ErrorCode.not_leader_or_follower
    expect_hint(got.responses[0].partitions[0].current_leader, got.node_endpoints)
    # the new leader fences the epoch the client knew, and says which one is current
    got = fetch(leader.bootstrap, 18, {"topic_id": tid}, leader_epoch=stale_epoch)
    assert got.responses[0].partitions[0].error_code == ErrorCode.fenced_leader_epoch
    expect_hint(got.responses[0].partitions[0].current_leader, got.node_endpoints)
    # before v16 (Fetch) and v10 (Produce) there are no hints to give
    got = fetch(follower.bootstrap, 15, {"topic_id": tid})
    assert got.responses[0].partitions[0].current_leader.leader_id == -1
    assert produce_v13(leader.bootstrap, tid, batch((b"k", b"v"))).responses[0].partition_responses[
        0].error_code == ErrorCode.none
