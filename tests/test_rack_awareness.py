"""Rack awareness: broker.rack, rack-aware replica placement and follower fetching (KIP-392).

Three real brokers in two racks (0 and 1 in rack-a, 2 in rack-b) on a real ZooKeeper:
topics created without an assignment get replicas in distinct racks, and a confluent-kafka
consumer with client.rack=rack-b reads a partition led by broker 0 from broker 2, the
replica in its rack (broker 2's /metrics counts the bytes it served; a follower serves no
other fetches), and gets every record. `odradek cluster decommission` onto a new broker keeps
the replicas of every partition in both racks.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cluster_fixtures
import pytest
from cluster_fixtures import FAST_ENV, ROOT, Cluster, ClusterBroker, ZooKeeper
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import NewPartitions, NewTopic
from conftest import unique

from odradek.cli.cluster_up import wait_for_port

pytest_plugins = ["cluster_fixtures"]

pytestmark = pytest.mark.timeout(300)  # a bound on a hang; the racked cluster alone took 73 s to start at load 10

RACKS = {0: "rack-a", 1: "rack-a", 2: "rack-b"}


@pytest.fixture(scope="module", autouse=True)
def patient_start() -> Iterator[None]:
    """A broker of a loaded 2-core machine may take more than the fixtures' 20 s to listen."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cluster_fixtures, "wait_for_port", functools.partial(wait_for_port, timeout=90))
        yield


SELECTOR = "org.apache.kafka.common.replica.RackAwareReplicaSelector"


@pytest.fixture(scope="module")
def racked(zookeeper: ZooKeeper, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("racked")
    connect = zookeeper.connect(f"odradek-racks-{time.time_ns()}")
    brokers = []
    for i, rack in RACKS.items():
        # a 10 s replica lag: a follower of a loaded machine stays in the ISR, so it stays the preferred one
        env = {**FAST_ENV, "ODRADEK_BROKER_RACK": rack, "ODRADEK_REPLICA_SELECTOR_CLASS": SELECTOR,
               "ODRADEK_METRICS_PORT": "{port2}", "ODRADEK_REPLICA_LAG_TIME_MAX_MS": "10000"}
        brokers.append(ClusterBroker(i, Path(base) / f"broker-{i}", connect, env))
    try:
        for b in brokers:
            b.start()
        cluster = Cluster(brokers)
        cluster.wait_for("3 live brokers", lambda: len(cluster.metadata().brokers) == 3)
        yield cluster
    finally:
        for b in brokers:
            b.kill()


def bytes_out(broker: ClusterBroker, topic: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{broker.port2}/metrics", timeout=5).read().decode()
    found = re.search(rf'^kafka_server_brokertopicmetrics_bytesout_total{{[^}}]*topic="{re.escape(topic)}"[^}}]*}} (\S+)$',
                      text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_brokers_register_their_rack(racked: Cluster, zookeeper: ZooKeeper) -> None:
    from kazoo.client import KazooClient

    described = racked.admin().describe_cluster().result(15)
    assert {n.id: n.rack for n in described.nodes} == RACKS
    chroot = racked.brokers[0].zookeeper.partition("/")[2]
    zk = KazooClient(hosts=f"127.0.0.1:{zookeeper.port}/{chroot}")
    zk.start(timeout=10)
    try:
        registered = {i: json.loads(zk.get(f"/brokers/ids/{i}")[0])["rack"] for i in RACKS}
    finally:
        zk.stop()
        zk.close()
    assert registered == RACKS  # Kafka's field of /brokers/ids/<id>, read by Kafka's tools


def test_replicas_of_every_partition_are_in_distinct_racks(racked: Cluster) -> None:
    topic = unique("spread")
    racked.create_topic(topic, partitions=12, rf=2)
    partitions = racked.metadata(topic).topics[topic].partitions
    assert len(partitions) == 12
    for p in partitions.values():
        assert {RACKS[b] for b in p.replicas} == {"rack-a", "rack-b"}, (p.id, p.replicas)
    # the preferred leaders (first replicas) are spread evenly, rack by rack in turn
    leaders = [p.replicas[0] for p in partitions.values()]
    assert sorted(leaders.count(b) for b in RACKS) == [4, 4, 4]
    # CreatePartitions places the new partitions rack-aware too
    racked.admin().create_partitions([NewPartitions(topic, 16)])[topic].result(60)
    grown = racked.wait_for("16 partitions", lambda: (
        t := racked.metadata(topic).topics[topic]) and len(t.partitions) == 16 and t)
    for p in grown.partitions.values():
        assert {RACKS[b] for b in p.replicas} == {"rack-a", "rack-b"}, (p.id, p.replicas)


def test_consumer_fetches_from_the_replica_in_its_rack(racked: Cluster) -> None:
    topic = unique("follow")
    fs = racked.admin().create_topics([NewTopic(topic, num_partitions=1, replica_assignment=[[0, 1, 2]])],
                                      operation_timeout=30)
    fs[topic].result(60)
    racked.wait_leader(topic, isr_size=3)
    count = 2000
    producer = Producer({"bootstrap.servers": racked.bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 5})
    for i in range(count):
        producer.produce(topic, value=str(i).encode())
    assert producer.flush(60) == 0
    leader, far, near = racked.brokers
    racked.wait_leader(topic, isr_size=3)
    served_before = bytes_out(near, topic)
    consumer = Consumer({"bootstrap.servers": racked.bootstrap, "group.id": unique("g"), "client.rack": "rack-b",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "enable.partition.eof": True, "fetch.wait.max.ms": 100,
                         "max.partition.fetch.bytes": 4096})
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[int] = []
    deadline = time.monotonic() + 60
    try:
        while len(values) < count and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                if msg.error():
                    assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                    continue
                values.append(int(msg.value()))
    finally:
        consumer.close()
    assert values == list(range(count))  # complete, in order, nothing twice
    served = bytes_out(near, topic) - served_before
    total = sum(len(str(i)) for i in range(count))
    # broker 2 is a follower: every byte it served went to the consumer, at least all the records
    assert served >= total, (served, total)
    assert bytes_out(far, topic) == 0  # the other follower, in rack-a, served nothing
    assert racked.partition(topic).leader == leader.broker_id


def test_decommission_onto_a_new_broker_keeps_replicas_in_distinct_racks(racked: Cluster, tmp_path: Path) -> None:
    """Broker 3 joins in rack-b with nothing on it, then broker 0 (rack-a) is decommissioned: the
    new broker is the least loaded, but a partition on 0 and 2 takes broker 1, the other broker of
    rack-a, so that its replicas stay in both racks (rack-unaware, it would get 2 and 3, both rack-b)."""
    topic = unique("drain")
    layout = [[0, 2], [2, 0], [1, 2], [0, 2]]
    fs = racked.admin().create_topics([NewTopic(topic, num_partitions=4, replica_assignment=layout)],
                                      operation_timeout=30)
    fs[topic].result(60)
    for p in range(4):
        racked.wait_leader(topic, p, isr_size=2)
    racks = {**RACKS, 3: "rack-b"}
    new = ClusterBroker(3, tmp_path / "broker-3", racked.brokers[0].zookeeper,
                        {**FAST_ENV, "ODRADEK_BROKER_RACK": "rack-b", "ODRADEK_REPLICA_LAG_TIME_MAX_MS": "10000"})
    try:
        new.start()
        racked.wait_for("4 live brokers", lambda: len(racked.metadata().brokers) == 4)
        # --generate over 1 (rack-a), 2 and 3 (rack-b): every partition keeps broker 1, the only one of rack-a
        topics = tmp_path / "topics.json"
        topics.write_text(json.dumps({"version": 1, "topics": [{"topic": topic}]}))
        out = odradek("partitions", "reassign", "--generate", "--topics-to-move-json-file", str(topics),
                      "--broker-list", "1,2,3", "-b", racked.brokers[1].bootstrap)
        assert "rack-aware: rack rack-a: 1; rack rack-b: 2,3" in out, out
        proposed = [json.loads(line) for line in out.splitlines() if line.startswith("{")][1]["partitions"]
        assert [sorted(racks[b] for b in e["replicas"]) for e in proposed] == [["rack-a", "rack-b"]] * 4, out
        out = odradek("cluster", "decommission", "0", "--yes", "-b", racked.brokers[1].bootstrap, "--timeout", "90")
        assert "rack-aware: rack rack-a: 0,1; rack rack-b: 2,3" in out, out
        assert "broker 0 holds no replicas any more: it can be stopped" in out, out
        moved = racked.metadata(topic).topics[topic].partitions
        assert {p: list(moved[p].replicas) for p in range(4)} == {0: [2, 1], 1: [2, 1], 2: [1, 2], 3: [2, 1]}
        for name, t in racked.metadata().topics.items():  # every topic of the module, __consumer_offsets too
            for part in t.partitions.values():
                assert 0 not in part.replicas, (name, part.id, part.replicas)
                if len(part.replicas) > 1:
                    assert {racks[b] for b in part.replicas} == {"rack-a", "rack-b"}, (name, part.id, part.replicas)
    finally:
        new.kill()


def odradek(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "odradek", *args], capture_output=True, text=True, timeout=150,
                          cwd=ROOT, check=False)
    assert done.returncode == 0, f"odradek {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr
