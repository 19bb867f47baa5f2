"""Transaction markers are retried until they land (issue 18).

After PrepareCommit the coordinator sends a COMMIT marker to every partition's leader
and retries it, as Kafka's TransactionMarkerChannelManager does, for as long as it
coordinates the transactional id: a leader that stops answering (SIGSTOP) is given up
on when its partition's leadership moves, and a partition with no other replica waits
for its leader to come back, however long. Before, the coordinator gave up after
max(transaction.timeout.ms, 30 s) and left the id in PrepareCommit (CONCURRENT_TRANSACTIONS
to every EndTxn, InitProducerId and AddPartitionsToTxn) until its __transaction_state
partition was loaded again.

Real ZooKeeper and three `odradek serve` processes (tests/cluster_fixtures.py), librdkafka.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import NewTopic
from conftest import read_messages, unique
from test_cluster_txn import txn_coordinator

if TYPE_CHECKING:
    from cluster_fixtures import Cluster

pytest_plugins = ["cluster_fixtures"]

pytestmark = pytest.mark.timeout(300)

ENV = {"ODRADEK_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "3"}
PAUSE_S = 35.0  # longer than the 30 s the coordinator used to give the markers


def committed_values(bootstrap: str, topic: str) -> list[bytes]:
    return [m.value() for m in read_messages(bootstrap, topic, 1, "read_committed", timeout=20)]


def commit(p: Producer, timeout: float) -> None:
    """commit_transaction as an application retries it (a retriable error: call it again)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            p.commit_transaction(max(deadline - time.monotonic(), 1))
            return
        except KafkaException as exc:
            if not exc.args[0].retriable() or time.monotonic() > deadline:
                raise


def bystander(cluster: Cluster, tid: str) -> tuple[int, int]:
    """(the coordinator of `tid`, a broker that is neither it nor the controller: the one to stop)."""
    coordinator = txn_coordinator(cluster, tid)
    controller = cluster.metadata().controller_id
    return coordinator, next(b for b in (0, 1, 2) if b not in (coordinator, controller))


def open_transaction(cluster: Cluster, tid: str, topics: list[str]) -> tuple[Producer, list[bytes]]:
    """A librdkafka transactional producer whose open transaction holds ten records on partition 0
    of each topic, all acknowledged; the records, in order."""
    p = Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": tid, "linger.ms": 2,
                  "transaction.timeout.ms": 30_000})
    p.init_transactions(60)
    p.begin_transaction()
    expected = [b"v%d" % i for i in range(10)]
    for v in expected:
        for topic in topics:
            p.produce(topic, value=v, partition=0)
    assert p.flush(30) == 0
    return p, expected


def test_commit_markers_are_retried_until_the_leaders_take_them(cluster_factory: Any) -> None:
    cluster: Cluster = cluster_factory(3, env=ENV)
    tid = unique("tid")
    coordinator, stopped = bystander(cluster, tid)
    others = [b for b in (0, 1, 2) if b != stopped]
    alone, moving = unique("alone"), unique("moving")  # one replica on `stopped`; three, led by it
    fs = cluster.admin().create_topics([NewTopic(alone, num_partitions=1, replica_assignment=[[stopped]]),
                                        NewTopic(moving, num_partitions=1, replica_assignment=[[stopped, *others]])],
                                       operation_timeout=10)
    for f in fs.values():
        f.result(15)
    for topic in (alone, moving):
        cluster.wait_leader(topic, isr_size=1 if topic == alone else 3)
    p, expected = open_transaction(cluster, tid, [alone, moving])
    live = ",".join(cluster.by_id(b).bootstrap for b in others)

    cluster.by_id(stopped).pause()
    paused_at = time.monotonic()
    outcome: list[BaseException | None] = []

    def run_commit() -> None:
        try:
            commit(p, 150)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    committer = threading.Thread(target=run_commit, daemon=True)
    try:
        committer.start()
        # the replicated partition's leadership moves: its marker goes to the new leader meanwhile
        cluster.wait_leader(moving, not_in=(stopped,), timeout=30)
        cluster.wait_for(f"the committed records of {moving} while broker {stopped} is stopped",
                         lambda: committed_values(live, moving) == expected, timeout=25)
        time.sleep(max(PAUSE_S - (time.monotonic() - paused_at), 0))
        assert committed_values(live, moving) == expected
    finally:
        cluster.by_id(stopped).resume()
    committer.join(150)
    assert outcome == [None], f"commit_transaction: {outcome}"
    # the partition that had no other replica gets its marker once its leader is back
    cluster.wait_leader(alone, timeout=60)
    cluster.wait_for(f"the committed records of {alone} after broker {stopped} resumed",
                     lambda: committed_values(cluster.bootstrap, alone) == expected, timeout=60)
    logs = cluster.by_id(coordinator).logs()
    assert logs.count(f"marker for {alone}-0 keeps failing") == 1, "one line for a partition, not one per attempt"
    # the transactional id is usable again: the next transaction commits
    p.begin_transaction()
    for topic in (alone, moving):
        p.produce(topic, value=b"next", partition=0)
    commit(p, 60)
    for topic in (alone, moving):
        assert committed_values(cluster.bootstrap, topic) == [*expected, b"next"]


def test_a_new_coordinator_resends_the_markers_of_a_prepared_commit(cluster_factory: Any) -> None:
    """The coordinator dies with a COMMIT marker not yet written: the broker that takes its
    __transaction_state partition over loads PrepareCommit and sends the marker itself."""
    cluster: Cluster = cluster_factory(3, env=ENV)
    tid = unique("tid")
    coordinator, stopped = bystander(cluster, tid)
    topic = unique("alone")
    cluster.admin().create_topics([NewTopic(topic, num_partitions=1, replica_assignment=[[stopped]])],
                                  operation_timeout=10)[topic].result(15)
    cluster.wait_leader(topic)
    cluster.wait_for("__transaction_state fully replicated", lambda: all(
        len(part.isrs) == 3 for part in cluster.metadata("__transaction_state").topics[
            "__transaction_state"].partitions.values()))
    p, expected = open_transaction(cluster, tid, [topic])
    first = cluster.by_id(coordinator)
    cluster.by_id(stopped).pause()
    try:
        commit(p, 60)  # answered once PrepareCommit is written and the marker has been tried a while
        assert f"marker for {topic}-0 keeps failing" in first.logs()
        first.kill()
        successor = next(b for b in cluster.brokers if b.broker_id not in (coordinator, stopped))
        cluster.wait_for(f"broker {successor.broker_id} to complete the prepared commit",
                         lambda: f"{tid} was PrepareCommit when the coordinator stopped" in successor.logs(),
                         timeout=60)
    finally:
        cluster.by_id(stopped).resume()
    cluster.wait_leader(topic, timeout=60)
    cluster.wait_for(f"the committed records of {topic}",
                     lambda: committed_values(cluster.bootstrap, topic) == expected, timeout=60)
    p.begin_transaction()
    p.produce(topic, value=b"next", partition=0)
    commit(p, 60)
    assert committed_values(cluster.bootstrap, topic) == [*expected, b"next"]
