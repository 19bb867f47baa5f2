"""Issue 18: a transaction coordinator cut from ZooKeeper fences nobody.

A broker whose ZooKeeper session is suspended stops acting as leader (produce and the
coordinators' writes answer NOT_LEADER_OR_FOLLOWER / NOT_COORDINATOR), and once its
session expired another broker leads its __transaction_state partitions. Until it hears
of that it still holds the transactional ids it coordinated. A client that meanwhile got a
newer epoch from the new coordinator and then reaches the cut broker (its metadata still
names itself as the coordinator) must get NOT_COORDINATOR, which sends it looking for the
coordinator again, as a deposed Kafka coordinator answers, never INVALID_PRODUCER_EPOCH /
PRODUCER_FENCED from the state it no longer owns: librdkafka takes those as fatal
(_FENCED), the application's producer is dead although no other instance exists.

Real ZooKeeper ensemble and brokers in network namespaces (odradek.testing.faults), the
cut an iptables one; requests kio-built over TCP so the error each one gets is the one
checked. Needs root, as tests/test_faults.py.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import recv_exact
from kio.schema.errors import ErrorCode as E

from odradek.protocol.build import build
from odradek.protocol.framing import decode_response, encode_request, request_type

pytestmark = [pytest.mark.timeout(400),
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]

FIND_COORDINATOR, INIT_PRODUCER_ID, ADD_OFFSETS, END_TXN = 10, 22, 25, 26
TID = "cut-coordinator-txn"


@pytest.fixture
def fault_cluster(tmp_path: Path) -> Iterator[Any]:
    from odradek.testing.faults.cluster import FaultCluster
    from odradek.testing.faults.net import netns_works

    why = netns_works()
    if why is not None:
        pytest.skip(why)
    with FaultCluster(tmp_path) as c:
        c.start(clients=0)
        yield c


def call(address: str, api_key: int, version: int, **values: Any) -> Any:
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=15) as s:
        s.sendall(encode_request(api_key, version, 7, build(request_type(api_key, version), values)))
        size = struct.unpack(">i", recv_exact(s, 4))[0]
        return decode_response(recv_exact(s, size), api_key, version)[1]


def coordinator(address: str) -> tuple[int, int]:
    """(error, node) of FindCoordinator(TRANSACTION) as `address` answers it."""
    resp = call(address, FIND_COORDINATOR, 4, key_type=1, coordinator_keys=[TID])
    return int(resp.coordinators[0].error_code), int(resp.coordinators[0].node_id)


def init(address: str, producer_id: int = -1, producer_epoch: int = -1) -> Any:
    """InitProducerId v4 at `address`, retried while the coordinator is busy or loading."""
    deadline = time.monotonic() + 60
    while True:
        resp = call(address, INIT_PRODUCER_ID, 4, transactional_id=TID, transaction_timeout=60_000,
                    producer_id=producer_id, producer_epoch=producer_epoch)
        if resp.error_code not in (E.concurrent_transactions, E.coordinator_load_in_progress,
                                   E.coordinator_not_available, E.not_coordinator):
            return resp
        assert time.monotonic() < deadline, f"InitProducerId: {resp.error_code}"
        time.sleep(0.3)


def test_a_coordinator_cut_from_zookeeper_answers_not_coordinator_not_fenced(fault_cluster: Any) -> None:
    c = fault_cluster
    addresses = [f"{b.ip}:{b.port}" for b in c.brokers]
    deadline = time.monotonic() + 90
    while True:  # __transaction_state is created by the first FindCoordinator
        error, b = coordinator(addresses[0])
        if error == E.none:
            break
        assert time.monotonic() < deadline, f"no transaction coordinator: {error}"
        time.sleep(0.5)
    first = init(addresses[b])
    assert first.error_code == E.none
    pid, epoch = first.producer_id, first.producer_epoch
    cut = c.brokers[b]
    mark = "ZooKeeper session suspended"
    before = cut.logs().count(mark)
    c.net.cut([f"b{b}"], ["z1", "z2", "z3"])
    try:
        deadline = time.monotonic() + 4 * c.env_session_timeout_s
        while cut.logs().count(mark) == before:
            assert time.monotonic() < deadline, "the broker never noticed it was cut from ZooKeeper"
            time.sleep(0.05)
        # its session expires and another broker takes the id over, loading its state from the log
        others = [a for i, a in enumerate(addresses) if i != b]
        deadline = time.monotonic() + 120
        while True:
            error, x = coordinator(others[0])
            if error == E.none and x != b:
                break
            assert time.monotonic() < deadline, "no other broker became the transaction coordinator"
            time.sleep(0.5)
        # the same producer moves on there: KIP-360's bump with its id and epoch
        bumped = init(addresses[x], pid, epoch)
        assert (bumped.error_code, bumped.producer_id) == (E.none, pid) and bumped.producer_epoch > epoch
        # the cut broker, asked with the producer's current epoch, must not fence it
        end = call(addresses[b], END_TXN, 1, transactional_id=TID, producer_id=pid,
                   producer_epoch=bumped.producer_epoch, committed=False)
        added_error = call(addresses[b], ADD_OFFSETS, 1, transactional_id=TID, producer_id=pid,
                           producer_epoch=bumped.producer_epoch, group_id="g").error_code
        again = call(addresses[b], INIT_PRODUCER_ID, 4, transactional_id=TID, transaction_timeout=60_000,
                     producer_id=pid, producer_epoch=bumped.producer_epoch)
    finally:
        c.net.heal()
    # AddOffsetsToTxn looks for the group's __consumer_offsets partition first: COORDINATOR_NOT_AVAILABLE
    # there is as retriable for the client (it looks for the coordinator again)
    assert (end.error_code, again.error_code) == (E.not_coordinator,) * 2 and added_error in (
            E.not_coordinator, E.coordinator_not_available), (
        f"EndTxn {end.error_code.name}, AddOffsetsToTxn {added_error.name}, InitProducerId "
        f"{again.error_code.name} from the broker cut from ZooKeeper")
    # and the real coordinator still serves the producer at its epoch
    deadline = time.monotonic() + 60
    while True:
        error, x = coordinator(addresses[(b + 1) % 3])
        if error == E.none:
            end = call(addresses[x], END_TXN, 1, transactional_id=TID, producer_id=pid,
                       producer_epoch=bumped.producer_epoch, committed=False)
            if end.error_code not in (E.not_coordinator, E.coordinator_load_in_progress,
                                      E.coordinator_not_available, E.concurrent_transactions):
                break
        assert time.monotonic() < deadline, "the producer's coordinator never answered after the heal"
        time.sleep(0.5)
    assert end.error_code == E.invalid_txn_state, "EndTxn without a transaction: its epoch is still the current one"
