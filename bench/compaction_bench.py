"""Log compaction speed, and what a running cleaner costs produce.

1. In process: write --records keyed records (--keys distinct keys) to a
   PartitionLog and time one LogCleaner pass over its closed segments: MB/s of
   log cleaned (bytes read by the cleaner / wall time of clean + swap).
2. Through a broker (`odradek serve` subprocess): produce --messages records to
   a plain topic alone; then fill a compacted topic with --dirty-mb of keyed
   records, let the cleaner start on it, and produce the same again while it
   runs. The issue asks that produce with compaction stays >= 80% of alone.

    .venv/bin/python bench/compaction_bench.py [--records 400000] [--messages 1000000] [--dirty-mb 250]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)
from produce_consume import free_port, wait_port

from odradek.protocol.records import encode_batch, scan_batches
from odradek.storage.cleaner import LogCleaner, clean_partition
from odradek.storage.log import LogConfig, PartitionLog

ROOT = Path(__file__).resolve().parent.parent


def bench_cleaner(records: int, keys: int, size: int, compression: int) -> tuple[float, float, int, float, int]:
    """(MB cleaned, seconds, records removed, ms of the swap on the event loop, segments swapped)
    for one pass over a freshly written log."""
    tmp = Path(tempfile.mkdtemp(prefix="odradek-cleanbench-"))
    try:
        cfg = LogConfig(segment_bytes=8 * 1024 * 1024, cleanup_policy="compact", min_cleanable_dirty_ratio=0.0)
        plog = PartitionLog.open(tmp / "t-0", "t", 0, cfg)
        per_batch = 100
        for start in range(0, records, per_batch):
            noise = os.urandom(size // 2 * per_batch).hex().encode()  # compresses about 2:1, like text
            batch = encode_batch([(b"key-%d" % ((start + i) % keys), noise[i * size : (i + 1) * size], ())
                                  for i in range(per_batch)], compression=compression)
            headers, _ = scan_batches(batch)
            plog.append(batch, headers, now_ms=time.time_ns() // 1_000_000)
        plog.roll()
        plog.high_watermark = plog.log_end_offset
        cleaner = LogCleaner(tmp)
        plan = cleaner.plan_next([plog], time.time_ns() // 1_000_000)
        assert plan is not None
        started = time.perf_counter()
        stats = clean_partition(plan.job)
        swap_started = time.perf_counter()
        cleaner.finish(plan, stats, [plog])
        elapsed = time.perf_counter() - started
        swap_ms = (time.perf_counter() - swap_started) * 1000
        plog.close()
        return stats.bytes_read / 1e6, elapsed, stats.records_removed, swap_ms, len(stats.cleaned)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def produce(bootstrap: str, topic: str, messages: int, size: int, keys: int | None = None) -> float:
    """Seconds to produce and get every ack (acks=1, linger 5 ms, like bench/produce_consume.py)."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": 1, "batch.num.messages": 10000,
                  "queue.buffering.max.messages": 1000000})
    value = b"x" * size
    os.sync()  # earlier phases' dirty pages are written back now, not during this measurement
    started = time.perf_counter()
    for i in range(messages):
        key = b"key-%d" % (i % keys) if keys else None
        while True:
            try:
                p.produce(topic, value, key)
                break
            except BufferError:
                p.poll(0.01)
        if i % 10000 == 0:
            p.poll(0)
    assert p.flush(120) == 0
    return time.perf_counter() - started


def cleaned_lines(log_path: Path) -> int:
    return log_path.read_text(errors="replace").count("odradek.cleaner: cleaned ")


def bench_broker(messages: int, size: int, dirty_mb: int, partitions: int) -> None:
    data = Path(tempfile.mkdtemp(prefix="odradek-cleanbench-broker-"))
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    log_path = data.parent / f"{data.name}.log"
    env = {**os.environ, "ODRADEK_LOG_CLEANER_BACKOFF_MS": "100", "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "odradek", "serve", "--listen", bootstrap,
                                 "--data-dir", str(data / "d")], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=ROOT)
    try:
        wait_port(port)
        admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
        topics = [NewTopic("plain-a", 1, 1), NewTopic("plain-b", 1, 1), NewTopic("plain-c", 1, 1),
                  NewTopic("compacted", partitions, 1, config={
                      "cleanup.policy": "compact", "segment.bytes": str(1024 * 1024),
                      "min.compaction.lag.ms": "3600000"})]
        for f in admin.create_topics(topics).values():
            f.result(10)
        dirty_records = dirty_mb * 1_000_000 // (size + 20)
        fill_s = produce(bootstrap, "compacted", dirty_records, size, keys=10_000)
        print(f"filled the compacted topic: {dirty_records} records ({dirty_mb} MB) in {fill_s:.1f} s")
        alone = produce(bootstrap, "plain-a", messages, size)
        res = ConfigResource("topic", "compacted", incremental_configs=[
            ConfigEntry("min.compaction.lag.ms", "0", incremental_operation=AlterConfigOpType.SET)])
        admin.incremental_alter_configs([res])[res].result(10)
        dirs = [data / "d" / f"compacted-{p}" for p in range(partitions)]
        deadline = time.monotonic() + 30
        while not any(list(d.glob("*.cleaned")) for d in dirs) and cleaned_lines(log_path) == 0:
            if time.monotonic() > deadline:
                raise SystemExit("the cleaner did not start")
            time.sleep(0.005)
        passes_before = cleaned_lines(log_path)
        with_cleaner = produce(bootstrap, "plain-b", messages, size)
        passes_during = cleaned_lines(log_path) - passes_before
        busy_at_end = cleaned_lines(log_path) < partitions
        deadline = time.monotonic() + 300
        while cleaned_lines(log_path) < partitions and time.monotonic() < deadline:
            time.sleep(0.1)
        alone_after = produce(bootstrap, "plain-c", messages, size)
        mb = messages * size / 1e6
        base = (alone + alone_after) / 2
        print(f"produce alone:            {mb / alone:7.1f} MB/s then {mb / alone_after:7.1f} MB/s "
              f"({messages} x {size} B, acks=1)")
        print(f"produce while cleaning:   {mb / with_cleaner:7.1f} MB/s "
              f"({100 * base / with_cleaner:.0f}% of alone; cleaner passes finished meanwhile: {passes_during}, "
              f"still cleaning at the end: {busy_at_end})")
        for line in log_path.read_text(errors="replace").splitlines():
            if "odradek.cleaner: cleaned " in line:
                print("  broker:", line.split("odradek.cleaner: ")[1])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        shutil.rmtree(data, ignore_errors=True)
        log_path.unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=400_000, help="records in the in-process cleaner bench")
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=100, help="value bytes")
    ap.add_argument("--messages", type=int, default=1_000_000, help="records per produce run")
    ap.add_argument("--dirty-mb", type=int, default=250, help="keyed MB written to the compacted topic")
    ap.add_argument("--partitions", type=int, default=4, help="partitions of the compacted topic")
    ap.add_argument("--skip-broker", action="store_true")
    args = ap.parse_args()
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    for name, codec in (("none", 0), ("lz4", 3)):
        mb, secs, removed, swap_ms, swapped = bench_cleaner(args.records, args.keys, args.size, codec)
        print(f"cleaner ({name:4}): {mb:6.1f} MB in {secs:5.2f} s = {mb / secs:6.1f} MB/s, "
              f"{args.records / secs / 1000:.0f}k records/s ({removed} of {args.records} records removed; "
              f"swap of {swapped} segments on the loop: {swap_ms:.1f} ms)")
    if not args.skip_broker:
        bench_broker(args.messages, args.size, args.dirty_mb, args.partitions)


if __name__ == "__main__":
    main()
