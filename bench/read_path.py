"""Reading requests off a connection: CPU microseconds a megabyte of Produce frames (issue 20).

A Connection is fed Produce frames of --frame-kb (one partition, 100 B records) in reads of at
most --read-kb, as an event loop's transport would: where the connection is a BufferedProtocol
(get_buffer / buffer_updated) the bytes are copied into the buffer it gives, as the kernel copies
them; otherwise into a read chunk, then into bytes of it (uvloop's own chunk, then the bytes it
hands to data_received). Only the reading is timed (thread CPU time): the frames queued are then
served untimed and dropped. Each tree (this one, and --before-src trees: another tree's src/, e.g.
`git archive <commit> src | tar -x -C DIR/..`) runs in a fresh process, the trees taking turns.

    .venv/bin/python bench/read_path.py [--frame-kb 1024] [--read-kb 64] [--frames 300] [--rounds 3]
        [--before-src DIR,...]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import time

from tree_turns import add_turn_options, one_figure_turns


def child(frame_kb: int, read_kb: int, frames: int) -> float:
    from odradek.config import BrokerConfig
    from odradek.protocol.build import build
    from odradek.protocol.framing import encode_request, request_type
    from odradek.protocol.records import encode_batch
    from odradek.server.broker import Broker
    from odradek.server.connection import Connection
    from odradek.server.dispatcher import Dispatcher
    from odradek.server.handlers import ROUTES
    from odradek.server.limits import ConnectionLimits

    records = max(1, frame_kb * 1024 // 110)
    batch = encode_batch([(None, b"v" * 100, ())] * records, timestamp_ms=1_700_000_000_000)
    body = build(request_type(0, 9), transactional_id=None, acks=1, timeout=datetime.timedelta(seconds=5),
                 topic_data=[{"name": "t", "partition_data": [{"index": 0, "records": batch}]}])
    frame = encode_request(0, 9, 1, body)
    read = read_kb * 1024
    chunk = memoryview(bytearray(256 * 1024))

    class Transport:
        def get_extra_info(self, name: str, default: object = None) -> object:
            return ("127.0.0.1", 40000) if name == "peername" else default

        def write(self, data: bytes) -> None:
            pass

        def pause_reading(self) -> None:
            pass

        def resume_reading(self) -> None:
            pass

        def close(self) -> None:
            pass

        def is_closing(self) -> bool:
            return False

        def get_write_buffer_size(self) -> int:
            return 0

    async def run() -> float:
        config = BrokerConfig(storage="memory")
        broker = Broker(config)
        broker.open()
        broker.create_topic("t", 1)
        conn = Connection(Dispatcher(broker, ROUTES), ConnectionLimits(config), set())
        conn.connection_made(Transport())  # type: ignore[arg-type]
        buffered = hasattr(conn, "get_buffer")
        spent = 0.0
        for _ in range(frames):
            started = time.thread_time()
            pos = 0
            while pos < len(frame):
                if buffered:
                    view = conn.get_buffer(-1)
                    n = min(read, len(view), len(frame) - pos)
                    view[:n] = frame[pos : pos + n]
                    del view
                    conn.buffer_updated(n)
                else:
                    n = min(read, len(chunk), len(frame) - pos)
                    chunk[:n] = frame[pos : pos + n]
                    conn.data_received(chunk[:n].tobytes())
                pos += n
            spent += time.thread_time() - started
            for _ in range(20):  # served, untimed
                await asyncio.sleep(0)
        conn.close(None)
        return spent / (frames * len(frame) / (1 << 20)) * 1e6

    return asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    options = (("--frame-kb", 1024), ("--read-kb", 64), ("--frames", 300))
    for option, default in options:
        ap.add_argument(option, type=int, default=default)
    add_turn_options(ap)
    args = ap.parse_args()
    values = [getattr(args, option[2:].replace("-", "_")) for option, _ in options]
    if not args.child:
        one_figure_turns(__file__, [f"{option}={v}" for (option, _), v in zip(options, values, strict=True)],
                         args.before_src, args.rounds, "us", "CPU reading a megabyte of Produce frames")
        return
    print(f"{child(*values):.1f}")


if __name__ == "__main__":
    main()
