"""How long the event loop's thread is held by file work that issue 20 moved off it.

In one process, on a fresh data dir, with the storage code importable from PYTHONPATH (run it
against two checkouts, alternating, to compare):

  1. topics.json: a single-node metadata store already holding --topics topics of --partitions
     partitions; then --creates more topics created one by one. For each, the time the call
     itself takes on the caller's thread (the event loop's, in the broker), and the time until
     the file holds the change (the CreateTopics answer waits for that);
  2. the periodic flush: --logs freshly written logs (one batch each, so their index files do
     not exist yet), flushed as LogManager.flush_in_background does: `begin_flush` of each on
     the caller's thread, in batches of 64, the jobs run by 8 threads. The time of each batch's
     begin_flush calls (what holds the loop) and of the whole flush;
  3. retention: a log of --retention-segments closed segments of --segment-mb MB, all past
     retention.ms; the time enforce_retention takes on the caller's thread (the unlinks of the
     files freed their blocks there) and until the files are gone;
  4. a follower's truncation: one segment of --segment-mb MB, cut by its last few batches
     --truncations times (new batches appended between): the time each truncate_to takes;
  5. a roll with --producers idempotent producers' state: the time of the appends that rolled
     (the producer snapshot is written and renamed there; handed to the log file thread, it
     measured slower on this machine, so it stays);
  6. a compaction's swap of --swap-segments cleaned segments of --swap-mb MB: the time on the
     caller's thread (the directory's fsync, the new segments' scan, the old logs' unlink and the
     cleaner checkpoint's fsync were there).

    PYTHONPATH=src .venv/bin/python bench/loop_file_work.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import odradek
from odradek.cluster.metadata import LocalMetadataStore
from odradek.protocol.records import encode_batch, scan_batches
from odradek.storage import file_thread
from odradek.storage.log import LogConfig, PartitionLog
from odradek.storage.retention import enforce_retention


def topics_json(data_dir: Path, topics: int, partitions: int, creates: int) -> None:
    data_dir.mkdir()
    store = LocalMetadataStore(data_dir, "bench")
    for i in range(topics):
        store.create_topic(f"old-{i:04d}", [[0]] * partitions, {})
    wait = getattr(store, "wait_synced", None)
    if wait is not None:
        wait()
    calls, durable = [], []
    for i in range(creates):
        started = time.perf_counter()
        store.create_topic(f"new-{i:04d}", [[0]] * partitions, {})
        calls.append((time.perf_counter() - started) * 1e3)
        if wait is not None:
            wait()
        durable.append((time.perf_counter() - started) * 1e3)
    print(f"topics.json, {topics} topics x {partitions} partitions, {creates} more created: on the caller's thread "
          f"median {statistics.median(calls):.2f} ms, max {max(calls):.2f} ms; until durable median "
          f"{statistics.median(durable):.2f} ms, max {max(durable):.2f} ms")


def flush(data_dir: Path, logs: int) -> None:
    config = LogConfig()
    plogs = [PartitionLog.open(data_dir / f"t-{i}", "t", i, config) for i in range(logs)]
    data = encode_batch([(b"k", b"v" * 100, ())] * 10, timestamp_ms=int(time.time() * 1e3))
    headers, _ = scan_batches(data)
    for i, plog in enumerate(plogs):
        plog.assign_leader_epoch(1, 0)
        plog.append(data, headers, now_ms=int(time.time() * 1e3) + i)
    batches = []
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        for i in range(0, logs, 64):
            t0 = time.perf_counter()
            jobs = [job for plog in plogs[i:i + 64] if (job := plog.begin_flush()) is not None]
            batches.append((time.perf_counter() - t0) * 1e3)
            list(pool.map(lambda job: job.run(), jobs))
            for job in jobs:
                job.done()
    took = time.perf_counter() - started
    print(f"flush of {logs} freshly written logs: begin_flush on the caller's thread a batch of 64: median "
          f"{statistics.median(batches):.2f} ms, max {max(batches):.2f} ms, total {sum(batches):.0f} ms; "
          f"the whole flush {took:.2f} s")
    for plog in plogs:
        plog.close()


def _batch(size: int, *, producer_id: int = -1, sequence: int = -1, count: int = 1) -> tuple[bytes, list]:  # type: ignore[type-arg]
    kw = {"producer_id": producer_id, "producer_epoch": 0, "base_sequence": sequence} if producer_id >= 0 else {}
    data = encode_batch([(b"k", b"v" * size, ())] * count, timestamp_ms=int(time.time() * 1e3), **kw)
    return data, scan_batches(data)[0]


def _fill(plog: PartitionLog, nbytes: int, batch_bytes: int = 1 << 20) -> None:
    data, headers = _batch(batch_bytes // 16, count=16)
    written = 0
    while written < nbytes:
        plog.append(data, headers, now_ms=int(time.time() * 1e3))
        written += len(data)


def _files_gone() -> None:
    wait = getattr(file_thread, "wait_for_file_jobs", None)
    if wait is not None:
        wait()


def retention(data_dir: Path, segments: int, segment_mb: int) -> None:
    config = LogConfig(segment_bytes=segment_mb << 20, retention_ms=1)
    plog = PartitionLog.open(data_dir / "r-0", "r", 0, config)
    plog.assign_leader_epoch(1, 0)
    _fill(plog, segments * (segment_mb << 20))
    data, headers = _batch(100)
    plog.append(data, headers, now_ms=int(time.time() * 1e3))
    plog.flush()
    plog.high_watermark = plog.log_end_offset
    time.sleep(0.01)
    started = time.perf_counter()
    deleted = enforce_retention(plog, int(time.time() * 1e3) + 10)
    call = (time.perf_counter() - started) * 1e3
    _files_gone()
    gone = (time.perf_counter() - started) * 1e3
    print(f"retention of {deleted} segments of {segment_mb} MB: on the caller's thread {call:.2f} ms; "
          f"until the files are gone {gone:.2f} ms")
    plog.close()


def truncation(data_dir: Path, segment_mb: int, truncations: int) -> None:
    plog = PartitionLog.open(data_dir / "f-0", "f", 0, LogConfig())
    plog.assign_leader_epoch(1, 0)
    _fill(plog, segment_mb << 20)
    plog.flush()
    data, headers = _batch(1000)
    took = []
    for _ in range(truncations):
        for _ in range(5):
            plog.append(data, headers, now_ms=int(time.time() * 1e3))
        started = time.perf_counter()
        plog.truncate_to(plog.log_end_offset - 3)
        took.append((time.perf_counter() - started) * 1e3)
    print(f"follower truncation of a {segment_mb} MB segment by 3 batches, {truncations} times: on the caller's "
          f"thread median {statistics.median(took):.2f} ms, max {max(took):.2f} ms")
    plog.close()


def roll(data_dir: Path, producers: int, rolls: int) -> None:
    plog = PartitionLog.open(data_dir / "p-0", "p", 0, LogConfig(segment_bytes=1 << 20))
    plog.assign_leader_epoch(1, 0)
    took = []
    sequences = [0] * producers
    while len(took) < rolls:
        for pid in range(producers):
            data, headers = _batch(1000, producer_id=pid, sequence=sequences[pid])
            sequences[pid] += 1
            segments = len(plog.segments)
            started = time.perf_counter()
            plog.append(data, headers, now_ms=int(time.time() * 1e3))
            if len(plog.segments) != segments:
                took.append((time.perf_counter() - started) * 1e3)
    _files_gone()
    print(f"roll with {producers} producers' state: the append that rolled, on the caller's thread median "
          f"{statistics.median(took):.2f} ms, max {max(took):.2f} ms ({rolls} rolls)")
    plog.close()


def swap(data_dir: Path, segments: int, segment_mb: int, rounds: int = 3) -> None:
    """A clean by the cleaner's own functions, then its swap: HEAD~ ran replace_segments and the
    checkpoint's write on the loop; now begin_swap and finish_swap there, prepare_swap (the
    directory fsync and the new files' scan) and the checkpoint on threads (not counted)."""
    from odradek.storage.cleaner import CLEANER_CHECKPOINT_FILE, LogCleaner, clean_partition
    from odradek.storage.manager import write_checkpoint

    config = LogConfig(segment_bytes=segment_mb << 20, cleanup_policy="compact", min_cleanable_dirty_ratio=0.01)
    plog = PartitionLog.open(data_dir / "c-0", "c", 0, config)
    plog.assign_leader_epoch(1, 0)
    cleaner = LogCleaner(data_dir, use_process=False)
    took = []
    n = 0
    for _ in range(rounds):
        while len(plog.segments) < segments + 1:  # half the keys written twice: half of it cleanable
            data = encode_batch([(b"k%d" % ((n + j) % 4000), b"v" * 1000, ()) for j in range(16)],
                                timestamp_ms=int(time.time() * 1e3))
            n += 16
            plog.append(data, scan_batches(data)[0], now_ms=int(time.time() * 1e3))
        plog.high_watermark = plog.log_end_offset
        plan = cleaner.plan_next([plog], int(time.time() * 1e3))
        if plan is None:
            break
        stats = clean_partition(plan.job)
        swaps = [(plan.segments[i], plan.job.segments[i].size, path) for i, path in stats.cleaned]
        begin = getattr(plog, "begin_swap", None)
        if begin is not None:
            from odradek.storage.log_maintenance import prepare_swap

            started = time.perf_counter()
            job = begin(swaps)
            loop_ms = (time.perf_counter() - started) * 1e3
            headers = prepare_swap(job)  # a thread's
            started = time.perf_counter()
            plog.finish_swap(job, headers)
            loop_ms += (time.perf_counter() - started) * 1e3
            _files_gone()
        else:
            started = time.perf_counter()
            plog.replace_segments(swaps)
            write_checkpoint(data_dir / CLEANER_CHECKPOINT_FILE, {("c", 0): plan.end})
            loop_ms = (time.perf_counter() - started) * 1e3
        took.append(loop_ms)
        plog.roll()
    print(f"compaction swap of {segments} segments of {segment_mb} MB: on the caller's thread median "
          f"{statistics.median(took):.2f} ms, max {max(took):.2f} ms ({len(took)} swaps)")
    plog.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topics", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=100)
    ap.add_argument("--creates", type=int, default=20)
    ap.add_argument("--logs", type=int, default=1000)
    ap.add_argument("--retention-segments", type=int, default=8)
    ap.add_argument("--segment-mb", type=int, default=64)
    ap.add_argument("--truncations", type=int, default=10)
    ap.add_argument("--producers", type=int, default=1000)
    ap.add_argument("--rolls", type=int, default=5)
    ap.add_argument("--swap-segments", type=int, default=4)
    ap.add_argument("--swap-mb", type=int, default=8)
    ap.add_argument("--swap-rounds", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated cases: topics,flush,retention,truncation,roll,swap")
    args = ap.parse_args()
    print(f"odradek from {Path(odradek.__file__).parent}; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="loop-file-work-") as tmp:
        only = set(args.only.split(",")) if args.only else None
        if only is None or "topics" in only:
            topics_json(Path(tmp) / "meta", args.topics, args.partitions, args.creates)
        if only is None or "flush" in only:
            flush(Path(tmp) / "logs", args.logs)
        if only is None or "retention" in only:
            retention(Path(tmp), args.retention_segments, args.segment_mb)
        if only is None or "truncation" in only:
            truncation(Path(tmp), args.segment_mb, args.truncations)
        if only is None or "roll" in only:
            roll(Path(tmp), args.producers, args.rolls)
        if only is None or "swap" in only:
            swap(Path(tmp), args.swap_segments, args.swap_mb, args.swap_rounds)


if __name__ == "__main__":
    main()
