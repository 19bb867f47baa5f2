"""KIP-848 consumer groups (group.protocol=consumer) against a real odradek process.

The protocol itself with raw ConsumerGroupHeartbeat requests (epochs, fencing, a
partition revoked before it is handed on, static members, regex subscriptions,
new partitions, sessions, commits with the member epoch), then real clients:
confluent-kafka (librdkafka) and Kafka's Java client, six consumers joining and
leaving a 12-partition topic while a producer writes, with each consumer's
assignment timeline checked for two owners of one partition and every record
processed exactly once; an empty classic group taken over by the consumer
protocol and back; a classic and a consumer-protocol member in one group at once
(online upgrade, then downgrade when the consumer-protocol member leaves); a
SIGKILLed broker, and in cluster mode a SIGKILLed coordinator, that resume the
group with the same member epochs and assignments.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic
from conftest import JAVA_DIR, ROOT, BrokerProcess, java_command, module_broker, recv_exact, unique
from kio.schema.errors import ErrorCode as E

from odradek.coordinator.records import assigned_partitions
from odradek.protocol.build import build
from odradek.protocol.framing import decode_response, encode_request, request_type

ENV = {
    "ODRADEK_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    "ODRADEK_OFFSETS_TOPIC_NUM_PARTITIONS": "3",
    "ODRADEK_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS": "500",
    # 30 s: a member the raw-protocol tests heartbeat only between their steps, or a real consumer
    # descheduled on a loaded machine, must not expire mid-test (the session's own test has 8 s)
    "ODRADEK_GROUP_CONSUMER_SESSION_TIMEOUT_MS": "30000",
}

pytest_plugins = ["cluster_fixtures"]  # the zookeeper and cluster_factory fixtures

cb = module_broker("cb", ENV)

Owned = dict[uuid.UUID, set[int]]


# -- raw protocol helpers -----------------------------------------------------------------


def call(b: Any, api_key: int, version: int, **body: Any) -> Any:
    host, port = b.bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(encode_request(api_key, version, 7, build(request_type(api_key, version), body)))
        size = struct.unpack(">i", recv_exact(s, 4))[0]
        return decode_response(recv_exact(s, size), api_key, version)[1]


def heartbeat(b: Any, group: str, member: str, epoch: int, *, topics: list[str] | None = None,
              regex: str | None = None, owned: Owned | None = None, instance: str | None = None,
              assignor: str | None = None, rebalance_ms: int = 30000) -> Any:
    return call(b, 68, 1, group_id=group, member_id=member, member_epoch=epoch, instance_id=instance,
                rack_id=None, rebalance_timeout=rebalance_ms, subscribed_topic_names=topics,
                subscribed_topic_regex=regex, server_assignor=assignor,
                topic_partitions=None if owned is None else [
                    {"topic_id": t, "partitions": sorted(ps)} for t, ps in owned.items()])


def assigned(resp: Any) -> Owned | None:
    if resp.assignment is None:
        return None
    return {t.topic_id: set(t.partitions) for t in resp.assignment.topic_partitions if t.partitions}


def describe(b: Any, group: str) -> Any:
    return call(b, 69, 1, group_ids=[group], include_authorized_operations=False).groups[0]


def members_of(described: Any) -> dict[str, tuple[int, set[int]]]:
    """Each member's epoch and assigned partitions, from a ConsumerGroupDescribe answer."""
    return {m.member_id: (m.member_epoch, {p for t in m.assignment.topic_partitions for p in t.partitions})
            for m in described.members}


RETRIABLE = {E.coordinator_not_available, E.coordinator_load_in_progress, E.not_enough_replicas,
             E.request_timed_out}


def heartbeat_until_answered(b: Any, group: str, member: str, epoch: int, **kw: Any) -> Any:
    """A heartbeat retried, as a client retries, while the coordinator answers a retriable error
    (a coordinator still loading, or whose __consumer_offsets partition is below min ISR). `b` is
    a broker, or a callable naming the coordinator now (FindCoordinator): then NOT_COORDINATOR is
    retried there too, as a client looks its coordinator up again."""
    deadline = time.monotonic() + 90
    while True:
        at = b() if callable(b) else b
        resp = None if at is None else heartbeat(at, group, member, epoch, **kw)
        if resp is not None and resp.error_code not in RETRIABLE and not (
                callable(b) and resp.error_code == E.not_coordinator):
            break
        assert time.monotonic() < deadline, f"{member}: {resp and resp.error_code!r} for 90 s"
        time.sleep(0.2)
    assert resp.error_code == E.none, (member, resp.error_code, resp.error_message)
    return resp


def stable_group_of_two(b: Any, group: str, topic: str) -> Any:
    """Members x and y join `group` on `topic` through `b` (a broker, or a callable naming the
    coordinator now) and reach their assignment: the group's description, Stable, with both
    members in it."""
    x = heartbeat_until_answered(b, group, "x", 0, topics=[topic])
    y = heartbeat_until_answered(b, group, "y", 0, topics=[topic])
    x = heartbeat_until_answered(b, group, "x", x.member_epoch, owned=assigned(x))
    heartbeat_until_answered(b, group, "x", x.member_epoch, owned=assigned(x))
    heartbeat_until_answered(b, group, "y", y.member_epoch, owned={})
    deadline = time.monotonic() + 60
    while (described := describe(b() if callable(b) else b, group)).error_code != E.none:
        assert callable(b) and time.monotonic() < deadline, described.error_code
        time.sleep(0.2)
    assert described.group_state == "Stable"
    assert set(members_of(described)) == {"x", "y"}
    return described


def topic_ids(b: Any) -> dict[str, uuid.UUID]:
    resp = call(b, 3, 12, topics=None, allow_auto_topic_creation=False, include_topic_authorized_operations=False)
    return {t.name: t.topic_id for t in resp.topics}


def make_topic(b: BrokerProcess, partitions: int, name: str | None = None) -> str:
    name = name or unique("cp")
    admin = AdminClient({"bootstrap.servers": b.bootstrap})  # kept alive until the result comes
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(60)
    return name


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class KeepAlive:
    """Heartbeats of one member in the background, owning what it has."""

    def __init__(self, b: BrokerProcess, group: str, member: str, epoch: int, owned: Owned) -> None:
        self.stop = threading.Event()

        def run() -> None:
            while not self.stop.wait(0.5):
                heartbeat(b, group, member, epoch, owned=owned)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def total(owned: Owned | None) -> int:
    return sum(len(ps) for ps in (owned or {}).values())


# -- the protocol -------------------------------------------------------------------------


def test_join_fencing_and_request_errors(cb: BrokerProcess) -> None:
    topic = make_topic(cb, 4)
    group = unique("g")
    tid = topic_ids(cb)[topic]
    first = heartbeat(cb, group, "m1", 0, topics=[topic])
    assert first.error_code == E.none and first.member_epoch == 1 and first.heartbeat_interval.total_seconds() == 0.5
    assert assigned(first) == {tid: {0, 1, 2, 3}}
    # a newer epoch than the member's is fenced; an unknown member id is unknown
    assert heartbeat(cb, group, "m1", 5).error_code == E.fenced_member_epoch
    assert heartbeat(cb, group, "nobody", 1).error_code == E.unknown_member_id
    # the same epoch keeps the member; nothing changed, so no assignment is sent
    same = heartbeat(cb, group, "m1", 1, owned={tid: {0, 1, 2, 3}})
    assert same.error_code == E.none and same.member_epoch == 1 and same.assignment is None
    # Kafka's request checks
    assert heartbeat(cb, group, "", 0, topics=[topic]).error_code == E.invalid_request
    assert heartbeat(cb, group, "m2", 0, topics=[topic], rebalance_ms=-1).error_code == E.invalid_request
    assert heartbeat(cb, group, "m2", 0).error_code == E.invalid_request  # no subscription
    assert heartbeat(cb, group, "m2", 0, topics=[topic], assignor="sticky").error_code == E.unsupported_assignor
    assert heartbeat(cb, group, "m2", 0, regex="a(?=b)").error_code == E.invalid_regular_expression
    # leaving (epoch -1) answers epoch -1; the group is empty again
    assert heartbeat(cb, group, "m1", -1).member_epoch == -1
    assert describe(cb, group).group_state == "Empty"


def test_partition_is_revoked_before_another_member_gets_it(cb: BrokerProcess) -> None:
    topic = make_topic(cb, 4)
    group = unique("g")
    tid = topic_ids(cb)[topic]
    a = heartbeat(cb, group, "a", 0, topics=[topic])
    assert assigned(a) == {tid: {0, 1, 2, 3}}
    b = heartbeat(cb, group, "b", 0, topics=[topic])
    # b is at the new epoch but gets nothing yet: a still owns everything
    assert b.member_epoch == 2 and total(assigned(b)) == 0
    # a is told to keep two partitions (and so revoke two), staying at its epoch until it does
    a2 = heartbeat(cb, group, "a", 1, owned={tid: {0, 1, 2, 3}})
    kept = assigned(a2)
    assert a2.member_epoch == 1 and total(kept) == 2
    assert total(assigned(heartbeat(cb, group, "b", 2, owned={}))) == 0  # still nothing free
    state = describe(cb, group)
    by_member = {m.member_id: m for m in state.members}
    assert {p for t in by_member["b"].assignment.topic_partitions for p in t.partitions} == set()
    # a reports that it revoked: it moves to the group's epoch, and b's next heartbeat gets the rest
    a3 = heartbeat(cb, group, "a", 1, owned=kept)
    assert a3.member_epoch == 2
    b3 = heartbeat(cb, group, "b", 2, owned={})
    got = assigned(b3)
    assert got is not None and total(got) == 2 and not (got[tid] & (kept or {})[tid])
    assert describe(cb, group).group_state == "Stable"


def test_static_member_takes_its_place_back(cb: BrokerProcess) -> None:
    topic = make_topic(cb, 2)
    group = unique("g")
    tid = topic_ids(cb)[topic]
    first = heartbeat(cb, group, "s1", 0, topics=[topic], instance="i1")
    assert heartbeat(cb, group, "d1", 0, topics=[topic]).error_code == E.none
    first = heartbeat(cb, group, "s1", 1, owned=assigned(first), instance="i1")
    mine = assigned(first) or {tid: set()}
    # the instance id is in use: another member id cannot take it
    assert heartbeat(cb, group, "s2", 0, topics=[topic], instance="i1").error_code == E.unreleased_instance_id
    # a static member leaving for a while (epoch -2) keeps its partitions for its session
    gone = heartbeat(cb, group, "s1", -2, instance="i1")
    assert gone.error_code == E.none and gone.member_epoch == -2
    back = heartbeat(cb, group, "s2", 0, topics=[topic], instance="i1")
    assert back.error_code == E.none and assigned(back) == mine
    members = {m.member_id for m in describe(cb, group).members}
    assert members == {"s2", "d1"}


def test_regex_subscription_and_new_partitions_start_a_new_assignment(cb: BrokerProcess) -> None:
    prefix = unique("rx")
    one = make_topic(cb, 2, f"{prefix}-one")
    group = unique("g")
    first = heartbeat(cb, group, "r", 0, regex=f"{prefix}-.*", assignor="range")
    ids = topic_ids(cb)
    assert assigned(first) == {ids[one]: {0, 1}}
    assert describe(cb, group).assignor_name == "range"
    two = make_topic(cb, 1, f"{prefix}-two")
    ids = topic_ids(cb)
    after = heartbeat(cb, group, "r", first.member_epoch, owned=assigned(first))
    assert after.member_epoch > first.member_epoch
    assert assigned(after) == {ids[one]: {0, 1}, ids[two]: {0}}
    admin = AdminClient({"bootstrap.servers": cb.bootstrap})
    admin.create_partitions([NewPartitions(one, 3)])[one].result(15)
    grown = heartbeat(cb, group, "r", after.member_epoch, owned=assigned(after))
    assert assigned(grown) == {ids[one]: {0, 1, 2}, ids[two]: {0}}


def test_member_without_heartbeats_is_removed_after_its_session(broker_factory: Any) -> None:
    # group.consumer.session.timeout.ms 8 s: the talker, heartbeating every 0.5 s, keeps a wide
    # margin on a loaded machine; the quiet member's session ends
    b = broker_factory(env=ENV | {"ODRADEK_GROUP_CONSUMER_SESSION_TIMEOUT_MS": "8000"})
    topic = make_topic(b, 2)
    group = unique("g")
    assert heartbeat_until_answered(b, group, "quiet", 0, topics=[topic]).member_epoch == 1
    talker = heartbeat_until_answered(b, group, "talker", 0, topics=[topic])
    epoch, owned = talker.member_epoch, assigned(talker) or {}
    deadline = time.monotonic() + 60
    while total(owned) < 2:
        assert time.monotonic() < deadline, "the silent member's partitions never came to the other"
        resp = heartbeat(b, group, "talker", epoch, owned=owned)
        assert resp.error_code == E.none
        epoch = resp.member_epoch
        owned = assigned(resp) if resp.assignment is not None else owned
        time.sleep(0.5)
    assert [m.member_id for m in describe(b, group).members] == ["talker"]
    assert heartbeat(b, group, "quiet", 1).error_code == E.unknown_member_id


def test_commits_fetches_and_listings_of_a_consumer_group(cb: BrokerProcess) -> None:
    topic = make_topic(cb, 1)
    group = unique("g")
    m = heartbeat(cb, group, "c1", 0, topics=[topic])
    alive = KeepAlive(cb, group, "c1", m.member_epoch, assigned(m) or {})

    def commit(epoch: int, member: str = "c1") -> E:
        resp = call(cb, 8, 9, group_id=group, generation_id_or_member_epoch=epoch, member_id=member,
                    group_instance_id=None, topics=[{"name": topic, "partitions": [
                        {"partition_index": 0, "committed_offset": 5, "committed_leader_epoch": -1,
                         "committed_metadata": None}]}])
        return resp.topics[0].partitions[0].error_code  # type: ignore[no-any-return]

    assert commit(m.member_epoch) == E.none
    assert commit(m.member_epoch + 3) == E.stale_member_epoch
    assert commit(m.member_epoch, member="stranger") == E.unknown_member_id
    assert commit(-1, member="") == E.unknown_member_id  # an admin commit needs an empty group

    def fetch(member: str | None, epoch: int) -> Any:
        return call(cb, 9, 9, groups=[{"group_id": group, "member_id": member, "member_epoch": epoch,
                                       "topics": None}], require_stable=False).groups[0]

    fetched = fetch("c1", m.member_epoch)
    assert fetched.error_code == E.none and fetched.topics[0].partitions[0].committed_offset == 5
    assert fetch("c1", m.member_epoch + 1).error_code == E.stale_member_epoch
    assert fetch(None, -1).error_code == E.none  # an admin's fetch
    listed = call(cb, 16, 5, states_filter=[], types_filter=["consumer"]).groups
    assert {(g.group_id, g.group_type, g.protocol_type) for g in listed if g.group_id == group} == {
        (group, "consumer", "consumer")}
    assert not [g for g in call(cb, 16, 5, states_filter=[], types_filter=["classic"]).groups if g.group_id == group]
    classic = call(cb, 15, 5, groups=[group], include_authorized_operations=False).groups[0]
    assert (classic.protocol_type, classic.protocol_data) == ("consumer", "uniform")
    assert [x.member_id for x in classic.members] == ["c1"]
    assert assigned_partitions(classic.members[0].member_assignment) == {topic: [0]}
    # offsets of a topic the group's members subscribe to cannot be deleted
    deleted = call(cb, 47, 0, group_id=group, topics=[{"name": topic, "partitions": [{"partition_index": 0}]}])
    assert deleted.topics[0].partitions[0].error_code == E.group_subscribed_to_topic
    # the CLI shows the type, the member's epoch and its partitions
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "odradek"), "group", "-b", cb.bootstrap, "describe", group],
                         capture_output=True, text=True, timeout=60, check=False, env={"COLUMNS": "250", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "type consumer" in out.stdout and f"group epoch {m.member_epoch}" in out.stdout
    row = next(line for line in out.stdout.splitlines() if "c1" in line and "EPOCH" not in line)
    assert f" {m.member_epoch} " in row and f"{topic}[0]" in row
    alive.close()
    heartbeat(cb, group, "c1", -1)
    assert commit(-1, member="") == E.none  # empty: the admin may commit


# -- real clients --------------------------------------------------------------------------


def check_timeline(events: list[dict[str, Any]], partitions: int) -> None:
    """Assigned/revoked/lost events of all consumers, on one clock: a partition is never
    assigned while another consumer still holds it."""
    owner: dict[int, int] = {}
    for e in sorted(events, key=lambda e: (e["t_ms"], e["event"] != "revoked")):
        for p in e.get("partitions", []):
            if e["event"] == "assigned":
                assert p not in owner, f"partition {p} assigned to {e['consumer']} while {owner.get(p)} owns it: {e}"
                owner[p] = e["consumer"]
            elif e["event"] in ("revoked", "lost"):
                assert owner.get(p) == e["consumer"], f"partition {p} revoked from {e['consumer']}, owned by {owner.get(p)}"
                del owner[p]
        assert all(0 <= p < partitions for p in owner)


def produce_numbered(bootstrap: str, topic: str, count: int, over_s: float) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    started = time.monotonic()
    for i in range(count):
        p.produce(topic, key=str(i).encode(), value=str(i).encode())
        p.poll(0)
        wait = started + over_s * (i + 1) / count - time.monotonic()
        if wait > 0:
            time.sleep(wait)
    assert p.flush(30) == 0


def test_confluent_consumers_join_and_leave_under_load(cb: BrokerProcess) -> None:
    topic = make_topic(cb, 12)
    group = unique("g")
    count = 3000
    clock = time.monotonic()
    events: list[dict[str, Any]] = []
    processed: list[str] = []
    lock = threading.Lock()
    stop_all = threading.Event()
    # (start, stop) seconds: six consumers join one after another, two leave while the others read
    schedule = [(0, None), (1, None), (2, 8), (3, None), (4, 10), (5, None)]

    def emit(kind: str, who: int, parts: list[Any]) -> None:
        with lock:
            events.append({"event": kind, "consumer": who, "partitions": sorted(tp.partition for tp in parts),
                           "t_ms": (time.monotonic() - clock) * 1000})

    def run(who: int, start: float, stop: float | None) -> None:
        time.sleep(start)
        c = Consumer({"bootstrap.servers": cb.bootstrap, "group.id": group, "group.protocol": "consumer",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False, "client.id": f"c{who}"})

        def on_revoke(consumer: Any, parts: list[Any]) -> None:
            if parts:
                with contextlib.suppress(KafkaException):  # _NO_OFFSET: nothing read since the last commit
                    consumer.commit(asynchronous=False)  # what was processed, before the partitions go
                emit("revoked", who, parts)

        def on_assign(consumer: Any, parts: list[Any]) -> None:
            if parts:
                emit("assigned", who, parts)

        def on_lost(consumer: Any, parts: list[Any]) -> None:
            if parts:
                emit("lost", who, parts)

        c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
        try:
            while not stop_all.is_set() and (stop is None or time.monotonic() - clock < stop):
                batch = [m for m in c.consume(200, 0.1) if not m.error()]
                if batch:
                    with lock:
                        processed.extend(m.value().decode() for m in batch)
                    c.commit(asynchronous=False)
        finally:
            c.close()

    threads = [threading.Thread(target=run, args=(i, s, e), daemon=True) for i, (s, e) in enumerate(schedule)]
    for t in threads:
        t.start()
    try:
        produce_numbered(cb.bootstrap, topic, count, 10)
        wait_until(lambda: len(set(processed)) >= count and time.monotonic() - clock > 11, 120,
                   "every record processed")
    finally:
        stop_all.set()
        for t in threads:
            t.join(30)
    check_timeline(events, 12)
    seen = Counter(processed)
    assert set(seen) == {str(i) for i in range(count)}
    assert [v for v, n in seen.items() if n > 1] == []
    assert {e["consumer"] for e in events if e["event"] == "assigned"} == set(range(6))


def run_java_consumers(b: BrokerProcess, topic: str, group: str, protocol: str, records: int,
                       schedule: str) -> list[dict[str, Any]]:
    done = subprocess.run([*java_command(), str(JAVA_DIR / "Kip848Consumers.java"),
                           b.bootstrap, topic, group, protocol, str(records), schedule],
                          capture_output=True, text=True, timeout=240, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_java_consumers_join_and_leave_under_load(cb: BrokerProcess) -> None:
    topic = make_topic(cb, 12)
    group = unique("g")
    count = 3000
    lines = run_java_consumers(cb, topic, group, "consumer", count, "0-,1000-,2000-8000,3000-,4000-10000,5000-")
    assert [e for e in lines if e["event"] == "error"] == []
    check_timeline([e for e in lines if e["event"] in ("assigned", "revoked", "lost")], 12)
    seen = Counter(v for e in lines if e["event"] == "processed" for v in e["values"])
    assert set(seen) == {str(i) for i in range(count)}
    assert [v for v, n in seen.items() if n > 1] == []
    assert {e["consumer"] for e in lines if e["event"] == "assigned"} == set(range(6))


def test_classic_group_moves_to_the_consumer_protocol_and_back(cb: BrokerProcess) -> None:
    topic = make_topic(cb, 2)
    group = unique("g")
    produce_numbered(cb.bootstrap, topic, 20, 0)

    def read(protocol: str, n: int) -> list[str]:
        conf = {"bootstrap.servers": cb.bootstrap, "group.id": group, "group.protocol": protocol,
                "auto.offset.reset": "earliest", "enable.auto.commit": False}
        if protocol == "classic":
            conf["session.timeout.ms"] = 6000
        c = Consumer(conf)
        c.subscribe([topic])
        got: list[str] = []
        deadline = time.monotonic() + 30
        while len(got) < n and time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is not None and not msg.error():
                got.append(msg.value().decode())
                c.commit(message=msg, asynchronous=False)
        c.close()
        return got

    first = read("classic", 20)
    assert len(first) == 20
    types = {g.group_id: g.group_type for g in call(cb, 16, 5, states_filter=[], types_filter=[]).groups}
    assert types[group] == "classic"
    # empty: the consumer protocol takes the group over, from its committed offsets
    produce_numbered(cb.bootstrap, topic, 10, 0)
    second = read("consumer", 10)
    assert sorted(second, key=int) == [str(i) for i in range(10)]  # the new records only (numbers restart)
    types = {g.group_id: g.group_type for g in call(cb, 16, 5, states_filter=[], types_filter=[]).groups}
    assert types[group] == "consumer"
    # and back to classic once it is empty, offsets kept
    produce_numbered(cb.bootstrap, topic, 5, 0)
    third = read("classic", 5)
    assert sorted(third, key=int) == [str(i) for i in range(5)]
    types = {g.group_id: g.group_type for g in call(cb, 16, 5, states_filter=[], types_filter=[]).groups}
    assert types[group] == "classic"


def test_classic_and_consumer_members_share_a_group_online(cb: BrokerProcess) -> None:
    """bidirectional migration: a consumer-protocol member joins a Stable classic group (online
    upgrade; the classic member stays, on JoinGroup/SyncGroup/Heartbeat), then leaves (downgrade)."""
    topic = make_topic(cb, 6)
    group = unique("g")
    clock = time.monotonic()
    events: list[dict[str, Any]] = []
    lock = threading.Lock()
    stop: dict[str, threading.Event] = {"classic": threading.Event(), "consumer": threading.Event()}

    def member(name: str, who: int) -> Consumer:
        conf: dict[str, Any] = {"bootstrap.servers": cb.bootstrap, "group.id": group, "group.protocol": name,
                                "auto.offset.reset": "earliest", "client.id": name}
        if name == "classic":
            conf.update({"session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
                         "partition.assignment.strategy": "cooperative-sticky"})
        c = Consumer(conf)

        def note(kind: str) -> Callable[[Any, list[Any]], None]:
            def callback(consumer: Any, parts: list[Any]) -> None:
                if parts:
                    with lock:
                        events.append({"event": kind, "consumer": who, "t_ms": (time.monotonic() - clock) * 1000,
                                       "partitions": sorted(p.partition for p in parts)})
            return callback

        c.subscribe([topic], on_assign=note("assigned"), on_revoke=note("revoked"), on_lost=note("lost"))
        return c

    def run(c: Consumer, name: str) -> None:
        while not stop[name].is_set():
            c.poll(0.1)
        c.close()

    def owned_by(who: int) -> set[int]:
        owned: set[int] = set()
        with lock:
            for e in sorted(events, key=lambda e: e["t_ms"]):
                if e["consumer"] == who:
                    owned = owned | set(e["partitions"]) if e["event"] == "assigned" else owned - set(e["partitions"])
        return owned

    def group_type() -> str:
        return str(next(g.group_type for g in call(cb, 16, 5, states_filter=[], types_filter=[]).groups
                        if g.group_id == group))

    classic = threading.Thread(target=run, args=(member("classic", 0), "classic"), daemon=True)
    consumer: threading.Thread | None = None
    classic.start()
    try:
        wait_until(lambda: owned_by(0) == set(range(6)), 60, "the classic member owning every partition")
        assert group_type() == "classic"
        # made only now: a subscribed consumer joins in the background even before its first poll
        consumer = threading.Thread(target=run, args=(member("consumer", 1), "consumer"), daemon=True)
        consumer.start()
        wait_until(lambda: len(owned_by(1)) == 3 and len(owned_by(0)) == 3, 60, "the partitions shared")
        assert group_type() == "consumer"
        described = describe(cb, group)
        assert sorted((m.client_id, m.member_type) for m in described.members) == [("classic", 0), ("consumer", 1)]
        stop["consumer"].set()
        consumer.join(30)
        wait_until(lambda: owned_by(0) == set(range(6)), 60, "the classic member owning every partition again")
        assert group_type() == "classic"
    finally:
        for name, thread in (("consumer", consumer), ("classic", classic)):
            stop[name].set()
            if thread is not None and thread.is_alive():
                thread.join(30)
    check_timeline(events, 6)
    # a classic group that is not Stable (here: a member that never synced) is not upgraded
    other = unique("g")
    first = call(cb, 11, 5, group_id=other, session_timeout=10000, rebalance_timeout=5000, member_id="",
                 group_instance_id=None, protocol_type="consumer",
                 protocols=[{"name": "range", "metadata": b"\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff"}])
    call(cb, 11, 5, group_id=other, session_timeout=10000, rebalance_timeout=5000, member_id=first.member_id,
         group_instance_id=None, protocol_type="consumer",
         protocols=[{"name": "range", "metadata": b"\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff"}])
    assert heartbeat(cb, other, "newcomer", 0, topics=[topic]).error_code == E.group_id_not_found


def test_broker_sigkill_resumes_the_group_with_its_epochs(broker_factory: Any) -> None:
    b = broker_factory(env=ENV | {"ODRADEK_GROUP_CONSUMER_SESSION_TIMEOUT_MS": "30000"})
    topic = make_topic(b, 4)
    group = unique("g")
    before = stable_group_of_two(b, group, topic)
    b.kill()
    b.start()
    wait_until(lambda: describe(b, group).error_code == E.none, 60, "the group after the restart")
    after = describe(b, group)
    assert members_of(after) == members_of(before)
    assert (after.group_epoch, after.assignment_epoch, after.group_state) == (
        before.group_epoch, before.assignment_epoch, "Stable")
    # the members go on with their epochs, unfenced
    resumed = heartbeat_until_answered(b, group, "x", before.group_epoch,
                                       owned={topic_ids(b)[topic]: members_of(before)["x"][1]})
    assert resumed.member_epoch == before.group_epoch


# -- cluster mode: coordinator failover ---------------------------------------------------


def coordinator_of(cluster: Any, group: str) -> Any:
    """The live broker coordinating `group` (FindCoordinator v4), or None."""
    for b in [b for b in cluster.brokers if b.alive]:
        try:
            found = call(b, 10, 4, key_type=0, coordinator_keys=[group]).coordinators[0]
        except OSError:
            continue
        if found.error_code == E.none:
            return next((c for c in cluster.brokers if c.broker_id == found.node_id and c.alive), None)
    return None


def replicated_state(cluster: Any, group: str) -> dict[str, tuple[int, set[int]]]:
    """The group's members (epoch, partitions) as the records below the high watermark of its
    __consumer_offsets partition say: what every in-sync replica has."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    from odradek.coordinator.consumer_coordinator import is_consumer_record, replay_consumer_record
    from odradek.coordinator.consumer_group import ConsumerGroup
    from odradek.coordinator.group import Group
    from odradek.coordinator.records import partition_for

    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": unique("reader"), "enable.auto.commit": False})
    c.assign([TopicPartition("__consumer_offsets", partition_for(group, 3), OFFSET_BEGINNING)])
    groups: dict[str, Group] = {}
    try:
        while (msg := c.poll(1.0)) is not None:
            if not msg.error() and msg.key() and is_consumer_record(msg.key()):
                replay_consumer_record(groups, msg.key(), msg.value())
    finally:
        c.close()
    g = groups.get(group)
    if not isinstance(g, ConsumerGroup):
        return {}
    return {m.member_id: (m.member_epoch, {p for ps in m.assigned.values() for p in ps}) for m in g.consumers.values()}


def test_cluster_coordinator_sigkill_resumes_the_group(cluster_factory: Any) -> None:
    cluster = cluster_factory(3, env={"ODRADEK_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS": "500",
                                      "ODRADEK_GROUP_CONSUMER_SESSION_TIMEOUT_MS": "30000"})
    topic = unique("cpk")
    cluster.create_topic(topic, partitions=4)
    group = unique("g")
    cluster.wait_for("a coordinator", lambda: coordinator_of(cluster, group))
    # the offsets partition's leadership may still settle right after the cluster starts: each
    # step goes to the coordinator FindCoordinator names then, as a client's does
    before = stable_group_of_two(lambda: coordinator_of(cluster, group), group, topic)
    coord = cluster.wait_for("the coordinator", lambda: coordinator_of(cluster, group))
    summary = members_of(before)
    cluster.wait_for("the group's records on every in-sync replica",
                     lambda: replicated_state(cluster, group) == summary, timeout=60)
    coord.kill()
    new = cluster.wait_for("another coordinator", lambda: (c := coordinator_of(cluster, group)) is not None
                           and c.broker_id != coord.broker_id and c, timeout=60)
    after = cluster.wait_for("the group on the new coordinator",
                             lambda: (g := describe(new, group)).error_code == E.none and g, timeout=60)
    assert members_of(after) == summary
    assert (after.group_epoch, after.assignment_epoch) == (before.group_epoch, before.assignment_epoch)
    tid = topic_ids(new)[topic]
    # its first write may wait for the offsets partition's ISR to drop the dead broker, and the
    # partition's leadership may move once more meanwhile (NOT_COORDINATOR): retried, at the
    # coordinator FindCoordinator names then, as a client does
    deadline = time.monotonic() + 90
    while True:
        at = coordinator_of(cluster, group)
        resumed = None if at is None else heartbeat(at, group, "x", summary["x"][0], owned={tid: summary["x"][1]})
        if resumed is not None and resumed.error_code not in RETRIABLE | {E.not_coordinator}:
            break
        assert time.monotonic() < deadline, f"no answer but {resumed and resumed.error_code!r} for 90 s"
        time.sleep(0.2)
    assert resumed.error_code == E.none, (resumed.error_code, resumed.error_message)
    assert resumed.member_epoch == summary["x"][0]
