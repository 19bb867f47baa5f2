"""The periodic recovery-point checkpoint (every 60 s, on the event loop): how long flushing
--partitions logs takes when only one of them was written since the last checkpoint, as on
a broker whose internal topics (__consumer_offsets, __transaction_state: 50 partitions
each) are mostly idle.

    .venv/bin/python bench/checkpoint_bench.py [--partitions 100] [--rounds 5]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from odradek.protocol.records import encode_batch, scan_batches
from odradek.storage.log import LogConfig, PartitionLog


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--partitions", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    data = encode_batch([(b"k", b"v", ())], timestamp_ms=now_ms())
    headers = scan_batches(data)[0]
    with tempfile.TemporaryDirectory() as tmp:
        logs = [PartitionLog.open(Path(tmp) / f"p-{i}", "p", i, LogConfig()) for i in range(args.partitions)]
        for plog in logs:
            plog.append(data, headers, now_ms=now_ms())
            plog.flush()
        times = []
        for _ in range(args.rounds):
            logs[0].append(data, headers, now_ms=now_ms())  # the one busy partition
            t0 = time.perf_counter()
            for plog in logs:
                plog.flush()
            times.append(time.perf_counter() - t0)
        for plog in logs:
            plog.close()
    times.sort()
    print(f"flush of {args.partitions} partitions, 1 written since the last checkpoint: "
          f"median {times[len(times) // 2] * 1e3:.2f} ms, max {times[-1] * 1e3:.2f} ms over {args.rounds} rounds")


if __name__ == "__main__":
    main()
