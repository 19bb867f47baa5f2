"""Fast tests of transactions in the log: markers, the last stable offset, the
aborted-transaction index (.txnindex) across restarts, truncation and compaction."""

from __future__ import annotations

import time
from pathlib import Path

from test_storage import read_all

from odradek.coordinator.txn_records import (
    TxnMetadata,
    TxnState,
    read_txn_key,
    read_txn_value,
    txn_key,
    txn_value,
)
from odradek.protocol.records import (
    CONTROL_ABORT,
    CONTROL_COMMIT,
    TRANSACTIONAL_BIT,
    control_type,
    encode_batch,
    encode_control_batch,
    scan_batches,
)
from odradek.storage import txn_index
from odradek.storage.cleaner import clean_partition, cleanable_plan
from odradek.storage.log import LogConfig, PartitionLog
from odradek.storage.producer_state import AbortedTxn


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def write(plog: PartitionLog, data: bytes) -> int:
    headers, _ = scan_batches(data)
    result = plog.append(data, headers, now_ms=now_ms())
    plog.high_watermark = plog.log_end_offset
    return result.base_offset


def txn_batch(pid: int, records: list[tuple[bytes, bytes]], seq: int = 0, epoch: int = 0) -> bytes:
    return encode_batch([(k, v, ()) for k, v in records], attributes=TRANSACTIONAL_BIT, producer_id=pid,
                        producer_epoch=epoch, base_sequence=seq)


def marker(pid: int, committed: bool, epoch: int = 0) -> bytes:
    return encode_control_batch(committed, pid, epoch, 0, now_ms())


def plain(records: list[tuple[bytes, bytes]]) -> bytes:
    return encode_batch([(k, v, ()) for k, v in records])


def test_control_batch_round_trip() -> None:
    assert control_type(marker(7, True)) == CONTROL_COMMIT
    assert control_type(marker(7, False)) == CONTROL_ABORT
    (h,), _ = scan_batches(marker(7, False))
    assert h.is_control and h.is_transactional and h.producer_id == 7 and h.base_sequence == -1


def test_last_stable_offset_and_aborted_index(tmp_path: Path) -> None:
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, LogConfig())
    write(plog, plain([(b"k", b"p0")]))  # 0
    write(plog, txn_batch(1, [(b"a", b"1"), (b"b", b"2")]))  # 1-2, producer 1 opens
    write(plog, txn_batch(2, [(b"c", b"3")]))  # 3, producer 2 opens
    state = plog.producer_state
    assert state.last_stable_offset(plog.high_watermark) == 1
    write(plog, marker(1, False))  # 4: producer 1 aborts
    assert state.last_stable_offset(plog.high_watermark) == 3
    write(plog, marker(2, True))  # 5: producer 2 commits
    assert state.last_stable_offset(plog.high_watermark) == 6 == plog.log_end_offset
    assert state.collect_aborted(0, 6) == [AbortedTxn(1, 1, 4, 3)]
    assert state.collect_aborted(5, 6) == []  # the abort ended before the fetch offset
    assert txn_index.load(txn_index.index_path(plog.segments[-1].log_path)) == [AbortedTxn(1, 1, 4, 3)]
    plog.close()


def test_open_transaction_and_index_survive_unclean_restart(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    plog = PartitionLog.open(d, "t", 0, LogConfig(segment_bytes=200))
    write(plog, txn_batch(1, [(b"a", b"x" * 50)]))
    write(plog, marker(1, False))
    for i in range(5):  # several segments later
        write(plog, plain([(b"k%d" % i, b"y" * 80)]))
    first_open = write(plog, txn_batch(3, [(b"z", b"open")]))
    plog.roll()  # a producer-state snapshot with an open transaction in it
    write(plog, txn_batch(4, [(b"w", b"open too")], seq=0))
    for seg in plog.segments:
        seg.close()  # a crash: no clean close, no final snapshot
    again = PartitionLog.open(d, "t", 0, LogConfig(segment_bytes=200), clean_shutdown=False, recovery_point=0)
    state = again.producer_state
    assert state.ongoing == {3: first_open, 4: first_open + 1}
    assert again.high_watermark == again.log_end_offset
    assert state.last_stable_offset(again.high_watermark) == first_open
    assert state.collect_aborted(0, again.log_end_offset) == [AbortedTxn(1, 0, 1, 2)]
    again.close()


def test_truncation_drops_index_entries_past_the_new_end(tmp_path: Path) -> None:
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, LogConfig())
    write(plog, txn_batch(1, [(b"a", b"1")]))  # 0
    write(plog, marker(1, False))  # 1
    write(plog, txn_batch(2, [(b"b", b"2")]))  # 2
    write(plog, marker(2, False))  # 3
    assert len(plog.producer_state.aborted) == 2
    plog.truncate_to(3)  # the second ABORT marker is gone: producer 2's transaction is open again
    assert plog.producer_state.aborted == [AbortedTxn(1, 0, 1, 2)]
    assert plog.producer_state.ongoing == {2: 2}
    assert txn_index.load(txn_index.index_path(plog.segments[-1].log_path)) == [AbortedTxn(1, 0, 1, 2)]
    plog.close()


def test_compaction_drops_aborted_records_and_never_lets_them_win(tmp_path: Path) -> None:
    cfg = LogConfig(segment_bytes=150, cleanup_policy="compact", min_cleanable_dirty_ratio=0.0)
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, cfg)
    write(plog, plain([(b"k", b"committed")]))
    write(plog, txn_batch(5, [(b"k", b"aborted")]))
    write(plog, marker(5, False))
    for i in range(4):
        write(plog, plain([(b"o%d" % i, b"x" * 60)]))
    plan = cleanable_plan(plog, 0, now_ms())
    assert plan is not None
    stats = clean_partition(plan.job)
    plog.replace_segments([(plan.segments[i], plan.segments[i].size, path) for i, path in stats.cleaned])
    kept = {k: v for _, k, v in read_all(plog) if k is not None}
    assert kept[b"k"] == b"committed"
    assert b"aborted" not in {v for _, _, v in read_all(plog)}
    plog.close()


def test_transaction_log_value_round_trip() -> None:
    meta = TxnMetadata("my-id", 42, 3, 60000, TxnState.PREPARE_COMMIT, {("a", 0), ("a", 2), ("b", 1)}, 1000, 900)
    assert read_txn_key(txn_key("my-id")) == "my-id"
    back = read_txn_value("my-id", txn_value(meta))
    assert back == meta
