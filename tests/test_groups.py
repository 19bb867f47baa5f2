"""Consumer groups with real clients against a real odradek process.

Queue and publish-subscribe semantics, resume from committed offsets (also
across a restart and a SIGKILL of the broker), failure of a member without
LeaveGroup, each assignor, kafka-python and aiokafka groups, static membership.
The broker runs with group.initial.rebalance.delay.ms=0 to keep tests fast.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from conftest import BrokerProcess, module_broker, unique

# Each test here checks what Kafka answers: pytest --kafka runs them against Apache Kafka.
pytestmark = pytest.mark.kafka_behaviour

GROUP_ENV = {
    "ODRADEK_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    "ODRADEK_GROUP_MIN_SESSION_TIMEOUT_MS": "500",
    "ODRADEK_OFFSETS_TOPIC_NUM_PARTITIONS": "5",
}
FAST = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "topic.metadata.refresh.interval.ms": 1000}


gb = module_broker("gb", GROUP_ENV)


def make_topic(bootstrap: str, partitions: int) -> str:
    name = unique("g")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(60)
    return name


def produce(bootstrap: str, topic: str, count: int, partitions: int, start: int = 0) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.num.messages": 2000})
    for i in range(start, start + count):
        p.produce(topic, value=b"%d" % i, partition=i % partitions)
        if i % 5000 == 0:
            p.poll(0)
    assert p.flush(120) == 0


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class GroupMember(threading.Thread):
    """A confluent-kafka consumer polling in a thread, remembering what it got and owns."""

    def __init__(self, bootstrap: str, group: str, topic: str, **conf: Any) -> None:
        super().__init__(daemon=True)
        self.conf = {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                     "enable.auto.commit": True, "auto.commit.interval.ms": 200, **FAST, **conf}
        self.topic = topic
        self.values: list[int] = []
        self.owned: set[int] = set()
        self.assigns = 0
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.error: BaseException | None = None
        self.start()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self.lock:
            self.assigns += 1
            if self.conf.get("partition.assignment.strategy") == "cooperative-sticky":
                self.owned |= {tp.partition for tp in partitions}
            else:
                self.owned = {tp.partition for tp in partitions}

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self.lock:
            self.owned -= {tp.partition for tp in partitions}

    def run(self) -> None:
        try:
            c = Consumer(self.conf)
            c.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)
            while not self.stop_event.is_set():
                for m in c.consume(500, 0.1):
                    if m.error() is None:
                        self.values.append(int(m.value()))
            c.close()
        except BaseException as exc:  # noqa: BLE001 - whatever ends the member's thread, close() fails the test with it
            self.error = exc

    def close(self) -> None:
        self.stop_event.set()
        self.join(20)
        assert self.error is None, self.error


def all_values(members: list[GroupMember]) -> Counter[int]:
    return Counter(v for m in members for v in m.values)


def stable_split(members: list[GroupMember], partitions: int) -> bool:
    owned = [m.owned for m in members]
    union = set().union(*owned)
    return len(union) == partitions and sum(len(o) for o in owned) == partitions


def stable_assignment(bootstrap: str, group: str) -> list[set[int]] | None:
    """The members' partitions as DescribeGroups reports them once the group is Stable, else None."""
    from confluent_kafka import ConsumerGroupState

    admin = AdminClient({"bootstrap.servers": bootstrap})
    desc = admin.describe_consumer_groups([group], request_timeout=10)[group].result(10)
    if desc.state != ConsumerGroupState.STABLE:
        return None
    return sorted(({tp.partition for tp in m.assignment.topic_partitions} for m in desc.members), key=sorted)


# -- queue and publish-subscribe -------------------------------------------------------


def test_queue_three_consumers_get_two_partitions_each_and_every_record_once(gb: BrokerProcess) -> None:
    topic = make_topic(gb.bootstrap, 6)
    group = unique("queue")
    members = [GroupMember(gb.bootstrap, group, topic) for _ in range(3)]
    try:
        wait_until(lambda: [len(m.owned) for m in members] == [2, 2, 2] and stable_split(members, 6), 60, "a 2/2/2 split")
        produce(gb.bootstrap, topic, 30_000, 6)
        wait_until(lambda: sum(len(m.values) for m in members) >= 30_000, 60, "30,000 records")
        time.sleep(0.3)
        counts = all_values(members)
        assert len(counts) == 30_000 and set(counts.values()) == {1}, "each record exactly once"
        assert sorted(len(m.values) for m in members) == [10_000] * 3
    finally:
        for m in members:
            m.close()


def test_two_groups_each_receive_every_record(gb: BrokerProcess) -> None:
    topic = make_topic(gb.bootstrap, 6)
    produce(gb.bootstrap, topic, 30_000, 6)
    groups = [[GroupMember(gb.bootstrap, g, topic) for _ in range(2)] for g in (unique("pubA"), unique("pubB"))]
    try:
        for members in groups:
            wait_until(lambda group=members: sum(len(m.values) for m in group) >= 30_000, 60,
                       "30,000 records per group")
        time.sleep(0.3)
        for members in groups:
            counts = all_values(members)
            assert len(counts) == 30_000 and set(counts.values()) == {1}
    finally:
        for members in groups:
            for m in members:
                m.close()


# -- resume from committed offsets -------------------------------------------------------


def consume_and_commit(bootstrap: str, group: str, topic: str, count: int) -> list[int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, **FAST})
    c.subscribe([topic])
    got: list[int] = []
    deadline = time.monotonic() + 30
    while len(got) < count and time.monotonic() < deadline:
        for m in c.consume(count - len(got), 0.5):
            if m.error() is None:
                got.append(int(m.value()))
                c.commit(message=m, asynchronous=False)
    c.close()
    return got


@pytest.mark.parametrize("broker_event", ["none", "restart", "sigkill"])
def test_new_consumer_resumes_from_committed_offset(broker_factory: Any, broker_event: str) -> None:
    b = broker_factory(env=GROUP_ENV)
    topic = make_topic(b.bootstrap, 1)
    group = unique("resume")
    produce(b.bootstrap, topic, 1000, 1)
    first = consume_and_commit(b.bootstrap, group, topic, 400)
    assert first == list(range(400))
    if broker_event == "restart":
        b.restart()
    elif broker_event == "sigkill":
        b.kill()
        b.start()
    second = consume_and_commit(b.bootstrap, group, topic, 600)
    assert second == list(range(400, 1000)), "resumes exactly after the last commit"
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    from confluent_kafka import ConsumerGroupTopicPartitions

    res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(15)
    assert [(tp.partition, tp.offset) for tp in res.topic_partitions] == [(0, 1000)]


# -- failure of a member -----------------------------------------------------------------

KILLED_MEMBER = """
import sys, json
from confluent_kafka import Consumer
bootstrap, group, topic = sys.argv[1:4]
c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
              "enable.auto.commit": True, "auto.commit.interval.ms": 200, "session.timeout.ms": 3000,
              "heartbeat.interval.ms": 300})
c.subscribe([topic], on_assign=lambda c, ps: print(json.dumps({"assigned": [p.partition for p in ps]}), flush=True))
while True:
    for m in c.consume(100, 0.1):
        if m.error() is None:
            print(json.dumps({"v": int(m.value())}), flush=True)
"""


def test_member_killed_without_leave_group_loses_its_partitions_after_session_timeout(gb: BrokerProcess, tmp_path: Path) -> None:
    topic = make_topic(gb.bootstrap, 4)
    group = unique("fail")
    produce(gb.bootstrap, topic, 4000, 4)
    survivor = GroupMember(gb.bootstrap, group, topic)
    script = tmp_path / "member.py"
    script.write_text(KILLED_MEMBER)
    printed = tmp_path / "member.out"

    def victim_got() -> set[int]:
        return {json.loads(line)["v"] for line in printed.read_text().splitlines() if '"v"' in line}

    with printed.open("w") as out:  # the victim writes through its own copy of the descriptor
        victim = subprocess.Popen([sys.executable, str(script), gb.bootstrap, group, topic], stdout=out)
    try:
        wait_until(lambda: len(survivor.owned) == 2, 60, "the group to split 2/2")
        wait_until(lambda: sum(len(m.values) for m in [survivor]) >= 2000, 60, "the survivor to consume its half")
        wait_until(lambda: set(survivor.values) | victim_got() >= set(range(4000)), 60,
                   "the victim to consume its half")
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killed_at = time.monotonic()
        produce(gb.bootstrap, topic, 4000, 4, start=4000)
        wait_until(lambda: len(survivor.owned) == 4, 60, "the survivor to take over all partitions")
        took = time.monotonic() - killed_at
        assert took >= 2.5, "not before the 3 s session timeout"
        victim_values = victim_got()
        wait_until(lambda: len(set(survivor.values) | victim_values) >= 8000, 60, "no record lost")
        assert set(survivor.values) | victim_values == set(range(8000))
    finally:
        if victim.poll() is None:
            victim.kill()
        survivor.close()


# -- assignors, other clients ---------------------------------------------------------------


@pytest.mark.parametrize("assignor", ["range", "roundrobin", "cooperative-sticky"])
def test_each_assignor_with_confluent_kafka(gb: BrokerProcess, assignor: str) -> None:
    topic = make_topic(gb.bootstrap, 6)
    group = unique(assignor)
    produce(gb.bootstrap, topic, 6000, 6)
    conf = {"partition.assignment.strategy": assignor}
    members = [GroupMember(gb.bootstrap, group, topic, **conf) for _ in range(2)]
    try:
        wait_until(lambda: [len(m.owned) for m in members] == [3, 3] and stable_split(members, 6), 60, "a 3/3 split")
        members.append(GroupMember(gb.bootstrap, group, topic, **conf))
        wait_until(lambda: [len(m.owned) for m in members] == [2, 2, 2] and stable_split(members, 6), 60, "a 2/2/2 split")
        produce(gb.bootstrap, topic, 6000, 6, start=6000)
        wait_until(lambda: set(all_values(members)) == set(range(12_000)), 60, "every record")
    finally:
        for m in members:
            m.close()


def test_kafka_python_consumers_share_a_group(gb: BrokerProcess) -> None:
    from kafka import KafkaConsumer

    topic = make_topic(gb.bootstrap, 4)
    group = unique("kp")
    produce(gb.bootstrap, topic, 4000, 4)
    got: list[list[int]] = [[], []]
    owned: list[set[int]] = [set(), set()]
    stop = threading.Event()

    def run(i: int) -> None:
        c = KafkaConsumer(bootstrap_servers=gb.bootstrap, group_id=group, auto_offset_reset="earliest",
                          enable_auto_commit=True, auto_commit_interval_ms=200, session_timeout_ms=6000,
                          heartbeat_interval_ms=500)
        # Know the topic's partitions before joining: a kafka-python 3.0 leader that assigned without
        # them rejoins when they arrive, and if that rejoin outlasts one poll() it never re-enables
        # its heartbeat (the broker then rightly drops it after session.timeout.ms).
        assert c.partitions_for_topic(topic) == {0, 1, 2, 3}
        c.subscribe([topic])
        while not stop.is_set():
            for msgs in c.poll(100, max_records=500).values():
                got[i].extend(int(m.value) for m in msgs)
            owned[i] = {tp.partition for tp in c.assignment()}
        c.close()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: stable_assignment(gb.bootstrap, group) == sorted(owned, key=sorted)
                   and [len(o) for o in owned] == [2, 2] and not owned[0] & owned[1], 60,
                   "a Stable group whose 2/2 split both consumers hold")
        produce(gb.bootstrap, topic, 4000, 4, start=4000)
        wait_until(lambda: set(got[0]) | set(got[1]) == set(range(8000)), 60, "every record")
    finally:
        stop.set()
        for t in threads:
            t.join(20)


def test_aiokafka_consumers_share_a_group(gb: BrokerProcess) -> None:
    from aiokafka import AIOKafkaConsumer

    topic = make_topic(gb.bootstrap, 4)
    group = unique("aio")
    produce(gb.bootstrap, topic, 4000, 4)

    async def main() -> tuple[list[set[int]], set[int]]:
        consumers = [AIOKafkaConsumer(topic, bootstrap_servers=gb.bootstrap, group_id=group,
                                      auto_offset_reset="earliest", session_timeout_ms=6000,
                                      heartbeat_interval_ms=500) for _ in range(2)]
        for c in consumers:
            await c.start()
        seen: set[int] = set()
        deadline = time.monotonic() + 90  # returns once every record is in
        try:
            while time.monotonic() < deadline:
                for c in consumers:
                    for msgs in (await c.getmany(timeout_ms=100)).values():
                        seen.update(int(m.value) for m in msgs)
                owned = [{tp.partition for tp in c.assignment()} for c in consumers]
                if len(seen) == 4000 and [len(o) for o in owned] == [2, 2]:
                    await consumers[0].commit()
                    return owned, seen
            return [{tp.partition for tp in c.assignment()} for c in consumers], seen
        finally:
            for c in consumers:
                await c.stop()

    owned, seen = asyncio.run(main())
    assert seen == set(range(4000))
    assert [len(o) for o in owned] == [2, 2] and not owned[0] & owned[1]


def test_static_member_restart_gets_its_partitions_back_without_rebalance(gb: BrokerProcess) -> None:
    topic = make_topic(gb.bootstrap, 4)
    group = unique("static")
    conf = {"session.timeout.ms": 30000}
    a = GroupMember(gb.bootstrap, group, topic, **{"group.instance.id": "a", **conf})
    b = GroupMember(gb.bootstrap, group, topic, **{"group.instance.id": "b", **conf})
    try:
        wait_until(lambda: [len(a.owned), len(b.owned)] == [2, 2] and stable_split([a, b], 4), 60, "a 2/2 split")
        time.sleep(1.0)
        owned_a, assigns_b = set(a.owned), b.assigns
        a.close()  # a static member does not send LeaveGroup on close (KIP-345)
        a2 = GroupMember(gb.bootstrap, group, topic, **{"group.instance.id": "a", **conf})
        wait_until(lambda: bool(a2.owned), 60, "the restarted member's assignment")
        assert a2.owned == owned_a
        time.sleep(1.5)
        assert b.assigns == assigns_b, "the other member saw no rebalance"
        a2.close()
    finally:
        b.close()
