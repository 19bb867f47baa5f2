"""CPU of validating a produced record set (protocol/records.parse_batches, which every Produce
runs on the event loop): per million records, for batches of --records records as librdkafka
sends them, in three shapes: records of one size (--size B values; checked by byte columns),
records of varied sizes (values of 1..2 x --size B; checked one record length at a time), and
the varied ones compressed with lz4 (decompressed to be checked). Each tree (this one, and
--before-src trees: another tree's src/, e.g. `git archive <commit> src | tar -x -C DIR/..`)
runs in a fresh process, the trees taking turns in --rounds rounds.

    .venv/bin/python bench/record_check_bench.py [--records 4000] [--size 100] [--rounds 3] [--before-src DIR,...]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from tree_turns import add_turn_options, round_line, take_turns, trees_of

SHAPES = ("one size", "varied sizes", "varied, lz4")


def measure(records: int, size: int) -> list[float]:
    """Seconds of CPU a million records, per shape."""
    from odradek.protocol.records import encode_batch, parse_batches

    rng = random.Random(7)
    varied = [(None, rng.randbytes(rng.randint(size, 2 * size)), ()) for _ in range(records)]
    batches = [encode_batch([(None, b"x" * size, ())] * records), encode_batch(varied),
               encode_batch(varied, compression=3)]
    out = []
    for data in batches:
        parse_batches(data)
        loops = max(1, 2_000_000 // records)
        started = time.thread_time()
        for _ in range(loops):
            parse_batches(data)
        out.append((time.thread_time() - started) / (loops * records) * 1e6)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=4000, help="records a batch")
    ap.add_argument("--size", type=int, default=100)
    add_turn_options(ap)
    args = ap.parse_args()
    if args.child:
        print(" ".join(f"{x:.4f}" for x in measure(args.records, args.size)))
        return
    trees = trees_of(args.before_src)
    results: dict[str, list[list[float]]] = {t: [] for t in trees}
    for r, tree, out in take_turns(__file__, ["--records", str(args.records), "--size", str(args.size)], trees,
                                   args.rounds):
        results[tree].append([float(x) for x in out.split()])
        print(round_line(r, tree) + ", ".join(
            f"{shape} {s:.3f}" for shape, s in zip(SHAPES, results[tree][-1], strict=True)) + " s a million",
            flush=True)
    print(f"{args.records} records a batch, {args.size} B values; CPU seconds a million records, median of rounds:")
    for tree, rows in results.items():
        print(f"  {tree or 'this tree'}: " + ", ".join(
            f"{shape} {statistics.median(row[i] for row in rows):.3f}" for i, shape in enumerate(SHAPES)))


if __name__ == "__main__":
    main()
