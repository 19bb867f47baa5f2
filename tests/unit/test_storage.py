"""Fast tests of the storage files: compaction, swap recovery, retention, DeleteRecords."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from odradek.protocol.records import decode_batch, encode_batch, scan_batches
from odradek.storage.cleaner import LogCleaner, clean_partition, cleanable_plan
from odradek.storage.log import LogConfig, PartitionLog
from odradek.storage.retention import enforce_retention

GZIP = 1


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def compacted_config(**kw: object) -> LogConfig:
    base = {"segment_bytes": 300, "cleanup_policy": "compact", "min_cleanable_dirty_ratio": 0.0,
                "delete_retention_ms": 86400000, "index_interval_bytes": 50}
    base.update(kw)
    return LogConfig(**base)  # type: ignore[arg-type]


def append(plog: PartitionLog, records: list[tuple[bytes | None, bytes | None]], *, ts: int | None = None,
           compression: int = 0) -> None:
    data = encode_batch([(k, v, ()) for k, v in records], timestamp_ms=ts or now_ms(), compression=compression)
    headers, _ = scan_batches(data)
    plog.append(data, headers, now_ms=now_ms())
    plog.high_watermark = plog.log_end_offset


def read_all(plog: PartitionLog) -> list[tuple[int, bytes | None, bytes | None]]:
    out = []
    offset = plog.log_start_offset
    while offset < plog.log_end_offset:
        data = plog.read(offset, 1 << 20)
        if not data:
            break
        headers, _ = scan_batches(data)
        for h in headers:
            for r in decode_batch(data, h.position).records:
                out.append((r.offset, r.key, r.value))
            offset = h.next_offset
    return out


def latest_per_key(rows: list[tuple[int, bytes | None, bytes | None]]) -> dict[bytes | None, bytes | None]:
    return {k: v for _, k, v in rows}


def fill(plog: PartitionLog, rounds: int, keys: int, compression: int = 0) -> None:
    for r in range(rounds):
        append(plog, [(b"k%d" % k, b"v%d-%d" % (k, r)) for k in range(keys)], compression=compression)


def test_compaction_keeps_the_last_record_per_key_and_its_offset(tmp_path: Path) -> None:
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, compacted_config())
    fill(plog, 20, 5)
    fill(plog, 5, 5, compression=GZIP)
    before = read_all(plog)
    assert len(plog.segments) > 3
    stats = LogCleaner(tmp_path).clean_once([plog])
    assert stats is not None and stats.records_removed > 0
    after = read_all(plog)
    assert latest_per_key(after) == latest_per_key(before)
    offsets = {o: (k, v) for o, k, v in before}
    assert all(offsets[o] == (k, v) for o, k, v in after)  # offsets kept
    assert [o for o, _, _ in after] == sorted(o for o, _, _ in after)
    # only the active segment can still hold old values of a key
    closed_end = plog.segments[-1].base_offset
    closed_keys = [k for o, k, _ in after if o < closed_end]
    assert len(closed_keys) == len(set(closed_keys))
    assert plog.log_end_offset == before[-1][0] + 1
    plog.close()
    reopened = PartitionLog.open(tmp_path / "t-0", "t", 0, compacted_config())
    assert read_all(reopened) == after


def test_tombstones_go_after_delete_retention_ms(tmp_path: Path) -> None:
    old = now_ms() - 10_000
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, compacted_config(delete_retention_ms=5_000))
    for r in range(6):
        append(plog, [(b"a", b"x%d" % r), (b"b", b"y%d" % r)], ts=old)
    append(plog, [(b"a", None)], ts=old)
    plog.roll()  # the tombstone's segment is old as a whole
    for r in range(6):
        append(plog, [(b"c", b"z%d" % r)])
    LogCleaner(tmp_path).clean_once([plog])
    rows = read_all(plog)
    assert b"a" not in latest_per_key(rows)
    assert latest_per_key(rows)[b"b"] == b"y5"


def test_recent_tombstones_are_kept(tmp_path: Path) -> None:
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, compacted_config())
    fill(plog, 5, 2)
    append(plog, [(b"k0", None)])
    for r in range(5):
        append(plog, [(b"other", b"%d" % r)])
    LogCleaner(tmp_path).clean_once([plog])
    rows = read_all(plog)
    assert [(k, v) for _, k, v in rows if k == b"k0"][-1] == (b"k0", None)


def test_min_cleanable_dirty_ratio_and_checkpoint(tmp_path: Path) -> None:
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, compacted_config(min_cleanable_dirty_ratio=0.5))
    fill(plog, 20, 3)
    cleaner = LogCleaner(tmp_path)
    assert cleaner.clean_once([plog]) is not None
    assert (tmp_path / "cleaner-offset-checkpoint").exists()
    assert cleaner.clean_once([plog]) is None  # nothing dirty since the checkpoint
    assert LogCleaner(tmp_path).checkpoints[("t", 0)] == cleaner.checkpoints[("t", 0)]


def test_min_compaction_lag_keeps_recent_segments_dirty(tmp_path: Path) -> None:
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, compacted_config(min_compaction_lag_ms=60_000))
    fill(plog, 20, 3)
    assert cleanable_plan(plog, 0, now_ms()) is None


def test_delete_policy_is_not_compacted(tmp_path: Path) -> None:
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, compacted_config(cleanup_policy="delete"))
    fill(plog, 20, 3)
    assert cleanable_plan(plog, 0, now_ms()) is None


def test_interrupted_swap_is_finished_and_partial_clean_discarded(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    plog = PartitionLog.open(d, "t", 0, compacted_config())
    fill(plog, 20, 4)
    expected = latest_per_key(read_all(plog))
    plan = cleanable_plan(plog, 0, now_ms())
    assert plan is not None
    stats = clean_partition(plan.job)
    assert len(stats.cleaned) >= 2
    # a crash after the first rename to .swap: that one is complete, the rest still .cleaned
    first = stats.cleaned[0][1]
    first.rename(first.with_name(first.name[: -len(".cleaned")] + ".swap"))
    plog.close()
    reopened = PartitionLog.open(d, "t", 0, compacted_config())
    assert not list(d.glob("*.cleaned")) and not list(d.glob("*.swap"))
    rows = read_all(reopened)
    assert latest_per_key(rows) == expected
    assert len({o for o, _, _ in rows}) == len(rows)
    # and a later clean finishes the job
    LogCleaner(tmp_path).clean_once([reopened])
    assert latest_per_key(read_all(reopened)) == expected


def test_swap_is_refused_when_retention_removed_a_segment(tmp_path: Path) -> None:
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, compacted_config())
    fill(plog, 20, 4)
    plan = cleanable_plan(plog, 0, now_ms())
    assert plan is not None
    stats = clean_partition(plan.job)
    plog.delete_records_before(plog.segments[2].base_offset)
    swaps = [(plan.segments[i], plan.job.segments[i].size, path) for i, path in stats.cleaned]
    assert not plog.replace_segments(swaps)
    assert not list((tmp_path / "t-0").glob("*.cleaned"))


def test_retention_ms_deletes_old_closed_segments(tmp_path: Path) -> None:
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, LogConfig(segment_bytes=300, retention_ms=1000))
    for _ in range(10):
        append(plog, [(None, b"x" * 50)], ts=now_ms() - 5000)
    append(plog, [(None, b"new" * 50)])
    assert enforce_retention(plog, now_ms()) > 0
    assert plog.log_start_offset == plog.segments[0].base_offset > 0


def test_retention_bytes_keeps_the_newest_segments(tmp_path: Path) -> None:
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, LogConfig(segment_bytes=300, retention_bytes=600))
    for _ in range(20):
        append(plog, [(None, b"x" * 100)])
    enforce_retention(plog, now_ms())
    assert plog.size_bytes - plog.segments[0].size <= 600
    assert plog.log_start_offset > 0


def test_max_compaction_lag_forces_a_clean_below_the_dirty_ratio(tmp_path: Path) -> None:
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, compacted_config(min_cleanable_dirty_ratio=0.9))
    fill(plog, 20, 3)
    cleaner = LogCleaner(tmp_path)
    assert cleaner.clean_once([plog]) is not None
    fill(plog, 2, 3)
    assert cleaner.clean_once([plog]) is None  # a little dirt: below the ratio
    plog.update_config(compacted_config(min_cleanable_dirty_ratio=0.9, max_compaction_lag_ms=1))
    time.sleep(0.01)
    assert cleaner.clean_once([plog]) is not None


def test_compact_delete_policy_is_compacted_and_retained(tmp_path: Path) -> None:
    cfg = compacted_config(cleanup_policy="compact,delete", retention_ms=1000)
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, cfg)
    for r in range(10):
        append(plog, [(b"k%d" % k, b"old-%d" % r) for k in range(3)], ts=now_ms() - 5000)
    fill(plog, 10, 3)
    assert LogCleaner(tmp_path).clean_once([plog]) is not None
    assert enforce_retention(plog, now_ms()) > 0
    rows = read_all(plog)
    assert all(not v.startswith(b"old") for _, _, v in rows if v is not None)


def test_a_stale_cleaner_checkpoint_beyond_the_log_end_starts_over(tmp_path: Path) -> None:
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, compacted_config())
    fill(plog, 20, 3)
    assert cleanable_plan(plog, 10**9, now_ms()) is not None


def test_flush_syncs_only_logs_written_since_the_last_flush(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from odradek.storage import segment

    synced: list[int] = []
    real_fsync = segment.os.fsync
    monkeypatch.setattr(segment.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, LogConfig())
    append(plog, [(b"k", b"v1")])
    plog.flush()
    assert synced and plog.recovery_point == 1
    synced.clear()
    plog.flush()  # nothing written since: no fsync, the recovery point stays
    assert synced == [] and plog.recovery_point == 1
    append(plog, [(b"k", b"v2")])
    plog.flush()
    assert synced and plog.recovery_point == 2
    synced.clear()
    plog.truncate_to(1)  # a follower's truncation changes the file too
    plog.flush()
    assert synced and plog.recovery_point == 1
    plog.close()
    reopened = PartitionLog.open(tmp_path / "t-0", "t", 0, LogConfig(), recovery_point=0, clean_shutdown=False)
    synced.clear()
    reopened.flush()  # after an unclean start the recovered tail is synced once
    assert synced and reopened.recovery_point == 1
    reopened.close()


def test_an_epoch_older_than_every_known_one_ends_where_the_first_starts(tmp_path: Path) -> None:
    """OffsetForLeaderEpoch as Kafka's LeaderEpochFileCache.endOffsetFor: a replica that led at
    epoch 0 and comes back to a leader whose history starts at epoch 2 truncates to that epoch's
    start, instead of keeping records the leader never had (failover_bench: a SIGKILLed leader
    kept 3 such records and never rejoined the ISR)."""
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, LogConfig())
    plog.leader_epoch = 2
    append(plog, [(b"k", b"v")] * 3)
    plog.leader_epoch = 4
    append(plog, [(b"k", b"w")])
    assert plog.epochs == [(2, 0), (4, 3)]
    assert plog.end_offset_for_epoch(0) == (0, 0)
    assert plog.end_offset_for_epoch(3) == (2, 3)
    assert plog.end_offset_for_epoch(4) == (4, 4)
    plog.close()


def test_a_fetch_finds_recently_appended_batches_where_the_header_scan_does(tmp_path: Path) -> None:
    """position_of answers an offset in one of the batches appended last from the segment's own list
    (a consumer at the log end reads no headers); every offset of the log gets the position the
    header scan gives, after appends past the list's length, a truncation, more appends, a roll
    (the closed segment keeps no list) and a reopen."""
    from odradek.storage.segment import RECENT_BATCHES

    config = LogConfig(segment_bytes=1 << 30, index_interval_bytes=4096)
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, config)

    def scanned(offset: int) -> int | None:
        """The position the header scan finds (the segment's list set aside)."""
        seg = plog.segments[-1]
        kept, seg._recent = seg._recent, []
        try:
            return seg.position_of(offset)
        finally:
            seg._recent = kept

    def check() -> None:
        seg = plog.segments[-1]
        for offset in range(plog.log_end_offset + 2):
            assert seg.position_of(offset) == scanned(offset), offset

    for i in range(3 * RECENT_BATCHES):  # batches of 1-3 records: some offsets inside a batch
        append(plog, [(None, b"v%d" % i)] * (1 + i % 3))
    seg = plog.segments[-1]
    assert RECENT_BATCHES <= len(seg._recent) <= 2 * RECENT_BATCHES
    end = plog.log_end_offset
    last_start = seg._recent[-1][1]
    assert seg.position_of(end - 1) == last_start and seg.position_of(end) is None
    check()
    seg.truncate_to(end // 2)
    plog.log_end_offset = seg.next_offset
    assert seg._recent == [] and seg.position_of(end - 1) is None
    for i in range(10):
        append(plog, [(None, b"w%d" % i)] * 2)
    assert len(seg._recent) == 10
    check()
    positions = [seg.position_of(o) for o in range(plog.log_end_offset + 1)]
    plog.roll()  # a closed segment keeps no list: the active one's batches only
    assert seg._recent == [] and plog.segments[-1] is not seg
    assert [seg.position_of(o) for o in range(plog.log_end_offset)] == positions[:-1]
    plog.close()
    reopened = PartitionLog.open(tmp_path / "t-0", "t", 0, config)
    assert [reopened.segments[0].position_of(o) for o in range(reopened.log_end_offset)] == positions[:-1]
    assert [v for _, _, v in read_all(reopened)][-2:] == [b"w9", b"w9"]
    reopened.close()
