"""Growing, shrinking and rebalancing a live cluster: partition reassignment (KIP-455) with real
ZooKeeper, real brokers and real clients.

Every move runs under acks=all idempotent load (RF=3, min.insync.replicas=2), and afterwards
each partition is read back whole: every acknowledged record is there at the offset it was
acknowledged with, nothing is duplicated, and the order is the order of sending.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_fixtures import FAST_ENV, ROOT, Cluster, ClusterBroker, cluster_factory, zookeeper  # noqa: F401
from confluent_kafka import Consumer, Producer, TopicPartition

from odradek.cli.cluster_up import broker_command, wait_for_port
from odradek.cluster.peer import PeerConnection

MIN_ISR = {"min.insync.replicas": "2"}
LIB = ROOT / "tests" / "java" / "lib"
JVM_FLAGS = ["-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]


# -- helpers ---------------------------------------------------------------------------------

@pytest.fixture
def grow(tmp_path: Path) -> Iterator[Any]:
    """Start more brokers in a cluster's ZooKeeper chroot (killed after the test)."""
    added: list[ClusterBroker] = []

    def add(cluster: Cluster, *ids: int) -> None:
        for i in ids:
            b = ClusterBroker(i, tmp_path / f"broker-{i}", cluster.brokers[0].zookeeper, dict(FAST_ENV))
            added.append(b)
            with open(b.log_path, "ab") as log:  # as b.start(), with more time: the host is busy with the load
                b.proc = subprocess.Popen(broker_command(i, b.port, b.data_dir, b.zookeeper), stdout=log,
                                          stderr=subprocess.STDOUT, env={**os.environ, **b.env}, cwd=ROOT)
            wait_for_port(b.port, timeout=90, proc=b.proc)
            cluster.brokers.append(b)
        n = len(cluster.brokers)
        cluster.wait_for(f"{n} live brokers", lambda: len(cluster.metadata().brokers) == n)

    yield add
    for b in added:
        b.kill()


class Load:
    """An idempotent acks=all producer sending 0, 1, 2, ... round-robin over the partitions,
    remembering (partition, offset) of every acknowledged value."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, rate_per_s: int = 400) -> None:
        self.topic, self.partitions, self.rate = topic, partitions, rate_per_s
        self.acked: dict[int, tuple[int, int]] = {}
        self.failed: list[str] = []
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                                  "linger.ms": 5, "delivery.timeout.ms": 120000})
        self._stop = threading.Event()
        self.sent = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed.append(str(err))
        else:
            self.acked[int(msg.value())] = (msg.partition(), msg.offset())

    def _run(self) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.producer.produce(self.topic, str(self.sent).encode(), partition=self.sent % self.partitions,
                                  on_delivery=self._on_delivery)
            self.sent += 1
            self.producer.poll(0)
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        assert self.producer.flush(60) == 0, "the producer could not deliver everything within 60 s"

    def check(self, bootstrap: str) -> None:
        """Every acked value at its offset, nothing twice, sending order kept, per partition."""
        assert not self.failed, f"deliveries failed: {self.failed[:5]}"
        assert len(self.acked) == self.sent
        read = read_all(bootstrap, self.topic, self.partitions)
        for p in range(self.partitions):
            values = [int(v) for _, v in read[p]]
            assert len(values) == len(set(values)), f"partition {p} has duplicates"
            assert values == sorted(values), f"partition {p} is out of order"
        at = {(p, off): int(v) for p in read for off, v in read[p]}
        lost = [v for v, where in self.acked.items() if at.get(where) != v]
        assert not lost, f"{len(lost)} acked record(s) missing or moved, e.g. {lost[:5]}"


class GroupReader:
    """A consumer in a group, subscribed and polling in a thread: the values it got."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.values: set[int] = set()
        self.errors: list[str] = []
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"readers-{time.time_ns()}",
                                   "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
        self._consumer.subscribe([topic])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._consumer.poll(0.2)
            if msg is not None and not msg.error():
                self.values.add(int(msg.value()))

    def close(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(5)
            self._consumer.close()

    def wait_for(self, wanted: set[int], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not wanted <= self.values and time.monotonic() < deadline:
            time.sleep(0.2)
        self.close()
        missing = wanted - self.values
        assert not missing, f"the group's consumer did not get {len(missing)} record(s), e.g. {sorted(missing)[:5]}"


def read_all(bootstrap: str, topic: str, partitions: int) -> dict[int, list[tuple[int, bytes]]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{time.time_ns()}", "enable.auto.commit": False})
    try:
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        out: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(partitions)}
        deadline = time.monotonic() + 60
        while any((out[p][-1][0] + 1 if out[p] else 0) < ends[p] for p in range(partitions)):
            assert time.monotonic() < deadline, "could not read the topic back within 60 s"
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            out[msg.partition()].append((msg.offset(), msg.value()))
        return out
    finally:
        c.close()


def odradek(*args: str, timeout: float = 120, expect: int = 0) -> str:
    done = subprocess.run([sys.executable, "-m", "odradek", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, check=False)
    assert done.returncode == expect, f"odradek {' '.join(args)} exited {done.returncode}:\n" \
        f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def call(broker: ClusterBroker, api_key: int, version: int, body: dict[str, Any]) -> Any:
    async def ask() -> Any:
        peer = PeerConnection("127.0.0.1", broker.port, "test")
        try:
            return await peer.call(api_key, version, body, 30.0)
        finally:
            peer.close()

    return asyncio.run(ask())


def call_port(port: int, api_key: int, version: int, body: dict[str, Any], timeout: float = 30.0) -> Any:
    async def ask() -> Any:
        peer = PeerConnection("127.0.0.1", port, "test")
        try:
            return await peer.call(api_key, version, body, timeout)
        finally:
            peer.close()

    return asyncio.run(ask())


def controller_port(via: ClusterBroker) -> int:
    md = call(via, 3, 1, {"topics": []})
    return next(b.port for b in md.brokers if b.node_id == md.controller_id)


def reassign(via: ClusterBroker, topic: str, targets: dict[int, list[int] | None]) -> dict[int, str]:
    """AlterPartitionReassignments to the controller `via` names, as the admin clients send it
    (another broker answers NOT_CONTROLLER); asked again while the controller moves."""
    body = {"timeout": 30000, "topics": [{"name": topic, "partitions": [
        {"partition_index": p, "replicas": r} for p, r in targets.items()]}]}
    for _ in range(40):
        resp = call_port(controller_port(via), 45, 0, body)
        if resp.error_code.name != "not_controller":
            break
        time.sleep(0.25)
    assert resp.error_code.name == "none", resp
    return {p.partition_index: p.error_code.name for t in resp.responses for p in t.partitions}


def ongoing(broker: ClusterBroker) -> dict[tuple[str, int], tuple[list[int], list[int], list[int]]]:
    resp = call(broker, 46, 0, {"timeout": 30000, "topics": None})
    return {(t.name, p.partition_index): (list(p.replicas), list(p.adding_replicas), list(p.removing_replicas))
            for t in resp.topics for p in t.partitions}


def replicas_by_broker(cluster: Cluster, topic: str) -> dict[int, int]:
    counts: dict[int, int] = {}
    for p in cluster.metadata(topic).topics[topic].partitions.values():
        for b in p.replicas:
            counts[b] = counts.get(b, 0) + 1
    return counts


def wait_moved(cluster: Cluster, via: ClusterBroker, topic: str, p: int, target: list[int],
               timeout: float = 60.0) -> None:
    def done() -> bool:
        part = cluster.partition(topic, p, via=via)
        return not ongoing(via) and list(part.replicas) == target and sorted(part.isrs) == sorted(target)

    cluster.wait_for(f"{topic}-{p} on {target}", done, timeout)


# -- growing and shrinking under load -----------------------------------------------------------

def test_rebalance_moves_partitions_onto_new_brokers_under_load(
        cluster_factory: Any, grow: Any, request: pytest.FixtureRequest) -> None:  # noqa: F811
    cluster = cluster_factory(3)
    cluster.create_topic("grow", 6, 3, MIN_ISR)
    load = Load(cluster.bootstrap, "grow", 6)
    reader = GroupReader(cluster.bootstrap, "grow")
    request.addfinalizer(reader.close)  # a failed test leaves no consumer polling dead brokers
    time.sleep(1.0)
    grow(cluster, 3, 4)
    out = odradek("cluster", "rebalance", "--yes", "-b", cluster.bootstrap)
    assert "rebalance complete" in out, out
    time.sleep(1.0)  # load goes on after the moves
    load.stop()
    counts = replicas_by_broker(cluster, "grow")
    assert counts.get(3, 0) >= 3 and counts.get(4, 0) >= 3, counts  # 18 replicas over 5 brokers: 3 or 4 each
    assert max(counts.values()) - min(counts.values()) <= 1, counts
    load.check(cluster.bootstrap)
    assert load.sent > 1000
    reader.wait_for(set(load.acked))  # the group kept consuming through the moves


def test_decommission_under_load_then_stop_the_broker(cluster_factory: Any) -> None:  # noqa: F811
    cluster = cluster_factory(4)
    cluster.create_topic("shrink", 4, 3, MIN_ISR)
    load = Load(cluster.bootstrap, "shrink", 4)
    time.sleep(1.0)
    leaving = cluster.brokers[3]
    out = odradek("cluster", "decommission", "3", "--yes", "-b", cluster.brokers[0].bootstrap)
    assert "broker 3 holds no replicas any more: it can be stopped" in out, out
    assert leaving.stop() == 0
    time.sleep(1.0)
    load.stop()
    assert 3 not in replicas_by_broker(cluster, "shrink")
    assert not [d for d in leaving.data_dir.iterdir() if d.name.startswith("shrink-")]  # its logs are deleted
    load.check(cluster.brokers[0].bootstrap)


# -- failures --------------------------------------------------------------------------------------

def test_reassignment_interrupted_by_sigkill_of_controller_and_target_completes(
        cluster_factory: Any, grow: Any) -> None:  # noqa: F811
    cluster = cluster_factory(3)
    cluster.create_topic("moving", 1, 3, MIN_ISR)
    p = Producer({"bootstrap.servers": cluster.bootstrap, "enable.idempotence": True, "acks": "all"})
    for i in range(2000):
        p.produce("moving", str(i).encode(), partition=0)
    assert p.flush(30) == 0
    grow(cluster, 3)
    controller = cluster.metadata().controller_id
    before = list(cluster.partition("moving").replicas)
    target = [3, *[b for b in before if b != controller][:2]]
    new = cluster.by_id(3)
    new.kill()  # still registered for a session timeout: the request is accepted, the copy cannot start
    survivor = next(b for b in cluster.brokers[:3] if b.broker_id != controller)
    assert reassign(survivor, "moving", {0: target}) == {0: "none"}
    cluster.by_id(controller).kill()
    # a new controller takes over (awaited, was a fixed 3 s sleep), broker 3 is gone: the move waits
    cluster.wait_for("a new controller", lambda: cluster.metadata(via=survivor).controller_id not in (-1, controller))
    assert ongoing(survivor) == {("moving", 0): ([*target, controller], [3], [controller])}
    cluster.by_id(controller).start()
    new.start()
    wait_moved(cluster, survivor, "moving", 0, target)
    read = read_all(survivor.bootstrap, "moving", 1)[0]
    assert [int(v) for _, v in read] == list(range(2000))
    cluster.wait_for("the removed replica's log deleted",
                     lambda: not (cluster.by_id(controller).data_dir / "moving-0").exists())


def test_cancelled_reassignment_leaves_the_old_replicas_and_errors_are_kafkas(
        cluster_factory: Any, grow: Any, tmp_path: Path) -> None:  # noqa: F811
    cluster = cluster_factory(3)
    cluster.create_topic("cancel", 1, 3, MIN_ISR)
    cluster.create_topic("errors", 2, 2)
    grow(cluster, 3)
    before = list(cluster.partition("cancel").replicas)
    first = cluster.brokers[0]
    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 20})
    for _ in range(1500):
        p.produce("cancel", os.urandom(1000), partition=0)
    assert p.flush(30) == 0
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": "cancel", "partition": 0, "replicas": [3, before[0], before[1]]}]}))
    # 1 kB/s: after its first fetch (up to 1 MiB, as in Kafka the quota is checked before a fetch)
    # broker 3 cannot catch up with 1.5 MB while the test looks
    out = odradek("partitions", "reassign", "--execute", "--reassignment-json-file", str(plan), "-b", first.bootstrap,
                  "--throttle", "1000")
    assert "Successfully started partition reassignments for cancel-0" in out, out
    assert ("cancel", 0) in ongoing(first)
    out = odradek("partitions", "reassign", "--verify", "--reassignment-json-file", str(plan), "-b", first.bootstrap,
                  expect=1)
    assert "Reassignment of partition cancel-0 is still in progress." in out, out
    out = odradek("partitions", "reassign", "--cancel", "--reassignment-json-file", str(plan), "-b", first.bootstrap)
    assert "Successfully cancelled partition reassignments for: cancel-0" in out, out
    wait_moved(cluster, first, "cancel", 0, before)
    assert reassign(first, "cancel", {0: None}) == {0: "no_reassignment_in_progress"}

    b = first
    answers = reassign(b, "errors", {0: [], 1: [0, 0]})
    assert answers == {0: "invalid_replica_assignment", 1: "invalid_replica_assignment"}
    assert reassign(b, "errors", {0: [0, 7]}) == {0: "invalid_replica_assignment"}  # broker 7 is not alive
    assert reassign(b, "errors", {5: [0, 1]}) == {5: "unknown_topic_or_partition"}
    assert reassign(b, "nope", {0: [0, 1]}) == {0: "unknown_topic_or_partition"}
    assert reassign(b, "errors", {0: None}) == {0: "no_reassignment_in_progress"}
    # v1 (KIP-860): a change of replication factor refused when not allowed
    body = {"timeout": 30000, "allow_replication_factor_change": False, "topics": [
        {"name": "errors", "partitions": [{"partition_index": 0, "replicas": [0, 1, 2]}]}]}
    for _ in range(40):  # to the controller, as an admin client sends it (another broker: NOT_CONTROLLER)
        resp = call_port(controller_port(b), 45, 1, body)
        if resp.error_code.name != "not_controller":
            break
        time.sleep(0.25)
    assert resp.error_code.name == "none", resp
    assert resp.responses[0].partitions[0].error_code.name == "invalid_replication_factor"

    # the pre-KIP-455 way: a JSON file written to /admin/reassign_partitions, picked up and deleted
    from kazoo.client import KazooClient

    zk = KazooClient(hosts=first.zookeeper)
    zk.start(timeout=10)
    try:
        errors_1 = list(cluster.partition("errors", 1).replicas)
        target = [b for b in (0, 1, 2) if b not in errors_1] + errors_1[:1]
        zk.create("/admin/reassign_partitions", json.dumps({"version": 1, "partitions": [
            {"topic": "errors", "partition": 1, "replicas": target}]}).encode(), makepath=True)
        wait_moved(cluster, first, "errors", 1, target)
        cluster.wait_for("/admin/reassign_partitions deleted", lambda: zk.exists("/admin/reassign_partitions") is None)
    finally:
        zk.stop()
        zk.close()


# -- only the controller, fenced by its epoch ------------------------------------------------------

def leader_and_epoch(via: ClusterBroker, topic: str, p: int = 0) -> tuple[int, int, list[int]]:
    """(leader, leader epoch, isr) from Metadata v9."""
    md = call(via, 3, 9, {"topics": [{"name": topic}], "allow_auto_topic_creation": False,
                          "include_cluster_authorized_operations": False,
                          "include_topic_authorized_operations": False})
    part = next(x for x in md.topics[0].partitions if x.partition_index == p)
    return part.leader_id, part.leader_epoch, sorted(part.isr_nodes)


def end_offsets_for_epochs(leader: ClusterBroker, topic: str, epochs: list[int]) -> list[tuple[str, int, int]]:
    """OffsetForLeaderEpoch v3 as a consumer asks it: (error, epoch, end offset) of each epoch."""
    resp = call(leader, 23, 3, {"replica_id": -1, "topics": [{"topic": topic, "partitions": [
        {"partition": 0, "current_leader_epoch": -1, "leader_epoch": e} for e in epochs]}]})
    return [(x.error_code.name, x.leader_epoch, x.end_offset) for x in resp.topics[0].partitions]


def test_removing_replicas_bumps_the_leader_epoch_and_only_the_controller_reassigns(
        cluster_factory: Any, tmp_path: Path) -> None:  # noqa: F811
    from confluent_kafka import ElectionType
    from confluent_kafka.admin import AdminClient

    cluster = cluster_factory(3, env={"ODRADEK_AUTO_LEADER_REBALANCE_ENABLE": "false"})
    cluster.create_topic("fence", 1, 3, MIN_ISR)
    part = cluster.wait_leader("fence", isr_size=3)
    controller = cluster.metadata().controller_id
    other = next(b for b in cluster.brokers if b.broker_id != controller)
    # another broker refuses the controller's calls with Kafka's NOT_CONTROLLER (top level for
    # AlterPartitionReassignments, each partition for ElectLeaders) and changes nothing
    refused = call(other, 45, 0, {"timeout": 30000, "topics": [{"name": "fence", "partitions": [
        {"partition_index": 0, "replicas": [part.leader]}]}]})
    assert (refused.error_code.name, refused.responses) == ("not_controller", ())
    elected = call(other, 43, 2, {"election_type": 0, "topic_partitions": [{"topic": "fence", "partitions": [0]}]})
    assert [(r.partition_id, r.error_code.name) for t in elected.replica_election_results
            for r in t.partition_result] == [(0, "not_controller")]
    assert not ongoing(other)
    # librdkafka's admin client, bootstrapped on that broker, sends ElectLeaders to the controller
    admin = AdminClient({"bootstrap.servers": other.bootstrap})
    answers = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition("fence", 0)]).result(30)
    (error,) = answers.values()
    assert error is not None and error.name() == "ELECTION_NOT_NEEDED", error

    leader = cluster.by_id(part.leader)
    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "enable.idempotence": True})
    for i in range(10):
        p.produce("fence", str(i).encode(), partition=0)
    assert p.flush(30) == 0
    before, epoch, isr = leader_and_epoch(other, "fence")
    assert before == leader.broker_id and len(isr) == 3
    removed = next(b for b in isr if b != before)
    target = [before, *[b for b in isr if b not in (before, removed)]]
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [{"topic": "fence", "partition": 0, "replicas": target}]}))
    # odradek's CLI through the non-controller: it finds the controller as the admin clients do
    out = odradek("partitions", "reassign", "--execute", "--reassignment-json-file", str(plan), "-b", other.bootstrap)
    assert "Successfully started partition reassignments for fence-0" in out, out
    wait_moved(cluster, other, "fence", 0, target)
    # the leader stayed, the ISR shrank: one more leader epoch, starting at the log end (Kafka's
    # controller bumps it when replicas leave the assignment, so the removed follower is fenced)
    cluster.wait_for("the new epoch on the leader", lambda: leader_and_epoch(leader, "fence")[1] == epoch + 1)
    assert leader_and_epoch(other, "fence") == (before, epoch + 1, sorted(target))
    for i in range(10, 15):
        p.produce("fence", str(i).encode(), partition=0)
    assert p.flush(30) == 0
    assert end_offsets_for_epochs(leader, "fence", [epoch, epoch + 1]) == [
        ("none", epoch, 10), ("none", epoch + 1, 15)]
    stale = call(leader, 1, 12, {"replica_id": removed, "max_wait": 0, "min_bytes": 1, "max_bytes": 1 << 20,
                                 "isolation_level": 0, "session_id": 0, "session_epoch": -1, "topics": [
                                     {"topic": "fence", "partitions": [
                                         {"partition": 0, "current_leader_epoch": epoch, "fetch_offset": 10,
                                          "last_fetched_epoch": -1, "log_start_offset": -1,
                                          "partition_max_bytes": 1 << 20}]}],
                                 "forgotten_topics_data": [], "rack_id": ""})
    assert stale.responses[0].partitions[0].error_code.name == "fenced_leader_epoch"
    assert [int(v) for _, v in read_all(other.bootstrap, "fence", 1)[0]] == list(range(15))


def test_a_controller_deposed_while_paused_writes_nothing(cluster_factory: Any) -> None:  # noqa: F811
    from confluent_kafka import ElectionType
    from confluent_kafka.admin import AdminClient
    from kazoo.client import KazooClient

    # no preferred-leader moves: the leadership the new controller decided stays while the test looks
    cluster = cluster_factory(3, env={"ODRADEK_AUTO_LEADER_REBALANCE_ENABLE": "false"})
    cluster.create_topic("paused", 1, 3, MIN_ISR)
    cluster.wait_leader("paused", isr_size=3)
    old = cluster.by_id(cluster.metadata().controller_id)
    others = [b for b in cluster.brokers if b is not old]
    zk = KazooClient(hosts=old.zookeeper)
    zk.start(timeout=10)
    try:
        old_epoch = int(zk.get("/controller_epoch")[0])
        old.pause()  # longer than the 2 s session: another broker becomes the controller
        cluster.wait_for("a new controller", lambda: json.loads(zk.get("/controller")[0])["brokerid"] != old.broker_id)
        cluster.wait_for("the paused broker out of the ISR", lambda: old.broker_id not in json.loads(
            zk.get("/brokers/topics/paused/partitions/0/state")[0])["isr"])
        new_epoch = int(zk.get("/controller_epoch")[0])
        assert new_epoch > old_epoch
        topic_before = zk.get("/brokers/topics/paused")
        state = json.loads(zk.get("/brokers/topics/paused/partitions/0/state")[0])
        # requests that reach the old controller while it sleeps: it reads them when it wakes up
        answers: dict[str, Any] = {}
        survivors = [b for b in state["isr"] if b != state["leader"]][:1]
        move = {"timeout": 30000, "topics": [{"name": "paused", "partitions": [
            {"partition_index": 0, "replicas": [state["leader"], *survivors]}]}]}
        elect = {"election_type": 1, "topic_partitions": [{"topic": "paused", "partitions": [0]}]}

        def ask(name: str, api_key: int, version: int, body: dict[str, Any]) -> None:
            try:
                answers[name] = call_port(old.port, api_key, version, body, 60)
            except Exception as exc:  # noqa: BLE001 - told by the assertion below
                answers[name] = exc

        asking = [threading.Thread(target=ask, args=("move", 45, 0, move)),
                  threading.Thread(target=ask, args=("elect", 43, 2, elect))]
        for t in asking:
            t.start()
        time.sleep(0.5)
        old.resume()
        for t in asking:
            t.join(60)
        assert answers["move"].error_code.name == "not_controller", answers
        assert [r.error_code.name for t in answers["elect"].replica_election_results for r in t.partition_result] == \
            ["not_controller"], answers
        time.sleep(2.0)  # the old controller's threads run on: nothing of theirs may land
        topic_after = zk.get("/brokers/topics/paused")
        assert (topic_after[0], topic_after[1].version) == (topic_before[0], topic_before[1].version)
        now = json.loads(zk.get("/brokers/topics/paused/partitions/0/state")[0])
        # the leader may take the woken broker back into the ISR; the leadership stays the new controller's
        assert (now["leader"], now["leader_epoch"], now["controller_epoch"]) == \
            (state["leader"], state["leader_epoch"], state["controller_epoch"]), (state, now)
        assert int(zk.get("/controller_epoch")[0]) == new_epoch
        assert json.loads(zk.get("/controller")[0])["brokerid"] != old.broker_id
    finally:
        zk.stop()
        zk.close()
    assert not ongoing(old)
    # the admin clients bootstrapped on the woken broker reach the new controller, once its
    # Metadata names it (librdkafka sends ElectLeaders to Metadata's controller, as Kafka's does)
    cluster.wait_for("the woken broker naming the new controller",
                     lambda: cluster.metadata(via=old).controller_id not in (-1, old.broker_id))
    admin = AdminClient({"bootstrap.servers": old.bootstrap})
    answer = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition("paused", 0)]).result(30)
    (error,) = answer.values()
    assert error is None or error.name() in ("ELECTION_NOT_NEEDED", "PREFERRED_LEADER_NOT_AVAILABLE"), error
    assert reassign(old, "paused", {0: [b.broker_id for b in others]}) == {0: "none"}
    wait_moved(cluster, others[0], "paused", 0, [b.broker_id for b in others])


def test_every_write_of_a_deposed_controller_is_refused_by_the_epoch_fence(zookeeper: Any) -> None:  # noqa: F811
    """The paused controller's case made exact: controller A is deposed while it still believes it
    is the controller (it slept through its session's end), and each kind of write it makes
    (partition state, reassignment, election, /admin/reassign_partitions) is refused by the check
    of /controller_epoch's zkVersion in the same ZooKeeper transaction; nothing of it lands."""
    from odradek.cluster.controller import Controller
    from odradek.cluster.elections import UNCLEAN, elect
    from odradek.cluster.reassignment import REASSIGN_PATH
    from odradek.cluster.reassignment import reassign as reassign_call
    from odradek.cluster.zk import ControllerMoved, LeaderAndIsr, ZkMetadataStore
    from odradek.config import BrokerConfig

    connect = zookeeper.connect(f"fence-{time.time_ns()}")
    stores = [ZkMetadataStore(connect, 2000) for _ in range(2)]
    try:
        for store in stores:
            store.start()
            store.ops.create(f"/brokers/ids/{stores.index(store)}", b"{}", ephemeral=True)
        a = Controller(stores[0], 0, BrokerConfig())  # not started: no thread acts on the events
        a._try_become_controller()
        assert a.active and a.epoch == 1
        stores[0].create_topic("t", [[0, 1]], {})
        fence = a.fence()
        assert fence is not None
        # A's session ends (here: /controller deleted) and B takes over, while A sleeps on
        stores[1].ops.delete("/controller")
        b = Controller(stores[1], 1, BrokerConfig())
        b._try_become_controller()
        assert b.active and b.epoch == 2 and a.active
        zk = stores[1].ops
        topic_before = zk.get("/brokers/topics/t")
        state_before = zk.get("/brokers/topics/t/partitions/0/state")
        # A wakes up and acts on what it knew
        with pytest.raises(ControllerMoved):
            reassign_call(stores[0], "t", {0: [1]}, {0, 1}, fence=fence)
        with pytest.raises(ControllerMoved):
            elect(stores[0], "t", 0, UNCLEAN, {1}, fence=fence, controller_epoch=a.epoch)
        with pytest.raises(ControllerMoved):
            stores[0].write_state("t", 0, LeaderAndIsr(1, 5, (1,), a.epoch, state_before[1].version), fence=fence)
        zk.create(REASSIGN_PATH, json.dumps({"version": 1, "partitions": [
            {"topic": "t", "partition": 0, "replicas": [1]}]}).encode(), makepath=True)
        a._write("t", 0, LeaderAndIsr(1, 5, (1,), a.epoch, state_before[1].version), "a stale decision")
        assert not a.active  # the refusal told A it is no longer the controller
        a.active = True
        a.reassignments.pick_up_legacy()
        assert not a.active
        assert zk.get("/brokers/topics/t") == topic_before
        assert zk.get("/brokers/topics/t/partitions/0/state") == state_before
        assert zk.exists(REASSIGN_PATH) is not None  # left for the new controller
        # the new controller's writes go through
        assert reassign_call(stores[1], "t", {0: [1, 0]}, {0, 1}, fence=b.fence()) == {0: None}
    finally:
        for store in stores:
            store.stop()


# -- Kafka's own tools ---------------------------------------------------------------------------

def kafka_tool(main: str, *args: str) -> str:
    java = shutil.which("java")
    assert java is not None, "no java on PATH (JDK 17 is needed)"
    assert any(LIB.glob("kafka-tools-*.jar")), "tests/java/lib is empty (./dev test fills it)"
    done = subprocess.run([java, *JVM_FLAGS, "-cp", str(LIB / "*"), main, *args], capture_output=True, text=True,
                          timeout=120, check=False, env={**os.environ})
    assert done.returncode == 0, f"{main} {' '.join(args)} exited {done.returncode}:\n{done.stdout[-2000:]}\n" \
        f"{done.stderr[-3000:]}"
    return done.stdout


def test_kafka_tools_create_with_replica_assignment_and_reassign(cluster_factory: Any, tmp_path: Path) -> None:  # noqa: F811
    cluster = cluster_factory(3)
    # a broker that is not the controller: Kafka's admin client sends AlterPartitionReassignments
    # and ElectLeaders on to the controller named in Metadata
    controller = cluster.metadata().controller_id
    bootstrap = next(b for b in cluster.brokers if b.broker_id != controller).bootstrap
    kafka_tool("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", bootstrap, "--create", "--topic", "manual",
               "--replica-assignment", "0:1,1:2")
    cluster.wait_for("manual on every broker", lambda: all(
        "manual" in cluster.metadata("manual", via=b).topics for b in cluster.brokers))
    parts = cluster.metadata("manual").topics["manual"].partitions
    assert [list(parts[p].replicas) for p in (0, 1)] == [[0, 1], [1, 2]]
    topics = tmp_path / "topics.json"
    topics.write_text(json.dumps({"version": 1, "topics": [{"topic": "manual"}]}))
    out = odradek("partitions", "reassign", "--generate", "--topics-to-move-json-file", str(topics),
                  "--broker-list", "0,2", "-b", bootstrap)
    current, proposed = (json.loads(line) for line in out.splitlines() if line.startswith("{"))
    assert [e["replicas"] for e in current["partitions"]] == [[0, 1], [1, 2]]
    assert sorted(sorted(e["replicas"]) for e in proposed["partitions"]) == [[0, 2], [0, 2]]
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": "manual", "partition": 0, "replicas": [2, 0]},
        {"topic": "manual", "partition": 1, "replicas": [0, 2]}]}))
    reassign_cmd = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand"
    out = kafka_tool(reassign_cmd, "--bootstrap-server", bootstrap, "--reassignment-json-file", str(plan), "--execute",
                     "--throttle", "50000000")
    assert "The inter-broker throttle limit was set to 50000000 B/s" in out, out
    assert "Successfully started partition reassignments for manual-0,manual-1" in out, out

    def verified() -> bool:
        out = kafka_tool(reassign_cmd, "--bootstrap-server", bootstrap, "--reassignment-json-file", str(plan),
                         "--verify")
        return "Reassignment of partition manual-0 is completed" in out and \
            "Reassignment of partition manual-1 is completed" in out

    cluster.wait_for("kafka-reassign-partitions --verify: completed", verified, 60)
    parts = cluster.metadata("manual").topics["manual"].partitions
    assert [list(parts[p].replicas) for p in (0, 1)] == [[2, 0], [0, 2]]
    out = kafka_tool("org.apache.kafka.tools.LogDirsCommand", "--bootstrap-server", bootstrap, "--describe",
                     "--topic-list", "manual")
    described = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    held = {(b["broker"], p["partition"]) for b in described["brokers"] for d in b["logDirs"] for p in d["partitions"]}
    assert held == {(2, "manual-0"), (0, "manual-0"), (0, "manual-1"), (2, "manual-1")}
    kafka_tool("org.apache.kafka.tools.LeaderElectionCommand", "--bootstrap-server", bootstrap,
               "--election-type", "preferred", "--all-topic-partitions")
    cluster.wait_for("preferred leaders", lambda: [p.leader for p in sorted(
        cluster.metadata("manual").topics["manual"].partitions.values(), key=lambda p: p.id)] == [2, 0])
    # new partitions placed by hand: kafka-topics --alter gives the whole assignment, old partitions first
    kafka_tool("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", bootstrap, "--alter", "--topic", "manual",
               "--partitions", "3", "--replica-assignment", "2:0,0:2,1:2")
    cluster.wait_for("manual-2 on 1,2", lambda: [list(p.replicas) for p in sorted(
        cluster.metadata("manual").topics["manual"].partitions.values(), key=lambda p: p.id)] == [[2, 0], [0, 2], [1, 2]])


# -- throttles ----------------------------------------------------------------------------------

def test_throttled_move_takes_as_long_as_the_throttle_says(cluster_factory: Any, grow: Any, tmp_path: Path) -> None:  # noqa: F811
    cluster = cluster_factory(3)
    cluster.create_topic("slow", 1, 2)
    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 20})
    for i in range(3000):
        p.produce("slow", os.urandom(1000), partition=0)  # ~3 MB that do not compress
    assert p.flush(30) == 0
    grow(cluster, 3)
    before = list(cluster.partition("slow").replicas)
    target = [3, before[0]]
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [{"topic": "slow", "partition": 0, "replicas": target}]}))
    rate = 600_000
    bootstrap = cluster.brokers[0].bootstrap
    started = time.monotonic()
    out = odradek("partitions", "reassign", "--execute", "--reassignment-json-file", str(plan),
                  "--throttle", str(rate), "-b", bootstrap)
    assert "Successfully started partition reassignments for slow-0" in out, out
    wait_moved(cluster, cluster.brokers[0], "slow", 0, target, timeout=60)
    took = time.monotonic() - started
    size = call(cluster.by_id(3), 35, 4, {"topics": None}).results[0].topics[0].partitions[0].partition_size
    assert size > 3_000_000
    # one second of burst, then the rate; the quota is checked before each fetch, so one fetch
    # (replica.fetch.max.bytes, 1 MiB) may overshoot it, as in Kafka: ~3 MB at 600 kB/s >= ~2 s
    assert took >= (size - rate - 1_048_576) / rate * 0.9, f"{size} bytes moved in {took:.1f} s at {rate} B/s"
    configs = call(cluster.by_id(3), 32, 4, {"resources": [
        {"resource_type": 4, "resource_name": "3", "configuration_keys": ["follower.replication.throttled.rate"]}],
        "include_synonyms": False, "include_documentation": False}).results[0].configs
    assert [(c.name, c.value) for c in configs] == [("follower.replication.throttled.rate", str(rate))]
    out = odradek("partitions", "reassign", "--verify", "--reassignment-json-file", str(plan), "-b", bootstrap)
    assert "Reassignment of partition slow-0 is completed." in out and "Clearing broker-level throttles" in out, out
    configs = call(cluster.by_id(3), 32, 4, {"resources": [
        {"resource_type": 4, "resource_name": "3", "configuration_keys": ["follower.replication.throttled.rate"]}],
        "include_synonyms": False, "include_documentation": False}).results[0].configs
    assert not configs


# -- the single-node broker --------------------------------------------------------------------

def test_single_node_answers_the_admin_apis_as_a_one_broker_kafka(broker_factory: Any) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    b = broker_factory()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    me = next(iter(admin.list_topics(timeout=10).brokers))
    admin.create_topics([NewTopic("assigned", num_partitions=2, replica_assignment=[[me], [me]])])["assigned"].result(10)
    assert len(admin.list_topics("assigned", timeout=10).topics["assigned"].partitions) == 2
    with pytest.raises(Exception, match="INVALID_REPLICA_ASSIGNMENT"):
        admin.create_topics([NewTopic("elsewhere", num_partitions=1, replica_assignment=[[me + 1]])])["elsewhere"].result(10)
    p = Producer({"bootstrap.servers": b.bootstrap})
    p.produce("assigned", b"x" * 1000, partition=1)
    assert p.flush(10) == 0
    dirs = call(b, 35, 4, {"topics": [{"topic": "assigned", "partitions": [0, 1]}]})
    (result,) = dirs.results
    assert Path(result.log_dir) == b.data_dir.resolve() and result.total_bytes > result.usable_bytes > 0
    sizes = {p.partition_index: p.partition_size for t in result.topics for p in t.partitions}
    assert sizes[0] == 0 and sizes[1] > 1000
    elected = call(b, 43, 2, {"election_type": 0, "topic_partitions": [{"topic": "assigned", "partitions": [0]}]})
    assert elected.replica_election_results[0].partition_result[0].error_code.name == "election_not_needed"
    assert call(b, 43, 2, {"election_type": 1, "topic_partitions": None}).replica_election_results == ()
    moved = call(b, 45, 0, {"timeout": 30000, "topics": [{"name": "assigned", "partitions": [
        {"partition_index": 0, "replicas": [me]}, {"partition_index": 1, "replicas": [me, me + 1]}]}]})
    assert [p.error_code.name for p in moved.responses[0].partitions] == ["none", "invalid_replica_assignment"]
    assert call(b, 46, 0, {"timeout": 30000, "topics": None}).topics == ()


# -- the local cluster grows ----------------------------------------------------------------------

def test_cluster_up_adds_brokers_to_a_running_local_cluster(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from odradek.cli.cluster_up import cluster_app, free_port

    state = tmp_path / "local"
    pids: dict[str, int] = {}
    first = _two_free_ports()
    runner = CliRunner()
    env = {"ODRADEK_ZOOKEEPER_SESSION_TIMEOUT_MS": "2000"}
    up = runner.invoke(cluster_app, ["up", "--brokers", "1", "--dir", str(state), "--zookeeper-port",
                                     str(free_port()), "--port", str(first)], env=env)
    try:
        assert up.exit_code == 0, up.output
        grown = runner.invoke(cluster_app, ["up", "--brokers", "2", "--dir", str(state)], env=env)
        assert grown.exit_code == 0, grown.output
        assert "added broker(s) 1: the cluster has 2 broker(s)" in grown.output
        assert f"127.0.0.1:{first},127.0.0.1:{first + 1}" in grown.output
        pids = json.loads((state / "cluster.json").read_text())["pids"]
        assert sorted(pids) == ["broker-0", "broker-1", "zookeeper"]
        again = runner.invoke(cluster_app, ["up", "--brokers", "2", "--dir", str(state)], env=env)
        assert again.exit_code == 1 and "already running with 2 broker(s)" in again.output
    finally:
        down = runner.invoke(cluster_app, ["down", "--dir", str(state)])
    assert down.exit_code == 0, down.output
    for pid in pids.values():  # down stops every recorded pid, the added broker's too
        with pytest.raises(OSError):
            os.kill(pid, 0)


def _two_free_ports() -> int:
    """The first of two free ports in a row below the kernel's ephemeral range: a port from
    free_port() is in that range, where a client connection's local port could take the second
    before broker 1 listens on it (CI saw "Address already in use" so)."""
    import random

    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(10000, max(low - 2, 10001))
        if _port_free(port) and _port_free(port + 1):
            return port
    raise AssertionError("no two free ports in a row below the ephemeral range")


def _port_free(port: int) -> bool:
    import socket

    try:
        socket.create_server(("127.0.0.1", port)).close()
    except OSError:
        return False
    return True
