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
     begin_flush calls (what holds the loop) and of the whole flush.

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
from odradek.storage.log import LogConfig, PartitionLog


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topics", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=100)
    ap.add_argument("--creates", type=int, default=20)
    ap.add_argument("--logs", type=int, default=1000)
    args = ap.parse_args()
    print(f"odradek from {Path(odradek.__file__).parent}; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="loop-file-work-") as tmp:
        topics_json(Path(tmp) / "meta", args.topics, args.partitions, args.creates)
        flush(Path(tmp) / "logs", args.logs)


if __name__ == "__main__":
    main()
