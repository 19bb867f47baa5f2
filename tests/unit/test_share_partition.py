"""SharePartition's acquisition rules and the ShareSnapshot records, without a broker."""

from __future__ import annotations

import uuid

import pytest

from odradek.coordinator.share_group import ShareMember, assign
from odradek.coordinator.share_partition import (
    ACCEPT,
    ACKNOWLEDGED,
    ARCHIVED,
    AVAILABLE,
    GAP,
    REJECT,
    RELEASE,
    RENEW,
    InvalidRecordState,
    SharePartition,
)
from odradek.coordinator.share_state import parse_key, parse_snapshot, snapshot_key, snapshot_value
from odradek.protocol.records import (
    CONTROL_BIT,
    TRANSACTIONAL_BIT,
    BatchHeader,
    encode_batch,
    scan_batches,
)

TOPIC_ID = uuid.uuid4()
LOCK_S, LIMIT, LOCKS = 30.0, 3, 2000


def batches(*specs: tuple[int, int, int, int]) -> list[BatchHeader]:
    """Batch headers of (base offset, record count, attributes, producer id)."""
    data = b"".join(encode_batch([(None, b"v", ())] * count, base_offset=base, attributes=attrs, producer_id=pid,
                                 producer_epoch=0 if pid >= 0 else -1) for base, count, attrs, pid in specs)
    return scan_batches(data, verify_crc=False)[0]


def partition(start: int = 0) -> SharePartition:
    return SharePartition("g", "t", TOPIC_ID, 0, start)


def test_records_are_acquired_once_and_released_ones_come_back_with_a_higher_delivery_count() -> None:
    sp = partition()
    runs, covered = sp.acquire(batches((0, 5, 0, -1)), [], "a", 500, LOCKS, LOCK_S, now=0)
    assert (runs, covered) == ([(0, 4, 1)], 5)
    assert sp.acquire(batches((0, 5, 0, -1)), [], "b", 500, LOCKS, LOCK_S, now=0) == ([], 0)  # all held by a
    sp.acknowledge("a", 0, 4, [ACCEPT, ACCEPT, RELEASE, REJECT, GAP], LOCK_S, LIMIT, now=1)
    assert sp.start_offset == 2 and sp.fetch_offset() == 2
    assert sp.acquire(batches((0, 5, 0, -1)), [], "b", 500, LOCKS, LOCK_S, now=1) == ([(2, 2, 2)], 5)
    assert [sp.inflight[o].state for o in (3, 4)] == [ARCHIVED, ARCHIVED]


def test_only_the_holder_may_acknowledge_and_a_refused_batch_changes_nothing() -> None:
    sp = partition()
    sp.acquire(batches((0, 3, 0, -1)), [], "a", 500, LOCKS, LOCK_S, now=0)
    with pytest.raises(InvalidRecordState):
        sp.acknowledge("b", 0, 2, [ACCEPT], LOCK_S, LIMIT, now=0)
    with pytest.raises(InvalidRecordState):
        sp.acknowledge("a", 0, 3, [ACCEPT], LOCK_S, LIMIT, now=0)  # offset 3 was never delivered
    assert all(rec.owner == "a" for rec in sp.inflight.values())


def test_a_lock_timeout_makes_records_available_until_the_delivery_limit_archives_them() -> None:
    sp = partition()
    for delivery in range(1, LIMIT + 1):
        runs, _ = sp.acquire(batches((0, 1, 0, -1)), [], "a", 500, LOCKS, LOCK_S, now=delivery * 100)
        assert runs == [(0, 0, delivery)]
        assert sp.expire_locks(now=delivery * 100 + LOCK_S, limit=LIMIT) == (delivery < LIMIT)
    assert sp.start_offset == 1 and not sp.inflight  # archived: the poison record is never delivered again


def test_renew_extends_the_lock() -> None:
    sp = partition()
    sp.acquire(batches((0, 1, 0, -1)), [], "a", 500, LOCKS, LOCK_S, now=0)
    sp.acknowledge("a", 0, 0, [RENEW], LOCK_S, LIMIT, now=20)
    assert not sp.expire_locks(now=LOCK_S + 1, limit=LIMIT)
    assert sp.inflight[0].owner == "a"
    sp.acknowledge("a", 0, 0, [ACCEPT], LOCK_S, LIMIT, now=40)
    assert sp.start_offset == 1


def test_max_records_and_max_locks_bound_an_acquisition() -> None:
    sp = partition()
    assert sp.acquire(batches((0, 10, 0, -1)), [], "a", 4, LOCKS, LOCK_S, now=0) == ([(0, 3, 1)], 10)
    assert sp.acquire(batches((0, 10, 0, -1)), [], "b", 500, 6, LOCK_S, now=0) == ([(4, 5, 1)], 10)


def test_control_records_and_aborted_transactions_are_archived_not_delivered() -> None:
    sp = partition()
    txn = TRANSACTIONAL_BIT
    headers = batches((0, 2, txn, 7), (2, 1, txn | CONTROL_BIT, 7), (3, 2, txn, 8), (5, 1, txn | CONTROL_BIT, 8))
    runs, _ = sp.acquire(headers, [(7, 0)], "a", 500, LOCKS, LOCK_S, now=0)  # producer 7's transaction aborted
    assert runs == [(3, 4, 1)]
    assert sp.start_offset == 3  # the aborted records and their marker are done already
    assert sp.inflight[5].state == ARCHIVED  # the commit marker


def test_a_member_leaving_releases_its_records_and_a_rollback_restores_acknowledged_ones() -> None:
    sp = partition()
    sp.acquire(batches((0, 4, 0, -1)), [], "a", 2, LOCKS, LOCK_S, now=0)
    sp.acquire(batches((0, 4, 0, -1)), [], "b", 2, LOCKS, LOCK_S, now=0)
    saved = sp.checkpoint([(2, 3)])
    sp.acknowledge("b", 2, 3, [ACCEPT], LOCK_S, LIMIT, now=0)
    sp.rollback(saved)  # the state write failed: b still holds them
    assert [(o, r.state, r.owner) for o, r in sp.inflight.items()][2:] == [(2, 1, "b"), (3, 1, "b")]
    assert sp.release_member("a", LIMIT)
    assert [sp.inflight[o].state for o in (0, 1)] == [AVAILABLE, AVAILABLE]


def test_an_acknowledgement_claiming_2_to_the_63_offsets_is_answered_at_once() -> None:
    """The fuzzer's finding: one ShareFetch whose acknowledgement batch spans 0 .. 2**63-1 held the
    broker's loop for good (a loop over every offset of the range, in checkpoint and acknowledge)."""
    sp = partition()
    sp.acquire(batches((0, 4, 0, -1)), [], "a", 500, LOCKS, LOCK_S, now=0)
    last = 2**63 - 1
    saved = sp.checkpoint([(0, last), (1, last)])
    assert sorted(saved[1]) == [0, 1, 2, 3]
    with pytest.raises(InvalidRecordState):  # an ACCEPT of offsets not in flight
        sp.acknowledge("a", 0, last, [ACCEPT], LOCK_S, LIMIT, now=1)
    assert all(r.state == 1 and r.owner == "a" for r in sp.inflight.values())  # refused: nothing changed
    sp.acknowledge("a", 2, last, [GAP], LOCK_S, LIMIT, now=1)  # a GAP may name offsets not in flight
    assert [sp.inflight[o].state for o in (2, 3)] == [ARCHIVED, ARCHIVED]
    sp.acknowledge("a", 0, 1, [ACCEPT, RELEASE], LOCK_S, LIMIT, now=1)
    assert sp.inflight[1].state == AVAILABLE


def test_the_snapshot_records_round_trip_in_kafkas_schema() -> None:
    sp = partition(10)
    sp.acquire(batches((10, 4, 0, -1)), [], "a", 500, LOCKS, LOCK_S, now=0)
    sp.acknowledge("a", 11, 12, [ACCEPT, REJECT], LOCK_S, LIMIT, now=0)
    state = sp.state_batches()  # the acquired ones are written AVAILABLE: after a restart they come back
    assert [(b.first_offset, b.last_offset, b.delivery_state, b.delivery_count) for b in state] == [
        (10, 10, AVAILABLE, 1), (11, 11, ACKNOWLEDGED, 1), (12, 12, ARCHIVED, 1), (13, 13, AVAILABLE, 1)]
    key = snapshot_key("g", TOPIC_ID, 0)
    assert key[:2] == b"\x00\x00" and parse_key(key) == ("g", TOPIC_ID, 0)
    assert parse_snapshot(snapshot_value(3, 0, 10, state, 1, 2)) == (3, 10, state)
    again = SharePartition.from_snapshot("g", "t", TOPIC_ID, 0, 10, 3, state)
    assert again.start_offset == 10 and again.end_offset == 14 and again.fetch_offset() == 10


def test_members_share_partitions_only_when_they_outnumber_them() -> None:
    t = uuid.uuid4()
    few = [ShareMember(f"m{i}", "c", "h", None, ["t"]) for i in range(2)]
    assert assign(few, {"t": (t, 4)}) == {"m0": {t: [0, 2]}, "m1": {t: [1, 3]}}
    many = [ShareMember(f"m{i}", "c", "h", None, ["t"]) for i in range(5)]
    got = assign(many, {"t": (t, 2)})
    assert sorted(p for a in got.values() for p in a[t]) == [0, 0, 0, 1, 1]
