"""Offsets, coordinator lookup and version negotiation at the versions Kafka 4.x clients send,
and the pre-2.1 versions Sarama-based tools still send (issue 21).

confluent-kafka drives what it can (max-timestamp lookups, KIP-734); the rest is sent
as kio-built requests over a raw socket, the way test_bad_input.py does, and each
answer is checked for Kafka's semantics: earliest-local is the log start offset,
latest-tiered -1 without tiered storage, v10 commits and fetches name topics by id,
ApiVersions v4 reports the feature levels of server/features.py.
"""

from __future__ import annotations

import base64
import socket
import struct
import time
import uuid
from typing import Any, Self

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from conftest import BrokerProcess, module_broker, recv_exact, unique
from kio.schema.errors import ErrorCode
from test_clients import create_topic

from odradek.protocol.build import ZERO_UUID, build
from odradek.protocol.framing import decode_response, encode_request, request_type
from odradek.server.features import FEATURES, FINALIZED_FEATURES_EPOCH, finalized_level

offsets_broker = module_broker("offsets_broker", env={"ODRADEK_GROUP_INITIAL_REBALANCE_DELAY_MS": "0"})


class Wire:
    """One connection speaking kio-built requests, in order, as a client would."""

    def __init__(self, bootstrap: str) -> None:
        host, port = bootstrap.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.correlation_id = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, api_key: int, version: int, **fields: Any) -> None:
        self.correlation_id += 1
        body = build(request_type(api_key, version), fields)
        self.sock.sendall(encode_request(api_key, version, self.correlation_id, body))

    def call(self, api_key: int, version: int, **fields: Any) -> Any:
        self.send(api_key, version, **fields)
        size = struct.unpack(">i", recv_exact(self.sock, 4))[0]
        correlation_id, response = decode_response(recv_exact(self.sock, size), api_key, version)
        assert correlation_id == self.correlation_id
        return response

    def closed_by_broker(self) -> bool:
        self.sock.settimeout(5)
        return self.sock.recv(100) == b""


def call(bootstrap: str, api_key: int, version: int, **fields: Any) -> Any:
    with Wire(bootstrap) as wire:
        return wire.call(api_key, version, **fields)


def produce(bootstrap: str, topic: str, timestamps: list[int], partition: int = 0) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for ts in timestamps:
        p.produce(topic, value=b"v%d" % ts, partition=partition, timestamp=ts)
    assert p.flush(10) == 0


def list_offsets(bootstrap: str, topic: str, version: int, *timestamps: int, partition: int = 0) -> list[Any]:
    fields: dict[str, Any] = {"replica_id": -1, "isolation_level": 0, "timeout": 1000, "topics": [
        {"name": topic, "partitions": [{"partition_index": partition, "timestamp": ts, "max_num_offsets": 1,
                                        "current_leader_epoch": -1} for ts in timestamps]}]}
    (answer,) = call(bootstrap, 2, version, **fields).topics
    return list(answer.partitions)


def topic_id(bootstrap: str, topic: str) -> uuid.UUID:
    meta = call(bootstrap, 3, 12, topics=[{"name": topic, "topic_id": ZERO_UUID}], allow_auto_topic_creation=False,
                include_topic_authorized_operations=False)
    return meta.topics[0].topic_id  # type: ignore[no-any-return]


# -- ListOffsets ---------------------------------------------------------------------------


def test_max_timestamp_through_confluent_kafka_is_the_first_record_with_the_largest_timestamp(
        offsets_broker: BrokerProcess) -> None:
    topic = unique("maxts")
    create_topic(offsets_broker.bootstrap, topic, partitions=2)
    produce(offsets_broker.bootstrap, topic, [1_000, 9_000, 3_000, 9_000, 2_000])
    admin = AdminClient({"bootstrap.servers": offsets_broker.bootstrap})
    tp, empty = TopicPartition(topic, 0), TopicPartition(topic, 1)
    found = admin.list_offsets({tp: OffsetSpec.max_timestamp(), empty: OffsetSpec.max_timestamp()})
    answer = found[tp].result(10)
    assert (answer.offset, answer.timestamp) == (1, 9_000)  # offset 3 has it too: the first one counts
    nothing = found[empty].result(10)
    assert (nothing.offset, nothing.timestamp) == (-1, -1)
    # the other specs still answer as before, in the same request version
    specs = {TopicPartition(topic, 0, 0): OffsetSpec.earliest()}
    assert admin.list_offsets(specs)[TopicPartition(topic, 0)].result(10).offset == 0
    assert admin.list_offsets({tp: OffsetSpec.latest()})[tp].result(10).offset == 5
    at = admin.list_offsets({tp: OffsetSpec.for_timestamp(2_500)})[tp].result(10)
    assert (at.offset, at.timestamp) == (1, 9_000)


def test_earliest_local_is_the_log_start_offset_and_tiered_specs_are_minus_one(offsets_broker: BrokerProcess) -> None:
    topic = unique("local")
    create_topic(offsets_broker.bootstrap, topic)
    produce(offsets_broker.bootstrap, topic, [1_000, 2_000, 3_000, 4_000])
    admin = AdminClient({"bootstrap.servers": offsets_broker.bootstrap})
    admin.delete_records([TopicPartition(topic, 0, 2)])[TopicPartition(topic, 0, 2)].result(10)
    # one partition per request: a partition asked for twice is INVALID_REQUEST
    earliest, local, tiered, pending, latest, maxts = (list_offsets(offsets_broker.bootstrap, topic, 11, spec)[0]
                                                       for spec in (-2, -4, -5, -6, -1, -3))
    for p in (earliest, local, tiered, pending, latest, maxts):
        assert p.error_code == ErrorCode.none
    assert (local.offset, local.timestamp) == (2, -1) == (earliest.offset, earliest.timestamp)
    assert local.leader_epoch == earliest.leader_epoch
    # KIP-1005 / KIP-1023 without tiered storage: UnifiedLog answers offset -1 and epoch -1
    assert (tiered.offset, tiered.timestamp, tiered.leader_epoch) == (-1, -1, -1)
    assert (pending.offset, pending.timestamp, pending.leader_epoch) == (-1, -1, -1)
    assert latest.offset == 4
    assert (maxts.offset, maxts.timestamp) == (3, 4_000)


@pytest.mark.parametrize(("spec", "first_version"), [(-3, 7), (-4, 8), (-5, 9), (-6, 11), (-7, None)])
def test_a_spec_below_its_first_version_is_unsupported_version(offsets_broker: BrokerProcess, spec: int,
                                                               first_version: int | None) -> None:
    topic = unique("spec")
    create_topic(offsets_broker.bootstrap, topic)
    below = (first_version or 12) - 1
    (refused,) = list_offsets(offsets_broker.bootstrap, topic, below, spec)
    assert refused.error_code == ErrorCode.unsupported_version
    if first_version is not None:
        (served,) = list_offsets(offsets_broker.bootstrap, topic, first_version, spec)
        assert served.error_code == ErrorCode.none


def test_a_partition_asked_twice_is_invalid_request_both_times(offsets_broker: BrokerProcess) -> None:
    topic = unique("twice")
    create_topic(offsets_broker.bootstrap, topic)
    answers = list_offsets(offsets_broker.bootstrap, topic, 9, -1, -2)
    assert [p.error_code for p in answers] == [ErrorCode.invalid_request] * 2


def test_list_offsets_v0_lists_offsets_newest_first(offsets_broker: BrokerProcess) -> None:
    topic = unique("v0")
    create_topic(offsets_broker.bootstrap, topic)
    produce(offsets_broker.bootstrap, topic, [1_000, 2_000, 3_000])
    fields = {"replica_id": -1, "topics": [{"name": topic, "partitions": [
        {"partition_index": 0, "timestamp": -1, "max_num_offsets": 1},
    ]}]}
    ((latest,),) = [t.partitions for t in call(offsets_broker.bootstrap, 2, 0, **fields).topics]
    assert (latest.error_code, list(latest.old_style_offsets)) == (ErrorCode.none, [3])
    fields["topics"][0]["partitions"] = [{"partition_index": 0, "timestamp": -1, "max_num_offsets": 10}]
    ((every,),) = [t.partitions for t in call(offsets_broker.bootstrap, 2, 0, **fields).topics]
    assert list(every.old_style_offsets) == [3, 0]  # the log end offset, then each segment's base offset
    fields["topics"][0]["partitions"] = [{"partition_index": 0, "timestamp": -2, "max_num_offsets": 10},
                                         {"partition_index": 7, "timestamp": -1, "max_num_offsets": 1}]
    earliest, missing = call(offsets_broker.bootstrap, 2, 0, **fields).topics[0].partitions
    assert list(earliest.old_style_offsets) == [0]
    assert missing.error_code == ErrorCode.unknown_topic_or_partition


# -- OffsetCommit / OffsetFetch --------------------------------------------------------------


def test_offset_commit_and_fetch_v10_name_topics_by_id(offsets_broker: BrokerProcess) -> None:
    bootstrap = offsets_broker.bootstrap
    topic, group = unique("ids"), unique("g")
    create_topic(bootstrap, topic, partitions=2)
    tid, wrong = topic_id(bootstrap, topic), uuid.uuid4()
    committed = call(bootstrap, 8, 10, group_id=group, generation_id_or_member_epoch=-1, member_id="",
                     group_instance_id=None, topics=[
                         {"topic_id": tid, "partitions": [
                             {"partition_index": 0, "committed_offset": 7, "committed_leader_epoch": -1,
                              "committed_metadata": "seven"},
                             {"partition_index": 1, "committed_offset": 3, "committed_leader_epoch": -1,
                              "committed_metadata": None}]},
                         {"topic_id": wrong, "partitions": [
                             {"partition_index": 0, "committed_offset": 1, "committed_leader_epoch": -1,
                              "committed_metadata": None}]}])
    by_id = {t.topic_id: [p.error_code for p in t.partitions] for t in committed.topics}
    assert by_id == {tid: [ErrorCode.none, ErrorCode.none], wrong: [ErrorCode.unknown_topic_id]}

    fetched = call(bootstrap, 9, 10, require_stable=False, groups=[
        {"group_id": group, "member_id": None, "member_epoch": -1,
         "topics": [{"topic_id": tid, "partition_indexes": [0, 1]}, {"topic_id": wrong, "partition_indexes": [0]}]}])
    (g,) = fetched.groups
    assert g.error_code == ErrorCode.none
    offsets = {(t.topic_id, p.partition_index): (p.committed_offset, p.metadata, p.error_code)
               for t in g.topics for p in t.partitions}
    assert offsets == {(tid, 0): (7, "seven", ErrorCode.none), (tid, 1): (3, "", ErrorCode.none),
                       (wrong, 0): (-1, "", ErrorCode.unknown_topic_id)}
    # all topics (null): the group's committed topics, by id
    (every,) = call(bootstrap, 9, 10, require_stable=False, groups=[
        {"group_id": group, "member_id": None, "member_epoch": -1, "topics": None}]).groups
    assert {(t.topic_id, p.partition_index, p.committed_offset) for t in every.topics for p in t.partitions} == {
        (tid, 0, 7), (tid, 1, 3)}
    # and a name-based client sees the same offsets
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        seen = consumer.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
        assert [tp.offset for tp in seen] == [7, 3]
    finally:
        consumer.close()


def test_offset_commit_v0_v1_and_fetch_v0_serve_old_clients(offsets_broker: BrokerProcess) -> None:
    bootstrap = offsets_broker.bootstrap
    topic, group = unique("old"), unique("g")
    create_topic(bootstrap, topic, partitions=2)
    v0 = call(bootstrap, 8, 0, group_id=group, topics=[{"name": topic, "partitions": [
        {"partition_index": 0, "committed_offset": 11, "committed_metadata": "zero"}]}])
    assert [p.error_code for t in v0.topics for p in t.partitions] == [ErrorCode.none]
    v1 = call(bootstrap, 8, 1, group_id=group, generation_id_or_member_epoch=-1, member_id="", topics=[
        {"name": topic, "partitions": [{"partition_index": 1, "committed_offset": 12, "commit_timestamp": -1,
                                        "committed_metadata": None}]}])
    assert [p.error_code for t in v1.topics for p in t.partitions] == [ErrorCode.none]
    fetched = call(bootstrap, 9, 0, group_id=group, topics=[{"name": topic, "partition_indexes": [0, 1]}])
    assert [(p.partition_index, p.committed_offset, p.metadata, p.error_code)
            for t in fetched.topics for p in t.partitions] == [
        (0, 11, "zero", ErrorCode.none), (1, 12, "", ErrorCode.none)]
    # a v1 commit naming a member the group does not have: UNKNOWN_MEMBER_ID, as Kafka answers
    stale = call(bootstrap, 8, 1, group_id=group, generation_id_or_member_epoch=5, member_id="nobody", topics=[
        {"name": topic, "partitions": [{"partition_index": 0, "committed_offset": 1, "commit_timestamp": -1,
                                        "committed_metadata": None}]}])
    assert [p.error_code for t in stale.topics for p in t.partitions] == [ErrorCode.unknown_member_id]


# -- ApiVersions, FindCoordinator, DescribeCluster ----------------------------------------------


def test_api_versions_v4_reports_supported_and_finalized_features(offsets_broker: BrokerProcess) -> None:
    response = call(offsets_broker.bootstrap, 18, 4, client_software_name="odradek-tests",
                    client_software_version="1")
    assert response.error_code == ErrorCode.none
    ranges = {k.api_key: (k.min_version, k.max_version) for k in response.api_keys}
    assert ranges[18] == (0, 4) and ranges[2] == (0, 11) and ranges[8] == (0, 10) and ranges[9] == (0, 10)
    assert ranges[10] == (0, 6) and ranges[60] == (0, 2)
    supported = {f.name: (f.min_version, f.max_version) for f in response.supported_features}
    assert supported == {f.name: (f.min_version, f.max_version) for f in FEATURES}
    finalized = {f.name: (f.min_version_level, f.max_version_level) for f in response.finalized_features}
    assert finalized == {f.name: (finalized_level(f.name),) * 2 for f in FEATURES if finalized_level(f.name) > 0}
    assert response.finalized_features_epoch == (FINALIZED_FEATURES_EPOCH if finalized else -1)
    # v3: a supported range starting at 0 is left out, as older clients refuse it (KAFKA-17492)
    v3 = call(offsets_broker.bootstrap, 18, 3, client_software_name="odradek-tests", client_software_version="1")
    assert {f.name for f in v3.supported_features} == {f.name for f in FEATURES if f.min_version > 0}
    assert {f.name for f in v3.finalized_features} == set(finalized)
    for version in (0, 1, 2):
        old = call(offsets_broker.bootstrap, 18, version, client_software_name="x", client_software_version="1")
        assert old.error_code == ErrorCode.none and len(old.api_keys) == len(response.api_keys)


def test_find_coordinator_v6_finds_the_share_coordinator_and_v5_refuses_its_key_type(
        offsets_broker: BrokerProcess) -> None:
    bootstrap, group = offsets_broker.bootstrap, unique("g")
    (found,) = call(bootstrap, 10, 6, key_type=0, coordinator_keys=[group]).coordinators
    assert (found.error_code, found.node_id, found.port) == (ErrorCode.none, 0, offsets_broker.port)
    topic_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()  # Kafka's Uuid.toString
    share_key = f"{group}:{topic_id}:0"
    (share,) = call(bootstrap, 10, 5, key_type=2, coordinator_keys=[share_key]).coordinators
    assert (share.error_code, share.node_id) == (ErrorCode.invalid_request, -1)  # the share key type is v6+
    deadline = time.monotonic() + 30
    while True:  # KIP-932: the leader of the key's __share_group_state partition, once that topic exists
        (share,) = call(bootstrap, 10, 6, key_type=2, coordinator_keys=[share_key]).coordinators
        if share.error_code != ErrorCode.coordinator_not_available or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (share.error_code, share.node_id, share.port) == (ErrorCode.none, 0, offsets_broker.port)
    (bad,) = call(bootstrap, 10, 6, key_type=2, coordinator_keys=[group]).coordinators
    assert bad.error_code == ErrorCode.invalid_request  # not "group:topicId:partition"
    (unknown,) = call(bootstrap, 10, 6, key_type=3, coordinator_keys=[group]).coordinators
    assert unknown.error_code == ErrorCode.invalid_request
    v0 = call(bootstrap, 10, 0, key=group)
    assert (v0.error_code, v0.node_id, v0.host, v0.port) == (ErrorCode.none, 0, "127.0.0.1", offsets_broker.port)


def test_describe_cluster_v2_lists_unfenced_brokers_and_refuses_a_controller_request(
        offsets_broker: BrokerProcess) -> None:
    for include_fenced in (False, True):
        response = call(offsets_broker.bootstrap, 60, 2, include_cluster_authorized_operations=False,
                        endpoint_type=1, include_fenced_brokers=include_fenced)
        assert response.error_code == ErrorCode.none and response.endpoint_type == 1
        assert [(b.broker_id, b.port, b.is_fenced) for b in response.brokers] == [(0, offsets_broker.port, False)]
    controllers = call(offsets_broker.bootstrap, 60, 2, include_cluster_authorized_operations=False,
                       endpoint_type=2, include_fenced_brokers=False)
    assert controllers.error_code == ErrorCode.mismatched_endpoint_type and not controllers.brokers
    odd = call(offsets_broker.bootstrap, 60, 1, include_cluster_authorized_operations=False, endpoint_type=9)
    assert odd.error_code == ErrorCode.unsupported_endpoint_type


# -- the old clients -----------------------------------------------------------------------------


def test_metadata_v0_to_v3_and_the_group_apis_v0_serve_an_old_client(offsets_broker: BrokerProcess) -> None:
    bootstrap = offsets_broker.bootstrap
    topic, group = unique("oldmeta"), unique("g")
    create_topic(bootstrap, topic, partitions=2)
    for version in (0, 1, 2, 3):
        meta = call(bootstrap, 3, version, topics=[{"name": topic}], allow_auto_topic_creation=False)
        (t,) = meta.topics
        assert (t.error_code, t.name, sorted(p.partition_index for p in t.partitions)) == (ErrorCode.none, topic, [0, 1])
        assert [(b.node_id, b.port) for b in meta.brokers] == [(0, offsets_broker.port)]
    with Wire(bootstrap) as wire:
        joined = wire.call(11, 0, group_id=group, session_timeout=10_000, member_id="", protocol_type="consumer",
                           protocols=[{"name": "range", "metadata": b"\0\0\0\0\0\x01\0\x01t\0\0\0\0"}])
        assert joined.error_code == ErrorCode.none and joined.leader == joined.member_id
        member, generation = joined.member_id, joined.generation_id
        synced = wire.call(14, 0, group_id=group, generation_id=generation, member_id=member,
                           assignments=[{"member_id": member, "assignment": b"\0\0\0\0\0\0\0\0\0\0"}])
        assert (synced.error_code, synced.assignment) == (ErrorCode.none, b"\0\0\0\0\0\0\0\0\0\0")
        assert wire.call(12, 0, group_id=group, generation_id=generation, member_id=member).error_code == \
            ErrorCode.none
        (described,) = wire.call(15, 0, groups=[group]).groups
        assert (described.group_state, [m.member_id for m in described.members]) == ("Stable", [member])
        assert group in {g.group_id for g in wire.call(16, 0).groups}
        assert wire.call(13, 0, group_id=group, member_id=member).error_code == ErrorCode.none


def test_produce_below_v3_is_unsupported_version_and_the_connection_stays(offsets_broker: BrokerProcess) -> None:
    bootstrap = offsets_broker.bootstrap
    topic = unique("oldproduce")
    create_topic(bootstrap, topic)
    message_set = struct.pack(">qi", 0, 14) + struct.pack(">ibbii", 0, 0, 0, -1, 0)  # one v0 message, no key/value
    for version in (0, 1, 2):
        with Wire(bootstrap) as wire:
            wire.correlation_id += 1
            body = (struct.pack(">hi", 1, 1000) + struct.pack(">i", 1) + struct.pack(">h", len(topic)) + topic.encode()
                    + struct.pack(">i", 1) + struct.pack(">ii", 0, len(message_set)) + message_set)
            header = struct.pack(">hhi", 0, version, wire.correlation_id) + struct.pack(">h", 1) + b"c"
            wire.sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
            size = struct.unpack(">i", recv_exact(wire.sock, 4))[0]
            answer = recv_exact(wire.sock, size)
            assert struct.unpack_from(">i", answer) == (wire.correlation_id,)
            # responses [name, [index, error_code, base_offset ...]]
            name_len = struct.unpack_from(">h", answer, 8)[0]
            index, error, base = struct.unpack_from(">ihq", answer, 10 + name_len + 4)
            assert (index, ErrorCode(error), base) == (0, ErrorCode.unsupported_version, -1)
            # the same connection keeps serving
            assert wire.call(18, 0).error_code == ErrorCode.none
    assert list_offsets(bootstrap, topic, 1, -1)[0].offset == 0  # nothing was written


def test_fetch_below_v4_closes_the_connection_as_kafka_does(offsets_broker: BrokerProcess) -> None:
    with Wire(offsets_broker.bootstrap) as wire:
        payload = struct.pack(">hhi", 1, 3, 1) + struct.pack(">h", 1) + b"c" + struct.pack(">iiiii", -1, 100, 1, 1024, 0)
        wire.sock.sendall(struct.pack(">i", len(payload)) + payload)
        assert wire.closed_by_broker()
    assert call(offsets_broker.bootstrap, 18, 3, client_software_name="x", client_software_version="1").error_code \
        == ErrorCode.none


def test_a_stale_or_future_current_leader_epoch_is_fenced(offsets_broker: BrokerProcess) -> None:
    topic = unique("fenced")
    create_topic(offsets_broker.bootstrap, topic)
    fields: dict[str, Any] = {"replica_id": -1, "isolation_level": 0, "topics": [
        {"name": topic, "partitions": [{"partition_index": 0, "timestamp": -1, "current_leader_epoch": 5}]}]}
    (future,) = call(offsets_broker.bootstrap, 2, 7, **fields).topics[0].partitions
    assert future.error_code == ErrorCode.unknown_leader_epoch
    fields["topics"][0]["partitions"][0]["current_leader_epoch"] = 0  # the epoch Metadata reports
    (current,) = call(offsets_broker.bootstrap, 2, 7, **fields).topics[0].partitions
    assert (current.error_code, current.offset, current.leader_epoch) == (ErrorCode.none, 0, 0)


def test_api_versions_v3_with_an_invalid_software_name_is_invalid_request(offsets_broker: BrokerProcess) -> None:
    # ApiVersionsRequest.isValid (KIP-511): letters, digits, '-' and '.', starting and ending alphanumeric
    bad = call(offsets_broker.bootstrap, 18, 3, client_software_name="no spaces!", client_software_version="1")
    assert (bad.error_code, bad.api_keys) == (ErrorCode.invalid_request, ())
    ok = call(offsets_broker.bootstrap, 18, 4, client_software_name="apache-kafka-java", client_software_version="4.3.1")
    assert ok.error_code == ErrorCode.none and ok.api_keys


def test_produce_v0_with_acks_0_closes_the_connection(offsets_broker: BrokerProcess) -> None:
    # no answer may be sent to acks=0, so the refusal is the hang-up (Kafka's way for acks=0 errors)
    with Wire(offsets_broker.bootstrap) as wire:
        body = struct.pack(">hi", 0, 1000) + struct.pack(">i", 1) + struct.pack(">h", 1) + b"t" + struct.pack(">i", 0)
        payload = struct.pack(">hhi", 0, 0, 1) + struct.pack(">h", 1) + b"c" + body
        wire.sock.sendall(struct.pack(">i", len(payload)) + payload)
        assert wire.closed_by_broker()
    assert "Produce v0 with acks=0" in offsets_broker.logs()
