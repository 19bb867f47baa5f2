"""The group APIs on the wire: the error codes and version forms clients rely on.

Requests are built with kio and sent over TCP to a real broker process, so
each rule (KIP-394 member ids, generations, static fencing, batched
FindCoordinator and OffsetFetch, LeaveGroup batches, DeleteGroups, OffsetDelete,
ListGroups filters) is checked exactly as a client would meet it.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Any

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from conftest import BrokerProcess, module_broker, recv_exact, unique
from kio.schema.errors import ErrorCode as E

from odradek.protocol.build import build
from odradek.protocol.framing import decode_response, encode_request, request_type

ENV = {"ODRADEK_GROUP_INITIAL_REBALANCE_DELAY_MS": "0", "ODRADEK_GROUP_MIN_SESSION_TIMEOUT_MS": "500",
       "ODRADEK_OFFSETS_TOPIC_NUM_PARTITIONS": "3"}


pb = module_broker("pb", ENV)


def call(b: BrokerProcess, api_key: int, version: int, **body: Any) -> Any:
    """One request on its own connection (a parked JoinGroup does not block the others)."""
    host, port = b.bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(encode_request(api_key, version, 7, build(request_type(api_key, version), body)))
        size = struct.unpack(">i", recv_exact(s, 4))[0]
        return decode_response(recv_exact(s, size), api_key, version)[1]


def subscription(*topics: str) -> bytes:
    """ConsumerProtocolSubscription v0."""
    out = struct.pack(">hi", 0, len(topics))
    for t in topics:
        out += struct.pack(">h", len(t)) + t.encode()
    return out + struct.pack(">i", -1)


def join(b: BrokerProcess, group: str, member_id: str = "", instance: str | None = None, version: int = 5,
         topics: tuple[str, ...] = ("t",), session_ms: int = 10000, rebalance_ms: int = 5000) -> Any:
    return call(b, 11, version, group_id=group, session_timeout=session_ms, rebalance_timeout=rebalance_ms,
                member_id=member_id, group_instance_id=instance, protocol_type="consumer",
                protocols=[{"name": "range", "metadata": subscription(*topics)}])


def join_member(b: BrokerProcess, group: str, **kw: Any) -> Any:
    first = join(b, group, **kw)
    assert first.error_code == E.member_id_required
    return join(b, group, member_id=first.member_id, **kw)


def sync(b: BrokerProcess, group: str, generation: int, member_id: str, assignments: dict[str, bytes] | None = None,
         instance: str | None = None) -> Any:
    return call(b, 14, 3, group_id=group, generation_id=generation, member_id=member_id, group_instance_id=instance,
                assignments=[{"member_id": m, "assignment": a} for m, a in (assignments or {}).items()])


def heartbeat(b: BrokerProcess, group: str, generation: int, member_id: str, instance: str | None = None) -> E:
    return call(b, 12, 3, group_id=group, generation_id=generation, member_id=member_id,
                group_instance_id=instance).error_code


@pytest.mark.kafka_behaviour
def test_join_requires_a_member_id_then_runs_a_generation(pb: BrokerProcess) -> None:
    group = unique("kip394")
    first = join(pb, group)
    assert first.error_code == E.member_id_required and first.member_id
    joined = join(pb, group, member_id=first.member_id)
    assert joined.error_code == E.none and joined.generation_id == 1
    assert joined.leader == joined.member_id == first.member_id
    assert [m.member_id for m in joined.members] == [first.member_id]
    assert joined.protocol_name == "range"
    synced = sync(pb, group, 1, joined.member_id, {joined.member_id: b"assignment"})
    assert (synced.error_code, synced.assignment) == (E.none, b"assignment")
    assert heartbeat(pb, group, 1, joined.member_id) == E.none
    assert heartbeat(pb, group, 0, joined.member_id) == E.illegal_generation
    assert heartbeat(pb, group, 1, "nobody") == E.unknown_member_id
    assert join(pb, group, version=3).error_code == E.none  # before v4 no member id round trip


@pytest.mark.kafka_behaviour
def test_new_member_puts_the_group_into_rebalance(pb: BrokerProcess) -> None:
    group = unique("rebalance")
    # a long rebalance timeout: a loaded machine must not let it drop `a` before it rejoins
    a = join_member(pb, group, rebalance_ms=60_000)
    assert sync(pb, group, 1, a.member_id, {a.member_id: b"A"}).error_code == E.none
    b_first = join(pb, group, rebalance_ms=60_000)
    results: dict[str, Any] = {}
    t = threading.Thread(target=lambda: results.update(b=join(pb, group, member_id=b_first.member_id,
                                                              rebalance_ms=60_000)))
    t.start()
    deadline = time.monotonic() + 30
    while heartbeat(pb, group, 1, a.member_id) != E.rebalance_in_progress:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert sync(pb, group, 1, a.member_id).error_code == E.rebalance_in_progress
    a2 = join(pb, group, member_id=a.member_id, rebalance_ms=60_000)
    t.join(60)
    assert a2.generation_id == results["b"].generation_id == 2
    assert a2.leader == a.member_id and len(a2.members) == 2 and results["b"].members == ()
    commit = call(pb, 8, 8, group_id=group, generation_id_or_member_epoch=1, member_id=a.member_id,
                  topics=[{"name": "t", "partitions": [{"partition_index": 0, "committed_offset": 1}]}])
    assert commit.topics[0].partitions[0].error_code in (E.illegal_generation, E.rebalance_in_progress,
                                                         E.unknown_topic_or_partition)


@pytest.mark.kafka_behaviour
def test_static_member_id_is_fenced(pb: BrokerProcess) -> None:
    group = unique("fence")
    joined = join(pb, group, instance="s1")  # static members skip the member id round trip
    assert joined.error_code == E.none
    assert sync(pb, group, 1, joined.member_id, {joined.member_id: b"x"}, instance="s1").error_code == E.none
    again = join(pb, group, instance="s1")  # a restart: same instance, new member id, no rebalance
    assert again.error_code == E.none and again.generation_id == 1 and again.member_id != joined.member_id
    assert heartbeat(pb, group, 1, joined.member_id, instance="s1") == E.fenced_instance_id
    back = sync(pb, group, 1, again.member_id, instance="s1")
    assert (back.error_code, back.assignment) == (E.none, b"x")


@pytest.mark.kafka_behaviour
def test_find_coordinator_single_and_batched(pb: BrokerProcess) -> None:
    port = int(pb.bootstrap.split(":")[1])
    v0 = call(pb, 10, 0, key="g")
    assert (v0.error_code, v0.port) == (E.none, port)
    v4 = call(pb, 10, 4, key_type=0, coordinator_keys=["a", "b"])
    assert [(c.key, c.error_code, c.port) for c in v4.coordinators] == [("a", E.none, port), ("b", E.none, port)]
    txn = call(pb, 10, 4, key_type=1, coordinator_keys=["tx"])  # the transaction coordinator
    assert [(c.key, c.error_code, c.port) for c in txn.coordinators] == [("tx", E.none, port)]


@pytest.mark.kafka_behaviour
def test_offset_fetch_several_groups_in_one_request(pb: BrokerProcess) -> None:
    topic = unique("of")
    admin = AdminClient({"bootstrap.servers": pb.bootstrap})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(60)
    g1, g2 = unique("of1"), unique("of2")
    for g, off in ((g1, 5), (g2, 9)):
        req = ConsumerGroupTopicPartitions(g, [TopicPartition(topic, 0, off)])
        admin.alter_consumer_group_offsets([req])[g].result(60)
    resp = call(pb, 9, 8, require_stable=False, groups=[
        {"group_id": g1, "topics": [{"name": topic, "partition_indexes": [0, 1]}]},
        {"group_id": g2, "topics": None},
    ])
    by_group = {g.group_id: g for g in resp.groups}
    assert [(p.partition_index, p.committed_offset) for p in by_group[g1].topics[0].partitions] == [(0, 5), (1, -1)]
    assert [(t.name, [p.committed_offset for p in t.partitions]) for t in by_group[g2].topics] == [(topic, [9])]
    single = call(pb, 9, 5, group_id=g1, topics=[{"name": topic, "partition_indexes": [0]}])
    assert single.topics[0].partitions[0].committed_offset == 5


@pytest.mark.kafka_behaviour
def test_list_filter_leave_batch_delete_and_offset_delete(pb: BrokerProcess) -> None:
    topic = unique("ld")
    admin = AdminClient({"bootstrap.servers": pb.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(60)
    group = unique("ld")
    a = join(pb, group, instance="i-a", topics=(topic,))
    assert sync(pb, group, 1, a.member_id, {a.member_id: b""}, instance="i-a").error_code == E.none
    commit = call(pb, 8, 8, group_id=group, generation_id_or_member_epoch=1, member_id=a.member_id,
                  group_instance_id="i-a",
                  topics=[{"name": topic, "partitions": [{"partition_index": 0, "committed_offset": 3}]}])
    assert commit.topics[0].partitions[0].error_code == E.none
    stable = call(pb, 16, 4, states_filter=["Stable"])
    assert group in [g.group_id for g in stable.groups]
    assert group not in [g.group_id for g in call(pb, 16, 4, states_filter=["Empty"]).groups]
    subscribed = call(pb, 47, 0, group_id=group, topics=[{"name": topic, "partitions": [{"partition_index": 0}]}])
    assert subscribed.topics[0].partitions[0].error_code == E.group_subscribed_to_topic
    assert call(pb, 42, 2, groups_names=[group]).results[0].error_code == E.non_empty_group
    leave = call(pb, 13, 4, group_id=group, members=[
        {"member_id": "", "group_instance_id": "i-a"}, {"member_id": "ghost", "group_instance_id": None},
    ])
    assert [m.error_code for m in leave.members] == [E.none, E.unknown_member_id]
    described = call(pb, 15, 5, groups=[group], include_authorized_operations=False).groups[0]
    assert (described.group_state, described.members) == ("Empty", ())
    deleted = call(pb, 47, 0, group_id=group, topics=[{"name": topic, "partitions": [{"partition_index": 0}]}])
    assert (deleted.error_code, deleted.topics[0].partitions[0].error_code) == (E.none, E.none)
    fetched = call(pb, 9, 5, group_id=group, topics=[{"name": topic, "partition_indexes": [0]}])
    assert fetched.topics[0].partitions[0].committed_offset == -1
    assert call(pb, 42, 2, groups_names=[group]).results[0].error_code == E.none
    assert call(pb, 42, 2, groups_names=[group]).results[0].error_code == E.group_id_not_found
    assert call(pb, 15, 5, groups=[group], include_authorized_operations=False).groups[0].group_state == "Dead"


def test_offsets_of_empty_groups_expire_after_retention() -> None:
    from odradek.testing import Broker

    with Broker(offsets_retention_minutes=1) as b:
        b.create_topic("expiring", partitions=1)
        admin = AdminClient({"bootstrap.servers": b.bootstrap_servers})
        req = ConsumerGroupTopicPartitions("old-group", [TopicPartition("expiring", 0, 7)])
        admin.alter_consumer_group_offsets([req])["old-group"].result(60)
        coord = b.server.broker.coordinator
        assert b._call(coord.expire_offsets, time.time_ns() // 1_000_000) == 0
        assert b._call(coord.expire_offsets, time.time_ns() // 1_000_000 + 61_000) == 1
        res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions("old-group")])["old-group"].result(60)
        assert [tp.offset for tp in res.topic_partitions or []] in ([], [-1001])


@pytest.mark.kafka_behaviour
def test_a_sole_member_rejoining_with_new_metadata_gets_its_generation_at_once(pb: BrokerProcess) -> None:
    # It is the only member, so the join phase is complete as soon as it rejoins (Kafka's
    # DelayedJoin tries at once); it used to wait out the whole rebalance timeout.
    group = unique("solo")
    # a rebalance timeout of 120 s, so that answering at once and waiting it out differ by far more
    # than a loaded machine's delays
    joined = join_member(pb, group, topics=("a",), rebalance_ms=120_000)
    assert sync(pb, group, joined.generation_id, joined.member_id, {joined.member_id: b""}).error_code == E.none
    started = time.monotonic()
    again = join(pb, group, member_id=joined.member_id, topics=("a", "b"), rebalance_ms=120_000)
    assert again.error_code == E.none and again.generation_id == joined.generation_id + 1
    assert time.monotonic() - started < 60  # not the 120 s rebalance timeout
