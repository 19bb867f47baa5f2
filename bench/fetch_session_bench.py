"""Broker CPU per Fetch of many partitions, without and with a fetch session (KIP-227).

One `odradek serve` subprocess (file storage, a fresh data dir) with one topic of --partitions
partitions, --records records in each of the first --hot partitions. A raw connection then
sends --fetches Fetch v12 requests (max_wait 0, min_bytes 0, so each is answered at once)
naming every partition at its log end offset, the way a caught-up consumer or follower asks:

  sessionless   session epoch -1, every request names all partitions and every answer
                carries all of them (what odradek did before fetch sessions);
  session       one full fetch with epoch 0 opens a session, then incremental fetches that
                name only the partitions whose offset moved.

Before each fetch one record is produced to one of the hot partitions (the producer's time
is not the broker's fetch CPU, but is in both modes: "produce only" measures it alone), so each
answer has one partition with news.

For each mode: the broker's CPU seconds (utime + stime from /proc) over the fetches, per
fetch, the request and response sizes, and the client's wall time per fetch.

    .venv/bin/python bench/fetch_session_bench.py [--partitions 1000] [--fetches 300] [--hot 10]
"""
from __future__ import annotations

import argparse
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from produce_consume import free_port, proc_cpu_seconds, wait_port

from odradek.protocol.build import build
from odradek.protocol.framing import decode_response, encode_request, request_type

FETCH, VERSION = 1, 12
TOPIC = "bench-sessions"


class Wire:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.correlation = 0

    def call(self, body: Any) -> tuple[Any, int, int]:
        self.correlation += 1
        frame = encode_request(FETCH, VERSION, self.correlation, body)
        self.sock.sendall(frame)
        size = struct.unpack(">i", self._exact(4))[0]
        _, response = decode_response(self._exact(size), FETCH, VERSION)
        return response, len(frame), size + 4

    def _exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed by broker")
            buf += chunk
        return bytes(buf)


def request(session_id: int, epoch: int, offsets: dict[int, int] | None) -> Any:
    return build(request_type(FETCH, VERSION), {
        "replica_id": -1, "max_wait": 0, "min_bytes": 0, "max_bytes": 50 << 20, "isolation_level": 0,
        "session_id": session_id, "session_epoch": epoch, "rack_id": "", "forgotten_topics_data": [],
        "topics": [{"topic": TOPIC, "partitions": [
            {"partition": p, "current_leader_epoch": -1, "fetch_offset": o, "last_fetched_epoch": -1,
             "log_start_offset": -1, "partition_max_bytes": 1 << 20} for p, o in offsets.items()]}]
        if offsets else [],
    })


def run(mode: str, port: int, pid: int, producer: Producer, ends: dict[int, int], fetches: int,
        hot: int) -> dict[str, float]:
    """Before each fetch one record goes to one hot partition; each fetch moves the client's
    offsets to the high watermarks answered (an incremental fetch sends only those moved)."""
    wire = Wire(port)
    offsets = dict(ends)
    session_id, epoch = 0, -1
    if mode == "session":
        response, _, _ = wire.call(request(0, 0, offsets))
        session_id, epoch = response.session_id, 1
        assert session_id != 0, "the broker opened no session"
    moved: dict[int, int] = {}
    cpu0, t0 = proc_cpu_seconds(pid), time.perf_counter()
    sizes_in = sizes_out = answered = 0
    for i in range(fetches):
        producer.produce(TOPIC, value=b"x" * 100, partition=i % hot)
        producer.flush(10)
        if mode == "produce only":
            continue
        if mode == "session":
            response, n_in, n_out = wire.call(request(session_id, epoch, moved))
            epoch += 1
        else:
            response, n_in, n_out = wire.call(request(0, -1, offsets))
        assert response.error_code == 0, response.error_code
        moved = {p.partition_index: p.high_watermark for t in response.responses for p in t.partitions
                 if p.high_watermark > offsets[p.partition_index]}
        offsets.update(moved)
        sizes_in += n_in
        sizes_out += n_out
        answered += sum(len(t.partitions) for t in response.responses)
    wall = time.perf_counter() - t0
    cpu = proc_cpu_seconds(pid) - cpu0
    wire.sock.close()
    return {"cpu_ms_per_fetch": 1000 * cpu / fetches, "wall_ms_per_fetch": 1000 * wall / fetches,
            "request_bytes": sizes_in / fetches, "response_bytes": sizes_out / fetches,
            "partitions_answered": answered / fetches}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partitions", type=int, default=1000)
    parser.add_argument("--fetches", type=int, default=300)
    parser.add_argument("--hot", type=int, default=10)
    parser.add_argument("--records", type=int, default=100)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="fetch-session-bench-") as tmp, \
            open(Path(tmp) / "broker.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "odradek", "serve", "--listen", f"127.0.0.1:{port}",
                                 "--data-dir", str(Path(tmp) / "data")], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_port(port)
            admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
            admin.create_topics([NewTopic(TOPIC, args.partitions, 1)])[TOPIC].result(120)
            producer = Producer({"bootstrap.servers": f"127.0.0.1:{port}", "linger.ms": 5})
            for p in range(args.hot):
                for _ in range(args.records):
                    producer.produce(TOPIC, value=b"x" * 100, partition=p)
            producer.flush(60)
            ends = {p: (args.records if p < args.hot else 0) for p in range(args.partitions)}
            print(f"{args.partitions} partitions, {args.fetches} fetches each, broker pid {proc.pid}")
            for mode in ("produce only", "sessionless", "session"):
                r = run(mode, port, proc.pid, producer, ends, args.fetches, args.hot)
                print(f"{mode:12} broker CPU {r['cpu_ms_per_fetch']:.2f} ms/fetch, client wall "
                      f"{r['wall_ms_per_fetch']:.2f} ms/fetch, request {r['request_bytes']:.0f} B, response "
                      f"{r['response_bytes']:.0f} B, {r['partitions_answered']:.1f} partitions answered")
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
