"""Encoding a response: kio's generic writer against protocol/writer.py (issue 20).

Builds a few answers the broker gives often and times each writer on each (best of --repeat
runs of --number encodes, microseconds an encode), after checking both give the same bytes.

    .venv/bin/python bench/encode_bench.py [--number 2000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import io
import timeit
from typing import Any

from kio.serial import entity_writer as kio_entity_writer

from odradek.protocol.build import build
from odradek.protocol.framing import response_type
from odradek.protocol.writer import encode


def answers() -> dict[str, Any]:
    coordinator = {"key": "g1", "node_id": 0, "host": "127.0.0.1", "port": 9092, "error_code": 0,
                   "error_message": None}
    offsets = {"partition_index": 0, "error_code": 0, "timestamp": -1, "offset": 5, "leader_epoch": 0}
    return {
        "FindCoordinator v4": build(response_type(10, 4), throttle_time_ms=0, coordinators=[coordinator]),
        "Heartbeat v4": build(response_type(12, 4), throttle_time_ms=0, error_code=0),
        "ListOffsets v7": build(response_type(2, 7), throttle_time_ms=0,
                                topics=[{"name": "t", "partitions": [offsets]}]),
        "OffsetCommit v8, 10 partitions": build(response_type(8, 8), throttle_time_ms=0, topics=[
            {"name": "t", "partitions": [{"partition_index": i, "error_code": 0} for i in range(10)]}]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--number", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    for name, entity in answers().items():
        writer = kio_entity_writer(type(entity))

        def with_kio(entity: Any = entity, writer: Any = writer) -> bytes:
            buf = io.BytesIO()
            writer(buf, entity)
            return buf.getvalue()

        assert with_kio() == encode(entity), name
        times = []
        for run in (with_kio, lambda entity=entity: encode(entity)):
            best = min(timeit.repeat(run, number=args.number, repeat=args.repeat))
            times.append(best / args.number * 1e6)
        print(f"{name:32} kio {times[0]:6.1f} us, odradek {times[1]:6.1f} us")


if __name__ == "__main__":
    main()
