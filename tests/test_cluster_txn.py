"""Transactions in cluster mode: a real ZooKeeper, three broker processes, SIGKILL.

The transaction coordinator of an id is the leader of its __transaction_state
partition (replicated like __consumer_offsets); markers reach partitions led
elsewhere through WriteTxnMarkers. Killing the coordinator mid-transaction moves
the id to a new leader, which replays the partition and finishes the job.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import TYPE_CHECKING, Any

import pytest
from confluent_kafka import Producer
from conftest import unique
from kio.schema.errors import ErrorCode as E
from test_transactions import read_to_end, values

from odradek.protocol.build import build
from odradek.protocol.framing import decode_response, encode_request, request_type

if TYPE_CHECKING:
    from cluster_fixtures import Cluster

pytest_plugins = ["cluster_fixtures"]

pytestmark = pytest.mark.timeout(240)

ENV = {"ODRADEK_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "3"}


def txn_coordinator(cluster: Cluster, txn_id: str) -> int:
    """FindCoordinator(key_type=TRANSACTION) as a client asks it, through any live broker."""
    deadline = time.monotonic() + 60
    while True:
        for b in cluster.brokers:
            if not b.alive:
                continue
            try:
                with socket.create_connection(("127.0.0.1", b.port), timeout=5) as s:
                    s.sendall(encode_request(10, 4, 1, build(request_type(10, 4),
                                                               {"key_type": 1, "coordinator_keys": [txn_id]})))
                    size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
                    resp = decode_response(s.recv(size, socket.MSG_WAITALL), 10, 4)[1]
            except OSError:
                continue
            coord = resp.coordinators[0]
            if coord.error_code == E.none:
                return int(coord.node_id)
        assert time.monotonic() < deadline, f"no transaction coordinator for {txn_id}"
        time.sleep(0.2)


def test_transaction_survives_its_coordinators_death(cluster_factory: Any) -> None:
    cluster: Cluster = cluster_factory(3, env=ENV)
    topic = unique("ctx")
    cluster.create_topic(topic, partitions=3, rf=3)  # leaders spread: markers go to remote leaders too
    tid = unique("tid")
    p = Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": tid, "linger.ms": 2,
                  "transaction.timeout.ms": 30000})
    p.init_transactions(60)
    for t in range(3):  # committed and aborted transactions spread over the three leaders
        p.begin_transaction()
        for i in range(30):
            p.produce(topic, value=b"t%d-%d" % (t, i), partition=i % 3)
        p.flush(30)
        p.commit_transaction(60) if t != 1 else p.abort_transaction(60)
    cluster.wait_for("__transaction_state fully replicated", lambda: all(
        len(part.isrs) == 3 for part in cluster.metadata("__transaction_state").topics[
            "__transaction_state"].partitions.values()))
    p.begin_transaction()
    for i in range(30):
        p.produce(topic, value=b"t3-%d" % i, partition=i % 3)
    p.flush(30)
    coordinator = txn_coordinator(cluster, tid)
    cluster.by_id(coordinator).kill()
    p.commit_transaction(120)  # the client finds the new coordinator; it replayed the Ongoing state
    assert txn_coordinator(cluster, tid) != coordinator
    expected = sorted(b"t%d-%d" % (t, i) for t in (0, 2, 3) for i in range(30))
    cluster.wait_for("every partition led by a live broker", lambda: all(
        part.leader >= 0 and part.leader != coordinator
        for part in cluster.metadata(topic).topics[topic].partitions.values()))
    # commit_transaction returns once the outcome is decided; a read_committed reader sees it once the
    # markers are written and replicated (the high watermark past them), which may come just after
    cluster.wait_for("the committed transactions, and no aborted record, to a read_committed reader",
                     lambda: sorted(values(read_to_end(cluster.bootstrap, topic, 3, "read_committed",
                                                       timeout=20))) == expected, timeout=60)
