"""Broker CPU of a one-record Produce and of the parked Fetch it wakes, in process (issue 20).

With linger.ms=0 every record of 50 producers and 50 consumers is its own Produce request and
its own Fetch answer; this measures the broker's share of one such pair without clients or
sockets: on uvloop as the broker runs, a Broker on a file log dir (a fresh temp dir) with one topic of --partitions
partitions, its Dispatcher, and per step, on the next partition in turn, a Fetch v16 (as
librdkafka 2 sends: topic id, no session, max_wait 500 ms, min_bytes 1) dispatched at the log
end and left parked, then a Produce v10 (acks=all) of one 100 B record, then the Fetch's answer
awaited. The event loop thread's CPU time (time.thread_time) over --steps steps, after --warmup
steps not counted, is given per step. Each tree (this one, and --before-src trees: another
tree's src/, e.g. `git archive <commit> src | tar -x -C DIR/..`) runs in a fresh process, the
trees taking turns in --rounds rounds. Not covered: the socket reads and writes
(server/connection.py), which latency.py --clients measures with the rest.

    .venv/bin/python bench/wake_bench.py [--steps 20000] [--partitions 100] [--rounds 3] [--before-src DIR,...]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import tempfile
import time
from pathlib import Path
from typing import Any

from tree_turns import add_turn_options, one_figure_turns

SIZE = 100


def measure(partitions: int, steps: int, warmup: int) -> float:
    """CPU microseconds of the loop's thread a step (Produce + the parked Fetch it answers)."""
    from odradek.config import BrokerConfig
    from odradek.protocol.build import build
    from odradek.protocol.framing import encode_request, request_type
    from odradek.protocol.records import encode_batch
    from odradek.security import Session
    from odradek.server.broker import Broker
    from odradek.server.dispatcher import Dispatcher
    from odradek.server.handlers import ROUTES

    class Peer:  # what the dispatcher and the handlers ask of a connection
        session = Session()
        is_closed = False
        listener = None

    async def run(tmp: str) -> float:
        broker = Broker(BrokerConfig(data_dir=Path(tmp)))
        broker.open()
        topic = "wake"
        broker.create_topic(topic, partitions)
        topic_id = broker.topics()[topic].topic_id
        dispatcher = Dispatcher(broker, ROUTES)
        peer: Any = Peer()
        total = warmup + steps
        batch = encode_batch([(None, b"x" * SIZE, ())], timestamp_ms=int(time.time() * 1000))
        produce = [encode_request(0, 10, 1, build(
            request_type(0, 10), transactional_id=None, acks=-1, timeout=datetime.timedelta(seconds=30),
            topic_data=[{"name": topic, "partition_data": [{"index": p, "records": batch}]}]))[4:]
            for p in range(partitions)]

        def fetch(p: int, offset: int) -> bytes:
            body = build(request_type(1, 16), max_wait=datetime.timedelta(milliseconds=500), min_bytes=1,
                         max_bytes=52_428_800, isolation_level=0, session_id=0, session_epoch=-1,
                         topics=[{"topic_id": topic_id, "partitions": [{
                             "partition": p, "current_leader_epoch": 0, "fetch_offset": offset,
                             "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": 1 << 20}]}],
                         forgotten_topics_data=[], rack_id="")
            return encode_request(1, 16, 2, body)[4:]

        fetches = [fetch(k % partitions, k // partitions) for k in range(total)]
        loop = asyncio.get_running_loop()
        started = 0.0
        for k in range(total):
            if k == warmup:
                started = time.thread_time()
            parked = loop.create_task(dispatcher.dispatch(peer, fetches[k]))
            await asyncio.sleep(0)  # the Fetch reads nothing and parks
            await asyncio.sleep(0)
            if parked.done():
                raise AssertionError("the Fetch answered before the record was produced")
            await dispatcher.dispatch(peer, produce[k % partitions])
            answer = await parked
            if not answer or len(answer) < SIZE:
                raise AssertionError("the Fetch answered without the record")
        took = time.thread_time() - started
        broker.close()
        return took / steps * 1e6

    with tempfile.TemporaryDirectory() as tmp:
        try:
            import uvloop  # the broker's own loop (server/app.py)
        except ImportError:
            return asyncio.run(run(tmp))
        return uvloop.run(run(tmp))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--warmup", type=int, default=2_000)
    ap.add_argument("--partitions", type=int, default=100)
    add_turn_options(ap)
    args = ap.parse_args()
    if args.child:
        print(f"{measure(args.partitions, args.steps, args.warmup):.2f}")
        return
    child = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--partitions", str(args.partitions)]
    one_figure_turns(__file__, child, args.before_src, args.rounds, "us", "a Produce + parked Fetch")


if __name__ == "__main__":
    main()
