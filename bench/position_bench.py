"""CPU of finding a fetch's batch at the log end (storage/segment.LogSegment.position_of), which
every Fetch of a consumer that has caught up runs: one partition of 100 B one-record batches (as
a producer with linger.ms=0 writes them), the last offset looked up 200 times after each of 400
appends; the median microseconds a lookup. Each tree (this one, and --before-src trees: another
tree's src/, e.g. `git archive <commit> src | tar -x -C DIR/..`) runs in a fresh process, the
trees taking turns in --rounds rounds.

    .venv/bin/python bench/position_bench.py [--rounds 3] [--before-src DIR,...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from tree_turns import add_turn_options, one_figure_turns


def measure() -> float:
    from odradek.protocol.records import encode_batch, scan_batches
    from odradek.storage.log import LogConfig, PartitionLog

    with tempfile.TemporaryDirectory() as tmp:
        plog = PartitionLog.open(Path(tmp) / "t-0", "t", 0, LogConfig())
        data = encode_batch([(None, b"x" * 100, ())])
        headers, _ = scan_batches(data)
        took = []
        for _ in range(400):
            plog.append(data, headers, now_ms=0)
            seg, offset = plog.segments[-1], plog.log_end_offset - 1
            started = time.thread_time_ns()
            for _ in range(200):
                seg.position_of(offset)
            took.append((time.thread_time_ns() - started) / 200 / 1000)
        plog.close()
    return statistics.median(took)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_turn_options(ap)
    args = ap.parse_args()
    if args.child:
        print(f"{measure():.3f}")
        return
    one_figure_turns(__file__, [], args.before_src, args.rounds, "us", "a lookup at the log end", digits=2)


if __name__ == "__main__":
    main()
