"""A deposed transaction coordinator's markers are refused (issue 18 follow-up).

Every end-transaction marker carries its coordinator's epoch (the __transaction_state
partition's leader epoch when the coordinator loaded it), and a partition leader remembers
the epoch of each producer's last marker. A marker with an older one comes from a
coordinator that has since been replaced: Kafka's ProducerAppendInfo.checkCoordinatorEpoch
refuses it with TRANSACTION_COORDINATOR_FENCED. Before, odradek took it, and an ABORT from
the old coordinator aborted the open transaction the new coordinator was about to commit:
the producer's records vanished from read_committed consumers although its commit succeeded.

Real ZooKeeper and three `odradek serve` processes, librdkafka's transactional producer; the
deposed coordinator's marker is a raw WriteTxnMarkers, as that broker would send it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
from confluent_kafka import Producer
from conftest import read_messages, unique
from kio.schema.errors import ErrorCode as E
from test_cluster_txn import txn_coordinator
from test_fault_coordinator_isr import call
from test_txn_markers import commit

if TYPE_CHECKING:
    from cluster_fixtures import Cluster

pytest_plugins = ["cluster_fixtures"]

pytestmark = pytest.mark.timeout(300)

ENV = {"ODRADEK_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "3",
       "ODRADEK_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "3"}
DESCRIBE_PRODUCERS, WRITE_TXN_MARKERS = 61, 27
RETRIABLE = (E.not_leader_or_follower, E.unknown_topic_or_partition, E.request_timed_out)


def leader_bootstrap(cluster: Cluster, topic: str) -> str:
    part = cluster.wait_leader(topic, timeout=60)
    return cluster.by_id(part.leader).bootstrap


def producer_entry(cluster: Cluster, topic: str) -> Any:
    """DescribeProducers v0 of topic-0 at its leader: the one producer that wrote there."""
    def ask() -> Any:
        part = call(leader_bootstrap(cluster, topic), DESCRIBE_PRODUCERS, 0,
                    topics=[{"name": topic, "partition_indexes": [0]}]).topics[0].partitions[0]
        if part.error_code in RETRIABLE:  # the leadership moved meanwhile: ask the new leader
            return None
        assert part.error_code == E.none, part
        assert len(part.active_producers) == 1, part
        return part.active_producers[0]

    return cluster.wait_for(f"the producer state of {topic}-0 at its leader", ask, timeout=60)


def write_marker(cluster: Cluster, topic: str, entry: Any, coordinator_epoch: int) -> E:
    """WriteTxnMarkers v1 (an ABORT) to topic-0's leader, as a coordinator of `coordinator_epoch` sends it."""
    def send() -> tuple[E] | None:  # a tuple: NONE is falsy, and an answer all the same
        response = call(leader_bootstrap(cluster, topic), WRITE_TXN_MARKERS, 1, markers=[{
            "producer_id": entry.producer_id, "producer_epoch": entry.producer_epoch, "transaction_result": False,
            "topics": [{"name": topic, "partition_indexes": [0]}], "coordinator_epoch": coordinator_epoch}])
        error = E(response.markers[0].topics[0].partitions[0].error_code)
        return None if error in RETRIABLE else (error,)

    answered: tuple[E] = cluster.wait_for(f"an answer to the marker on {topic}-0", send, timeout=60)
    return answered[0]


def test_a_deposed_coordinators_marker_is_fenced_and_aborts_nothing(cluster_factory: Any) -> None:
    cluster: Cluster = cluster_factory(3, env=ENV)
    tid, topic = unique("tid"), unique("fenced")
    cluster.create_topic(topic)
    first = txn_coordinator(cluster, tid)
    cluster.wait_for("__transaction_state fully replicated", lambda: all(
        len(part.isrs) == 3 for part in cluster.metadata("__transaction_state").topics[
            "__transaction_state"].partitions.values()), timeout=60)
    p = Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": tid, "linger.ms": 2,
                  "transaction.timeout.ms": 60_000})
    p.init_transactions(60)
    p.begin_transaction()
    p.produce(topic, value=b"a", partition=0)
    commit(p, 60)
    deposed_epoch = producer_entry(cluster, topic).coordinator_epoch
    assert deposed_epoch >= 0, "DescribeProducers names the coordinator epoch of the producer's last marker"

    # the coordinator dies; the broker taking its __transaction_state partition coordinates at a newer epoch
    cluster.by_id(first).kill()
    cluster.wait_for("a new transaction coordinator", lambda: txn_coordinator(cluster, tid) != first, timeout=60)
    p.begin_transaction()
    p.produce(topic, value=b"b", partition=0)
    commit(p, 120)
    current = producer_entry(cluster, topic)
    assert current.coordinator_epoch > deposed_epoch, (current, deposed_epoch)

    # a transaction is open; the old coordinator's ABORT for the producer reaches the partition leader
    p.begin_transaction()
    p.produce(topic, value=b"c", partition=0)
    assert p.flush(60) == 0
    open_txn = producer_entry(cluster, topic)
    assert open_txn.current_txn_start_offset >= 0, open_txn
    assert write_marker(cluster, topic, open_txn, deposed_epoch) == E.transaction_coordinator_fenced
    assert producer_entry(cluster, topic).current_txn_start_offset == open_txn.current_txn_start_offset
    commit(p, 120)
    deadline = time.monotonic() + 60
    values: list[bytes] = []
    while values != [b"a", b"b", b"c"] and time.monotonic() < deadline:  # bounded: the HW may trail a moment
        values = [m.value() for m in read_messages(leader_bootstrap(cluster, topic), topic, 1, "read_committed")]
    assert values == [b"a", b"b", b"c"]
