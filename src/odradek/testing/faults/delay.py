"""A delay line for packets: the netem `delay` this kernel lacks, built on NFQUEUE.

iptables rules in a node's namespace send its packets to an NFQUEUE (with
`--queue-bypass`, so that while no process listens the packets pass: a dead delay
line is no partition); this process, started in the same namespace (nfqueue's
netlink sockets belong to a network namespace), holds each packet for its delay and
then accepts it. Release times never go backwards, so packets leave in the order
they came (per flow, and overall) even with jitter. The kernel's queue is bounded
(`--max-held` packets awaiting a verdict; past that the kernel drops, which is more
loss, not more memory). SIGTERM releases everything still held at once and exits;
so does the end of `--lifetime`. The last line on stdout is a JSON summary.

    ip netns exec NS python src/odradek/testing/faults/delay.py --delay-ms 200 --jitter-ms 20
"""

from __future__ import annotations

import argparse
import json
import random
import select
import signal
import sys
import time
from collections import deque
from types import FrameType

from netfilterqueue import COPY_META, NetfilterQueue, Packet


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queue-num", type=int, default=0)
    ap.add_argument("--delay-ms", type=float, default=200.0)
    ap.add_argument("--jitter-ms", type=float, default=0.0, help="uniform in [-jitter, +jitter]")
    ap.add_argument("--max-held", type=int, default=4096, help="the kernel queue's length")
    ap.add_argument("--lifetime", type=float, default=3600.0, help="seconds; then release everything and exit")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    held: deque[tuple[float, Packet]] = deque()
    stats = {"held": 0, "released": 0, "max_held_at_once": 0}
    last = 0.0

    def hold(packet: Packet) -> None:
        nonlocal last
        delay = (args.delay_ms + rng.uniform(-args.jitter_ms, args.jitter_ms)) / 1000
        last = max(time.monotonic() + delay, last)  # never before the packet ahead of it
        held.append((last, packet))
        stats["held"] += 1
        stats["max_held_at_once"] = max(stats["max_held_at_once"], len(held))

    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    nfq = NetfilterQueue()
    nfq.bind(args.queue_num, hold, max_len=args.max_held, mode=COPY_META)
    fd = nfq.get_fd()
    print("ready", flush=True)
    deadline = time.monotonic() + args.lifetime
    try:
        while not stopping and time.monotonic() < deadline:
            wait = min(0.1, held[0][0] - time.monotonic()) if held else 0.1
            readable, _, _ = select.select([fd], [], [], max(0.0, wait))
            if readable:
                nfq.run(block=False)
            now = time.monotonic()
            while held and held[0][0] <= now:
                held.popleft()[1].accept()
                stats["released"] += 1
    finally:
        while held:  # what is still held goes now, in order
            held.popleft()[1].accept()
            stats["released"] += 1
        nfq.unbind()
    print(json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
