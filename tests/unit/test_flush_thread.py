"""The periodic flush's file work runs on threads while the event loop appends (issue 20): the
index entries, the leader epochs and the fsyncs. What it writes must stay ordered against the
appends, truncations and closes made meanwhile, so a restart trusts the files it finds."""

from __future__ import annotations

import struct
import threading
import time
from pathlib import Path

from odradek.protocol.records import encode_batch, read_header, scan_batches
from odradek.storage.log import LogConfig, PartitionLog
from odradek.storage.log_maintenance import FlushJob


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def append(plog: PartitionLog, i: int) -> None:
    data = encode_batch([(b"k%d" % i, b"v%d" % i * 20, ())], timestamp_ms=now_ms())
    headers, _ = scan_batches(data)
    plog.append(data, headers, now_ms=now_ms())


def check_index_files(plog: PartitionLog, *, whole: bool) -> None:
    """Every entry of every .index file, in the file's order, names the last offset of the batch
    at its position, and the file holds the segment's entries (`whole`) or the first of them."""
    for seg in plog.segments:
        raw = seg.index_path.read_bytes() if seg.index_path.exists() else b""
        entries = [(seg.base_offset + rel, pos) for rel, pos in struct.iter_unpack(">ii", raw)]
        expected = list(zip(seg.index_offsets, seg.index_positions, strict=True))
        assert entries == (expected if whole else expected[:len(entries)])
        with open(seg.log_path, "rb") as f:
            for offset, pos in entries:
                f.seek(pos)
                assert read_header(f.read(61)).last_offset == offset


def test_flushes_on_threads_beside_appends_and_a_truncation_leave_files_a_restart_trusts(tmp_path: Path) -> None:
    # an index entry a batch; a roll every ~12 batches, so several between two flushes (a roll
    # leaves its segment's fsync and index entries to the next flush)
    config = LogConfig(index_interval_bytes=1, segment_bytes=2_000)
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, config)
    running: list[tuple[threading.Thread, FlushJob]] = []
    truncated_at = -1
    for i in range(3_000):
        if i % 500 == 0:
            plog.assign_leader_epoch(i // 500, plog.log_end_offset)  # the epochs change under flushes
        append(plog, i)
        if i % 37 == 0:
            job = plog.begin_flush()
            if job is not None:
                t = threading.Thread(target=job.run)
                t.start()
                running.append((t, job))
        if i == 2_000:  # a replica's truncation while flushes are in flight
            truncated_at = plog.log_end_offset - 300
            plog.truncate_to(truncated_at)
        while len(running) > 4 or (running and not running[0][0].is_alive()):
            t, job = running.pop(0)
            t.join()
            job.done()
            assert not job.failed
    for t, job in running:
        t.join()
        job.done()
    end = plog.log_end_offset
    epochs = list(plog.epochs)
    assert end == 3_000 - 300
    check_index_files(plog, whole=False)  # the flushes' writes alone, before the close writes the rest
    job = plog.begin_flush()
    assert job is not None
    job.run()
    job.done()
    assert plog.recovery_point == end  # every rolled segment synced by the flush, not by the roll
    check_index_files(plog, whole=True)
    plog.close()
    check_index_files(plog, whole=True)

    reopened = PartitionLog.open(tmp_path / "t-0", "t", 0, config)  # a clean restart trusts the indexes
    assert reopened.log_end_offset == end
    assert reopened.epochs == epochs
    assert [(s.index_offsets, s.index_positions) for s in reopened.segments] == [
        (s.index_offsets, s.index_positions) for s in plog.segments]
    offset, seen = 0, 0
    while offset < end:
        data = reopened.read(offset, 1 << 20)
        headers, _ = scan_batches(data)
        assert headers and headers[0].base_offset == offset
        seen += len(headers)
        offset = headers[-1].next_offset
    assert seen == end
    reopened.close()
