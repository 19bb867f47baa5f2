"""The machine's floor under issue 20's many-clients load: its exchanges with no Kafka in them.

`bench/latency.py --clients 50 --load-client franz` asks one broker for 50 producers and 50
consumers at 400 records a second each (100 B, linger 0, acks=all). Unsaturated, every record
costs two exchanges on the loopback wire: a Produce and its answer on the producer's connection,
and a parked Fetch answered and the next Fetch sent on the consumer's. This bench runs that shape of
traffic against relays that do nothing else (tests/go/wirefloor: producer i's frame of records is
acknowledged and handed to consumer i's parked fetch, or kept until it fetches), from one Go load
process (the same program's `load`: up to 5 frames of a producer unacknowledged, as franz-go's
idempotent producer keeps, records due meanwhile going in the next frame), so that what it measures
is what the machine's loopback sockets, its scheduler and the server's event loop cost the load:

  - Python relay (asyncio, uvloop): odradek's shape (one process, one event loop, an
    asyncio.Protocol per connection) with no Kafka parsing, log or index;
  - Go relay: a compiled server, a goroutine per connection on every core;
  - with --odradek, odradek itself under the franz-go load of bench/latency.py (the same rates,
    each run after the relays', so one run gives all three on the same machine).

For each server and rate: end-to-end latency from the record's stamp to the consumer's read, the
server's CPU (cores: CPU seconds a second) and the load's. A fresh server for every rate.

    .venv/bin/python bench/wire_floor.py [--clients 50] [--rates 50,100,200,400] [--seconds 10]
        [--warmup 1] [--rounds 1] [--odradek]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

from latency import Samples, broker, measure_franz, run_go_load
from produce_consume import free_port, serving

WIREFLOOR = Path(__file__).resolve().parent.parent / "tests" / "go" / "bin" / "wirefloor"
PYTHON_RELAY = "Python relay (uvloop)"
GO_RELAY = "Go relay"
ODRADEK = "odradek (franz-go)"
MAX_FRAME = 64 << 20
ACK = (8).to_bytes(4, "big") + bytes(8)


class Mailbox:
    """Consumer i's side of the relay: records not yet fetched, and its fetch if one is parked."""

    def __init__(self) -> None:
        self.pending = bytearray()
        self.parked = False
        self.consumer: asyncio.Transport | None = None

    def deliver(self) -> None:
        if self.parked and self.pending and self.consumer is not None:
            self.parked = False
            self.consumer.write(len(self.pending).to_bytes(4, "big") + self.pending)
            self.pending.clear()


class Relay(asyncio.Protocol):
    """One connection of the Python relay: its first frame says "P i" or "C i", the rest are records
    (a producer's) or fetches (a consumer's)."""

    def __init__(self, boxes: dict[int, Mailbox]) -> None:
        self.boxes = boxes
        self.buffer = bytearray()
        self.box: Mailbox | None = None
        self.producer = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        at = 0
        while len(buffer) - at >= 4:
            size = int.from_bytes(buffer[at:at + 4], "big")
            if size > MAX_FRAME:
                assert self.transport is not None
                self.transport.close()
                return
            if len(buffer) - at - 4 < size:
                break
            self.frame(bytes(buffer[at + 4:at + 4 + size]))
            at += 4 + size
        del buffer[:at]

    def frame(self, body: bytes) -> None:
        box = self.box
        if box is None:
            self.producer = body[:1] == b"P"
            box = self.box = self.boxes.setdefault(int(body[2:]), Mailbox())
            if not self.producer:
                box.consumer = self.transport
            return
        if self.producer:
            box.pending += body
            box.deliver()
            assert self.transport is not None
            self.transport.write(ACK)
        else:
            box.parked = True
            box.deliver()


def serve_python_relay(port: int) -> None:
    import uvloop

    async def main() -> None:
        boxes: dict[int, Mailbox] = {}
        server = await asyncio.get_running_loop().create_server(lambda: Relay(boxes), "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


@contextmanager
def relay(name: str) -> Iterator[tuple[str, int]]:
    """(address, pid) of a fresh relay."""
    port = free_port()
    if name == PYTHON_RELAY:
        cmd = [sys.executable, __file__, "--serve", str(port)]
    else:
        cmd = [str(WIREFLOOR), "serve", f"127.0.0.1:{port}"]
    with serving(cmd, port) as served:
        yield served


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50, help="N producers and N consumers")
    ap.add_argument("--rates", default="50,100,200,400", help="each producer's records a second, comma-separated")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds produced first and left out")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--odradek", action="store_true", help="also odradek under bench/latency.py's franz-go load")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the Python relay's own process
    args = ap.parse_args()
    if args.serve:
        serve_python_relay(args.serve)
        return
    if not WIREFLOOR.exists():
        sys.exit(f"{WIREFLOOR} is missing: ./dev test builds it (or: cd tests/go && go build -o bin/ ./...)")
    rates = [int(r) for r in args.rates.split(",")]
    n = args.clients
    names = [PYTHON_RELAY, GO_RELAY] + ([ODRADEK] if args.odradek else [])
    results: dict[tuple[str, int], Samples] = {}
    for _ in range(args.rounds):
        for name in names:
            for rate in rates:
                if name == ODRADEK:
                    with broker("odradek", None) as (bootstrap, pid, stalls):
                        assert bootstrap is not None
                        s = measure_franz(bootstrap, n, rate, args.seconds, args.warmup, pid, stalls)
                else:
                    with relay(name) as (address, pid):
                        s = run_go_load([str(WIREFLOOR), "load", address, str(n), str(rate), str(args.seconds),
                                         str(args.warmup)], pid)
                total = results.setdefault((name, rate), Samples())
                total.latencies_ns += s.latencies_ns
                total.records += s.records
                total.lost += s.lost
                total.cpu_s += s.cpu_s
                total.client_cpu_s += s.client_cpu_s
    run_s = (args.seconds + args.warmup) * args.rounds
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"{n} producers and {n} consumers, 100 B records, the rates each producer's; {args.seconds:g} s measured "
          f"after {args.warmup:g} s at each rate, a fresh server each; {args.rounds} round(s)")
    print(f"{'server':<22} {'msg/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'p999 ms':>8} {'max ms':>8} "
          f"{'server cores':>12} {'us/record':>9} {'load cores':>10} lost")
    for (name, rate), s in results.items():
        per = f"{s.cpu_s / s.records * 1e6:9.0f}" if s.records else "        -"
        # the load's CPU includes its set-up (connections; odradek's franz clients and warm-up records)
        print(f"{name:<22} {f'{n}x{rate}':>7} {s.percentile(0.5):8.2f} {s.percentile(0.99):8.2f} "
              f"{s.percentile(0.999):8.2f} {max(s.latencies_ns, default=0) / 1e6:8.2f} {s.cpu_s / run_s:12.2f} "
              f"{per} {s.client_cpu_s / run_s:10.2f} {s.lost}")


if __name__ == "__main__":
    main()
