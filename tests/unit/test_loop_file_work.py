"""File work moved off the event loop (issue 20) keeps its order with the loop's own: a deleted
segment's files are unlinked by the log file thread, a follower's truncation cuts the index files
in place, a compaction's swap fsyncs its directory on a thread. Real files, the file thread held
back where the order matters, and a restart (`PartitionLog.open`, as after a SIGKILL) that must
find what the loop left."""

from __future__ import annotations

import asyncio
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from odradek.protocol.records import decode_batch, encode_batch, read_header, scan_batches
from odradek.storage.cleaner import (
    CleanPlan,
    CleanStats,
    LogCleaner,
    clean_partition,
    cleanable_plan,
)
from odradek.storage.file_thread import in_file_thread, wait_for_file_jobs
from odradek.storage.log import LogConfig, PartitionLog
from odradek.storage.retention import enforce_retention
from odradek.storage.segment import DELETED_SUFFIX


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def append(plog: PartitionLog, i: int, *, size: int = 200, timestamp: int | None = None) -> None:
    data = encode_batch([(b"k%d" % i, b"v" * size, ())], timestamp_ms=now_ms() if timestamp is None else timestamp)
    headers, _ = scan_batches(data)
    plog.append(data, headers, now_ms=now_ms())


@contextmanager
def file_thread_held() -> Iterator[None]:
    """The log file thread busy until the block ends: the jobs queued meanwhile wait for it."""
    release = threading.Event()
    started = threading.Event()

    def hold() -> None:
        started.set()
        release.wait(60)

    in_file_thread(hold)
    assert started.wait(30)
    try:
        yield
    finally:
        release.set()
        wait_for_file_jobs()


def index_entries(plog: PartitionLog) -> list[list[tuple[int, int]]]:
    out = []
    for seg in plog.segments:
        raw = seg.index_path.read_bytes() if seg.index_path.exists() else b""
        out.append([(seg.base_offset + rel, pos) for rel, pos in struct.iter_unpack(">ii", raw)])
    return out


def small_segments() -> LogConfig:
    return LogConfig(segment_bytes=4096, index_interval_bytes=256)


def test_a_new_segment_at_a_deleted_ones_base_offset_keeps_its_files(tmp_path: Path) -> None:
    """A follower that drops its whole log and starts at an offset a deleted segment started at
    writes a new file of the same name while the file thread still has the old one to remove."""
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, small_segments())
    plog.assign_leader_epoch(1, 0)
    for i in range(40):
        append(plog, i)
    assert len(plog.segments) > 2
    with file_thread_held():
        plog.truncate_fully_and_start_at(0)  # every segment deleted, a new empty one at 0
        for i in range(5):
            append(plog, i)
        written = plog.segments[0].log_path.read_bytes()
        plog.flush()
    assert plog.segments[0].log_path.read_bytes() == written  # the old 0's unlink did not take the new file
    assert not list((tmp_path / "t-0").glob(f"*{DELETED_SUFFIX}"))
    plog.close()
    again = PartitionLog.open(tmp_path / "t-0", "t", 0, small_segments(), clean_shutdown=False)
    assert (again.log_start_offset, again.log_end_offset) == (0, 5)
    assert again.read(0, 1 << 20) == written
    again.close()


def test_retention_removes_segments_a_restart_never_loads_again(tmp_path: Path) -> None:
    """Retention's deleted segments are gone from the log at once (nothing reads them) and a
    restart before the file thread removed them neither loads them nor leaves them behind."""
    config = small_segments()
    config.retention_ms = 60_000
    directory = tmp_path / "t-0"
    plog = PartitionLog.open(directory, "t", 0, config)
    plog.assign_leader_epoch(1, 0)
    old = now_ms() - 3_600_000
    for i in range(30):
        append(plog, i, timestamp=old)
    for i in range(30, 40):
        append(plog, i)
    plog.high_watermark = plog.log_end_offset
    with file_thread_held():
        deleted = enforce_retention(plog, now_ms())
        assert deleted > 0
        start = plog.log_start_offset
        assert plog.segments[0].base_offset == start
        assert list(directory.glob(f"*.log{DELETED_SUFFIX}"))  # not yet unlinked
        # a SIGKILL now: the restart finds the renamed files
        again = PartitionLog.open(directory, "t", 0, config, log_start_offset=start, clean_shutdown=False)
        assert again.segments[0].base_offset == start
        assert not list(directory.glob(f"*{DELETED_SUFFIX}"))
        assert again.log_end_offset == plog.log_end_offset
        again.close()
    plog.close()


def test_a_follower_truncation_cuts_the_index_files_to_what_a_restart_rebuilds(tmp_path: Path) -> None:
    """The truncated segment's index files hold exactly the entries before the cut (written or
    not yet), and after new appends and a crash the restart trusts files that match the log."""
    config = LogConfig(index_interval_bytes=300)
    directory = tmp_path / "t-0"
    plog = PartitionLog.open(directory, "t", 0, config)
    plog.assign_leader_epoch(1, 0)
    for i in range(60):
        append(plog, i)
    plog.flush()  # some entries in the files, the next ones pending
    for i in range(60, 90):
        append(plog, i)
    seg = plog.segments[0]
    for cut in (75, 40, 3):  # inside the pending entries, inside the written ones, near the start
        plog.truncate_to(cut)
        assert plog.log_end_offset == cut
        kept = [(o, p) for o, p in zip(seg.index_offsets, seg.index_positions, strict=True)]
        assert all(o < cut for o, _ in kept)
        plog.flush()
        assert index_entries(plog)[0] == kept
        assert max((t for t in seg.time_stamps), default=-1) <= seg.max_timestamp
    for i in range(3, 50):  # the new leader's batches where the cut ones were
        append(plog, i, size=90)
    plog.flush()
    with open(seg.log_path, "rb") as f:  # every entry names the batch at its position
        for offset, pos in index_entries(plog)[0]:
            f.seek(pos)
            assert read_header(f.read(61)).last_offset == offset
    expected = index_entries(plog)
    # a SIGKILL now: the restart trusts the index files, and every offset reads its own batch
    again = PartitionLog.open(directory, "t", 0, config, clean_shutdown=False)
    assert index_entries(again) == expected
    assert again.log_end_offset == 50
    assert again.segments[0].max_timestamp == seg.max_timestamp
    for offset in range(50):
        first = read_header(again.read(offset, 1))
        assert first.base_offset <= offset <= first.last_offset
    again.close()
    plog.close()


def idempotent(plog: PartitionLog, producer_id: int, sequence: int, size: int = 200) -> None:
    data = encode_batch([(b"k", b"v" * size, ())], timestamp_ms=now_ms(), producer_id=producer_id,
                        producer_epoch=0, base_sequence=sequence)
    headers, _ = scan_batches(data)
    plog.append(data, headers, now_ms=now_ms())


def test_a_rolls_snapshot_never_claims_batches_a_truncation_cut(tmp_path: Path) -> None:
    """A roll's producer snapshot covers batches a follower truncation then cuts, and the log grows
    past its offset again (with the file thread busy meanwhile: whatever it had to write); a
    restart after a SIGKILL must rebuild the producer's state from the log, not that snapshot."""
    directory = tmp_path / "t-0"
    plog = PartitionLog.open(directory, "t", 0, LogConfig(segment_bytes=4096))
    plog.assign_leader_epoch(1, 0)
    with file_thread_held():
        sequence = 0
        while len(plog.segments) == 1:  # until a roll queued its snapshot
            idempotent(plog, 7, sequence)
            sequence += 1
        rolled_at = plog.segments[-1].base_offset
        plog.truncate_to(2)  # the new leader has producer 7's first two batches only
        while plog.log_end_offset <= rolled_at + 2:  # past the roll's offset again, other writers'
            append(plog, plog.log_end_offset, size=10)
        assert len(plog.segments) == 1
    assert not (directory / f"{rolled_at:020d}.snapshot").exists()
    again = PartitionLog.open(directory, "t", 0, LogConfig(segment_bytes=4096), clean_shutdown=False)
    assert again.producer_state.producers[7].last_seq == 1
    idempotent(again, 7, 2)  # the next sequence is accepted, not answered as a duplicate
    assert again.producer_state.producers[7].last_seq == 2
    again.close()
    plog.close()


def test_the_rolls_snapshots_are_loaded_at_restart(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    plog = PartitionLog.open(directory, "t", 0, LogConfig(segment_bytes=4096))
    plog.assign_leader_epoch(1, 0)
    sequence = 0
    while len(plog.segments) < 3:
        idempotent(plog, 9, sequence)
        sequence += 1
    wait_for_file_jobs()
    snapshots = sorted(int(p.name[:20]) for p in directory.glob("*.snapshot"))
    assert snapshots == [s.base_offset for s in plog.segments[1:]]
    again = PartitionLog.open(directory, "t", 0, LogConfig(segment_bytes=4096), clean_shutdown=False)
    assert again.producer_state.producers[9].last_seq == sequence - 1
    again.close()
    plog.close()


def compacted(directory: Path) -> tuple[PartitionLog, CleanPlan, CleanStats]:
    """A compacted log of small segments, its dirty part cleaned into `.cleaned` files."""
    config = LogConfig(segment_bytes=300, cleanup_policy="compact", min_cleanable_dirty_ratio=0.0,
                       index_interval_bytes=50)
    plog = PartitionLog.open(directory, "t", 0, config)
    plog.assign_leader_epoch(1, 0)
    for r in range(20):
        data = encode_batch([(b"k%d" % k, b"v%d-%d" % (k, r), ()) for k in range(4)], timestamp_ms=now_ms())
        plog.append(data, scan_batches(data)[0], now_ms=now_ms())
    plog.high_watermark = plog.log_end_offset
    plan = cleanable_plan(plog, 0, now_ms())
    assert plan is not None
    stats = clean_partition(plan.job)
    assert stats.cleaned
    return plog, plan, stats


def records(plog: PartitionLog) -> list[tuple[int, bytes | None, bytes | None]]:
    out = []
    offset = plog.log_start_offset
    while offset < plog.log_end_offset:
        data = plog.read(offset, 1 << 20)
        if not data:
            break
        for h in scan_batches(data)[0]:
            out += [(r.offset, r.key, r.value) for r in decode_batch(data, h.position).records]
            offset = h.next_offset
    return out


def test_a_truncation_during_a_swaps_directory_fsync_is_never_undone_by_a_restart(tmp_path: Path) -> None:
    """The `.swap` files wait for their directory's fsync on a thread while a follower truncation
    cuts into a swapped segment: the swap is abandoned, and a restart does not finish it (which
    would bring the cut records back)."""
    directory = tmp_path / "t-0"
    plog, plan, stats = compacted(directory)
    swaps = [(plan.segments[i], plan.job.segments[i].size, path) for i, path in stats.cleaned]
    job = plog.begin_swap(swaps)
    assert job is not None and list(directory.glob("*.swap"))
    cut = plan.segments[1].base_offset + 1
    plog.truncate_to(cut)  # before the thread's fsync is done
    assert not list(directory.glob("*.swap"))
    # a SIGKILL now: the restart's log ends at the cut, the cut records gone
    again = PartitionLog.open(directory, "t", 0, plog.config, clean_shutdown=False)
    assert again.log_end_offset == plog.log_end_offset <= cut
    assert records(again) == records(plog)
    again.close()
    assert not plog.finish_swap(job, [[] for _ in job.swaps])  # the thread's answer comes too late
    wait_for_file_jobs()
    assert not list(directory.glob("*.cleaned")) and not list(directory.glob("*.swap"))
    plog.close()


def test_the_cleaners_swap_with_its_file_work_on_threads_keeps_every_latest_record(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    plog, plan, stats = compacted(directory)
    before = {k: v for _, k, v in records(plog)}
    offsets = {o: (k, v) for o, k, v in records(plog)}
    cleaner = LogCleaner(tmp_path, use_process=False)
    assert asyncio.run(cleaner.finish_in_background(plan, stats, lambda: [plog]))
    wait_for_file_jobs()
    after = records(plog)
    assert {k: v for _, k, v in after} == before
    assert all(offsets[o] == (k, v) for o, k, v in after) and len(after) < len(offsets)
    assert not list(directory.glob("*.swap")) and not list(directory.glob("*.cleaned"))
    assert (tmp_path / "cleaner-offset-checkpoint").read_text().split()[-1] == str(plan.end)
    plog.close()
    again = PartitionLog.open(directory, "t", 0, plog.config, clean_shutdown=False)
    assert records(again) == after
    again.close()
