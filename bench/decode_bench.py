"""Decoding a request: framing.decode_request on requests clients send often (issue 20).

Every request but Produce (which has its own short path) is decoded by framing.decode_request: its
header read, every length in it checked against the frame (protocol/bounds.py), then kio's reader.
A consumer's Fetch, a member's Heartbeat, a commit of 10 partitions and a ListOffsets are built
once and each decoded --number times, best of --repeat runs, microseconds a decode. Each tree
(this one, and --before-src trees: another tree's src/, e.g. `git archive <commit> src | tar -x -C
DIR/..`) runs in a fresh process, the trees taking turns in --rounds rounds.

    .venv/bin/python bench/decode_bench.py [--number 20000] [--repeat 7] [--rounds 3] [--before-src DIR,...]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import timeit
import uuid
from typing import Any

from tree_turns import add_turn_options, round_line, take_turns, trees_of


def requests() -> dict[str, tuple[int, int, dict[str, Any]]]:
    """name -> (api key, version, fields), as librdkafka 2 and the Java client send them."""
    partition = {"current_leader_epoch": 0, "fetch_offset": 5, "last_fetched_epoch": -1, "log_start_offset": -1,
                 "partition_max_bytes": 1 << 20}
    return {
        "Fetch v16, 2 partitions": (1, 16, {
            "max_wait": datetime.timedelta(milliseconds=500), "min_bytes": 1, "max_bytes": 52_428_800,
            "isolation_level": 0, "session_id": 0, "session_epoch": -1, "forgotten_topics_data": [], "rack_id": "",
            "topics": [{"topic_id": uuid.UUID(int=7), "partitions": [{"partition": p, **partition} for p in (0, 1)]}]}),
        "Heartbeat v4": (12, 4, {"group_id": "g", "generation_id": 1, "member_id": "m" * 36,
                                 "group_instance_id": None}),
        "OffsetCommit v8, 10 partitions": (8, 8, {
            "group_id": "g", "generation_id_or_member_epoch": 1, "member_id": "m", "group_instance_id": None,
            "topics": [{"name": "t", "partitions": [
                {"partition_index": i, "committed_offset": 5, "committed_leader_epoch": -1, "committed_metadata": ""}
                for i in range(10)]}]}),
        "ListOffsets v7": (2, 7, {"replica_id": -1, "isolation_level": 0, "topics": [
            {"name": "t", "partitions": [{"partition_index": 0, "current_leader_epoch": -1, "timestamp": -1}]}]}),
    }


def measure(number: int, repeat: int) -> dict[str, float]:
    from odradek.protocol.build import build
    from odradek.protocol.framing import decode_request, encode_request, request_type

    out = {}
    for name, (key, version, fields) in requests().items():
        frame = encode_request(key, version, 1, build(request_type(key, version), **fields))[4:]
        decode_request(frame)
        best = min(timeit.repeat(lambda frame=frame: decode_request(frame), number=number, repeat=repeat))
        out[name] = best / number * 1e6
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--number", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=7)
    add_turn_options(ap)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.number, args.repeat)))
        return
    trees = trees_of(args.before_src)
    results: dict[str, list[dict[str, float]]] = {t: [] for t in trees}
    child = ["--number", str(args.number), "--repeat", str(args.repeat)]
    for r, tree, out in take_turns(__file__, child, trees, args.rounds):
        results[tree].append(json.loads(out.splitlines()[-1]))
        print(round_line(r, tree) + ", ".join(f"{k} {v:.2f} us" for k, v in results[tree][-1].items()), flush=True)
    for name in requests():
        line = "; ".join(f"{tree or 'this tree'} {statistics.median(r[name] for r in runs):.2f}"
                         for tree, runs in results.items())
        print(f"{name:32} median us a decode: {line}")


if __name__ == "__main__":
    main()
