"""Many partitions on one broker: create, Metadata, produce to many at once, restart, delete.

One `odradek serve` subprocess (file storage, a fresh data dir), then, in order:
  1. --topics topics of --partitions partitions each, created --per-request topics per
     CreateTopics (confluent-kafka AdminClient): total time and the slowest request;
  2. Metadata v12 for all topics over a raw socket, --metadata-runs times: median and
     slowest answer, response size;
  3. idle RSS and open files of the broker, and their growth per partition;
  4. produce (acks=1, 100 B records, linger.ms=5) of --records records to one partition,
     then the same number spread over --spread partitions at once (round robin over the
     first topics' partitions): msg/s of each and the ratio;
  5. restart after SIGTERM (clean: the stop's time too) and after SIGKILL: time from exec
     to the first answered ApiVersions, and to the first answered Metadata for all topics;
  6. DeleteTopics of every topic (the same requests' size as the creation).
Throughout, the broker logs every event-loop stall over 5 ms (event.loop.stall.threshold.ms=5);
each phase prints how many there were and the longest.

`--produce-only` measures step 4 alone, --rounds times on one fresh broker holding just the one
partition and the --spread partitions (--spread-topics topics), the two shapes taking turns after
a first run of each that is not counted: each
round's msg/s, the broker's CPU seconds per million records of each shape (from /proc/PID/stat:
utime + stime while the producer ran) and the client's (this process), the ratio many / one, and
the medians over the rounds. Other brokers take their turn in every round beside it, each first
in turn: --before-src DIR (odradek from another tree's src/, e.g. `git archive <commit> src | tar
-x -C DIR/..`), --mock (librdkafka's mock cluster inside this process: the client alone, the
ceiling the client leaves; its topics have 4 partitions, so its spread is --spread / 4 topics) and
--kafka (Apache Kafka 4.3.1, bench/kafka_ref.py).

`--raw-produce` measures the broker alone: pre-encoded Produce v10 requests (one partition each,
--batch records of 100 B, round robin over --spread partitions, or one partition with --spread 1)
sent over one raw socket with --in-flight unanswered at most, --requests of them a round, --rounds
rounds: the broker's CPU per request and per million records (no client CPU beside it to compete
with; librdkafka sends one Produce a partition, so this is what 1,000 partitions cost per request).

`--connections N` measures connections instead: --active raw connections each send Produce v9
requests (one 100 B record, acks=1) in turn at --rate requests a second in all, and the time from
send to answer is recorded, first alone, then while N more connections are held open idle (each
sent one ApiVersions first, so the broker has set it up), --churn of them closed and reopened a
second meanwhile (reconnecting clients: the garbage collector's full collections follow new
objects); RSS per idle connection, and each phase's stalls over 5 ms: how many were the broker's
own work (its loop's thread ran at least half the late tick) and how many ran a full collection.

    .venv/bin/python bench/scale_bench.py [--topics 100] [--partitions 100] [--per-request 10]
        [--spread 1000] [--records 200000] [--nofile N]
    .venv/bin/python bench/scale_bench.py --produce-only [--spread 1000] [--spread-topics 10] [--records 200000]
        [--rounds 5] [--before-src DIR] [--mock] [--kafka]
    .venv/bin/python bench/scale_bench.py --raw-produce [--spread 1000] [--batch 25] [--in-flight 20]
        [--requests 10000] [--rounds 5]
    .venv/bin/python bench/scale_bench.py --connections 10000 [--active 100] [--rate 2000] [--seconds 10]
        [--churn 0]
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import re
import resource
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from produce_consume import free_port, proc_cpu_seconds

from odradek.protocol.build import build
from odradek.protocol.framing import decode_response, encode_request, request_type
from odradek.protocol.records import encode_batch

STALL = re.compile(r"the event loop stalled for (\d+) ms")
LIMITED = ("import resource, runpy, sys; n = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); "
           "sys.argv = ['odradek', *sys.argv[2:]]; runpy.run_module('odradek', run_name='__main__', alter_sys=True)")


class Broker:
    def __init__(self, data_dir: Path, nofile: int | None, src: Path | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.log_path = data_dir.parent / "broker.log"
        self.nofile = nofile
        self.src = src  # another tree's src/ (PYTHONPATH before the installed odradek), e.g. an earlier commit's
        self.metrics_port: int | None = None  # set before start: /metrics served there
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_seen = 0

    def start(self) -> float:
        """Seconds from exec to the first answered ApiVersions."""
        env = {**os.environ, "ODRADEK_EVENT_LOOP_STALL_THRESHOLD_MS": "5"}
        if self.src is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(self.src), env.get("PYTHONPATH"))))
        # RLIMIT_NOFILE set in the child itself: `python -c LIMITED N serve ...`
        limited = ["-c", LIMITED, str(self.nofile)] if self.nofile is not None else ["-m", "odradek"]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        started = time.perf_counter()
        metrics = ["--metrics-port", str(self.metrics_port)] if self.metrics_port is not None else []
        self.proc = subprocess.Popen(
            [sys.executable, *limited, "serve", "--listen", f"127.0.0.1:{self.port}",
             "--data-dir", str(self.data_dir), *metrics], stdout=log, stderr=log, env=env)
        log.close()
        deadline = started + 120
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited: {self.log_path.read_text()[-2000:]}")
            try:
                api_versions(self.port)
                return time.perf_counter() - started
            except OSError:
                time.sleep(0.01)
        raise TimeoutError("broker did not answer")

    def stop(self, sig: int = signal.SIGTERM) -> float:
        assert self.proc is not None
        started = time.perf_counter()
        self.proc.send_signal(sig)
        self.proc.wait(120)
        return time.perf_counter() - started

    def stalls(self) -> tuple[int, int]:
        """(count, longest ms) of the stalls logged since the last call."""
        text = self.log_path.read_text(errors="replace")
        new, self._log_seen = text[self._log_seen:], len(text)
        found = [int(m.group(1)) for m in STALL.finditer(new)]
        return len(found), max(found, default=0)

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def open_files(self) -> int:
        assert self.proc is not None
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))


def roundtrip(port: int, api_key: int, version: int, body: object) -> tuple[object, int]:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(encode_request(api_key, version, 1, body))
        size = struct.unpack(">i", recv(s, 4))[0]
        frame = recv(s, size)
    return decode_response(frame, api_key, version)[1], size


def recv(s: socket.socket, n: int) -> bytes:
    parts = []
    while n:
        chunk = s.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("closed")
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def api_versions(port: int) -> None:
    roundtrip(port, 18, 3, request_type(18, 3)(client_software_name="scale", client_software_version="1"))


def metadata_all(port: int) -> tuple[float, int, int]:
    """(seconds, topics, response bytes) of one Metadata v12 for all topics on a fresh connection."""
    body = request_type(3, 12)(topics=None, allow_auto_topic_creation=False,
                               include_topic_authorized_operations=False)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        frame = encode_request(3, 12, 1, body)
        started = time.perf_counter()
        s.sendall(frame)
        size = struct.unpack(">i", recv(s, 4))[0]
        data = recv(s, size)
        took = time.perf_counter() - started
    return took, len(decode_response(data, 3, 12)[1].topics), size


def produce(bootstrap: int | str, targets: list[tuple[str, int]], records: int, pid: int | None = None,
            client_cpu: list[float] | None = None, client_requests: list[float] | None = None) -> tuple[float, float]:
    """(msg/s, the broker's CPU seconds meanwhile: of process `pid`, else 0) of `records` 100 B records,
    acks=1, round robin over `targets`; the client's own CPU seconds (this process: the Python caller
    and librdkafka's threads) are appended to `client_cpu`. `bootstrap`: host:port, or a port on 127.0.0.1.
    With `client_requests`, librdkafka's statistics (every second, which costs the client CPU) count
    its Produce requests: the records a request of the timed part are appended."""
    address = f"127.0.0.1:{bootstrap}" if isinstance(bootstrap, int) else bootstrap
    stats: list[dict[str, Any]] = []
    extra: dict[str, Any] = {} if client_requests is None else {
        "statistics.interval.ms": 1000, "stats_cb": lambda text: stats.append(json.loads(text))}
    p = Producer({"bootstrap.servers": address, "acks": 1, "linger.ms": 5,
                  "batch.size": 1_000_000, "queue.buffering.max.messages": 2_000_000,
                  "queue.buffering.max.kbytes": 2_000_000, **extra})
    payload = b"x" * 100
    for topic, part in targets:  # metadata and connections first: only the records are timed
        p.produce(topic, payload, partition=part)
    p.flush(60)

    def sent_requests(producer: Producer) -> int:  # after the next statistics, which follow every request so far
        seen = len(stats)
        deadline = time.perf_counter() + 5
        while len(stats) == seen and time.perf_counter() < deadline:
            producer.poll(0.1)
        return sum(b.get("req", {}).get("Produce", 0) for b in stats[-1]["brokers"].values()) if stats else 0

    requests0 = sent_requests(p) if client_requests is not None else 0
    n = len(targets)
    cpu0 = proc_cpu_seconds(pid) if pid is not None else 0.0
    own0 = time.process_time()
    started = time.perf_counter()
    for i in range(records):
        topic, part = targets[i % n]
        try:
            p.produce(topic, payload, partition=part)
        except BufferError:
            p.poll(0.005)
            p.produce(topic, payload, partition=part)
    remaining = p.flush(120)
    took = time.perf_counter() - started
    cpu = proc_cpu_seconds(pid) - cpu0 if pid is not None else 0.0
    if client_cpu is not None:
        client_cpu.append(time.process_time() - own0)
    if client_requests is not None:
        client_requests.append(records / max(sent_requests(p) - requests0, 1))
    del p
    if remaining:
        raise RuntimeError(f"{remaining} records not delivered")
    return records / took, cpu


async def active_clients(port: int, topic: str, active: int, rate: int, seconds: float) -> list[float]:
    """Latencies (ms) of Produce requests from `active` connections, `rate` a second in all."""
    batch = encode_batch([(None, b"x" * 100, ())], timestamp_ms=int(time.time() * 1000))
    body = build(request_type(0, 9), transactional_id=None, acks=1, timeout=datetime.timedelta(seconds=30),
                 topic_data=[{"name": topic, "partition_data": [{"index": 0, "records": batch}]}])
    frame = encode_request(0, 9, 1, body)
    latencies: list[float] = []
    interval = active / rate
    end = time.perf_counter() + seconds

    async def client(i: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(interval * i / active)
        next_at = time.perf_counter()
        while next_at < end:
            started = time.perf_counter()
            writer.write(frame)
            size = struct.unpack(">i", await reader.readexactly(4))[0]
            await reader.readexactly(size)
            latencies.append((time.perf_counter() - started) * 1e3)
            next_at += interval
            await asyncio.sleep(max(next_at - time.perf_counter(), 0))
        writer.close()

    await asyncio.gather(*(client(i) for i in range(active)))
    return latencies


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    return f"p50 {q(0.5):.2f} / p99 {q(0.99):.2f} / p99.9 {q(0.999):.2f} / max {ordered[-1]:.2f} ms ({len(ordered):,})"


def connections(args: argparse.Namespace) -> None:
    """--active connections' Produce latency alone, then beside --connections idle ones (with --churn of
    them closed and reopened a second meanwhile, as reconnecting clients do); the broker's stalls over
    5 ms of each phase, how many were its own work (its loop's thread ran at least half the late tick,
    not a process waiting for a CPU) and how many ran a full garbage collection."""
    import threading

    stall = re.compile(r"the event loop stalled for (\d+) ms; (.*?)its thread ran (\d+) ms of the (\d+) ms")
    seen = [0]

    def stalls_of_phase(b: Broker) -> str:
        text = b.log_path.read_text(errors="replace")
        new, seen[0] = text[seen[0]:], len(text)
        found = [(int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))) for m in stall.finditer(new)]
        own = [ms for ms, _, ran, elapsed in found if ran >= 0.5 * elapsed]
        full_gc = sum(1 for _, what, _, _ in found if "generation 2" in what)
        return (f"loop stalls > 5 ms: {len(found)}, longest {max((f[0] for f in found), default=0)} ms; its own "
                f"work in {len(own)} (longest {max(own, default=0)} ms), a full collection in {full_gc}")

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"load average {os.getloadavg()[0]:.1f}; {args.active} active connections, {args.rate} Produce/s in all, "
          f"{args.connections:,} idle, {args.churn} of them reopened a second while the active ones run beside them")
    with tempfile.TemporaryDirectory(prefix="conn-bench-") as tmp:
        b = Broker(Path(tmp) / "data", None)
        b.start()
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{b.port}"})
        admin.create_topics([NewTopic("active", 1, 1)])["active"].result(30)
        del admin
        asyncio.run(active_clients(b.port, "active", args.active, args.rate, 1.0))  # warm-up
        stalls_of_phase(b)
        alone = asyncio.run(active_clients(b.port, "active", args.active, args.rate, args.seconds))
        print(f"{args.active} active alone: {percentiles(alone)}; {stalls_of_phase(b)}")
        time.sleep(1)
        rss0 = b.rss_mb()
        hello = encode_request(18, 3, 1, request_type(18, 3)(client_software_name="idle",
                                                              client_software_version="1"))

        def open_idle() -> socket.socket:
            s = socket.create_connection(("127.0.0.1", b.port), timeout=30)
            s.sendall(hello)
            return s

        held = []
        started = time.perf_counter()
        for _ in range(args.connections):
            held.append(open_idle())
        for s in held:
            recv(s, struct.unpack(">i", recv(s, 4))[0])
        took = time.perf_counter() - started
        time.sleep(2)
        rss1 = b.rss_mb()
        print(f"{args.connections:,} idle connections opened (each answered one ApiVersions) in {took:.1f} s: "
              f"RSS {rss0:.0f} -> {rss1:.0f} MB ({(rss1 - rss0) * 1024 / args.connections:.1f} KB each), "
              f"{b.open_files():,} open files; {stalls_of_phase(b)}")
        done = threading.Event()
        reopened = [0]

        def churn() -> None:  # close the oldest idle connection and open a new one, --churn a second
            if not args.churn:
                return
            next_at = time.perf_counter()
            while not done.is_set():
                next_at += 1 / args.churn
                held.pop(0).close()
                s = open_idle()
                recv(s, struct.unpack(">i", recv(s, 4))[0])
                held.append(s)
                reopened[0] += 1
                done.wait(max(next_at - time.perf_counter(), 0))

        churner = threading.Thread(target=churn, daemon=True)
        churner.start()
        beside = asyncio.run(active_clients(b.port, "active", args.active, args.rate, args.seconds))
        done.set()
        churner.join(30)
        print(f"{args.active} active beside {args.connections:,} idle ({reopened[0]:,} reopened meanwhile): "
              f"{percentiles(beside)}; {stalls_of_phase(b)}; RSS {b.rss_mb():.0f} MB")
        for s in held:
            s.close()
        b.stop()


def wait_idle(pid: int, timeout: float = 120.0) -> float:
    """Wait until process `pid` uses under 5% of a CPU for 0.5 s (a new partition's directory and
    file are made by the broker's file thread after CreateTopics answered: 1,000 of them took
    seconds of this machine's CPU, which the first figures measured); the seconds waited."""
    started = time.perf_counter()
    last = proc_cpu_seconds(pid)
    while time.perf_counter() - started < timeout:
        time.sleep(0.5)
        now = proc_cpu_seconds(pid)
        if now - last < 0.025:
            break
        last = now
    return time.perf_counter() - started


@dataclass
class Target:
    """A broker the --produce-only rounds produce to: its one partition and its spread."""

    label: str
    bootstrap: str
    pid: int | None  # its CPU is measured when it is a process of its own
    single: list[tuple[str, int]]
    spread: list[tuple[str, int]]
    broker: Broker | None = None  # an odradek: its stalls are counted
    singles: list[tuple[float, float, float]] = field(default_factory=list)  # msg/s, broker CPU s/M, client CPU s/M
    manys: list[tuple[float, float, float]] = field(default_factory=list)


def odradek_target(label: str, tmp: Path, args: argparse.Namespace, names: list[str], per_topic: int,
                   src: Path | None) -> Target:
    tmp.mkdir()
    b = Broker(tmp / "data", args.nofile, src)
    b.metrics_port = free_port()  # its Produce request count: librdkafka's requests grow as the answers slow
    b.start()
    assert b.proc is not None
    create_spread(f"127.0.0.1:{b.port}", names, per_topic)
    spread = [(names[i // per_topic], i % per_topic) for i in range(args.spread)]
    return Target(label, f"127.0.0.1:{b.port}", b.proc.pid, [("single", 0)], spread, b)


def create_spread(bootstrap: str, names: list[str], per_topic: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(n, per_topic, 1) for n in names] + [NewTopic("single", 1, 1)]).values():
        f.result(60)


def mock_target(args: argparse.Namespace, stack: ExitStack) -> Target:
    """librdkafka's mock cluster, inside this process (the client alone). It answers no CreateTopics; a
    topic is made on first use with 4 partitions, so the spread is --spread / 4 topics of 4."""
    holder = Producer({"bootstrap.servers": "", "test.mock.num.brokers": 1, "log_level": 3})
    stack.callback(holder.flush, 10)
    broker = next(iter(holder.list_topics(timeout=10).brokers.values()))
    spread = [(f"mock-{i // 4:04d}", i % 4) for i in range(args.spread)]
    return Target("client alone (mock)", f"{broker.host}:{broker.port}", None, [("single", 0)], spread)


def kafka_target(args: argparse.Namespace, names: list[str], per_topic: int, stack: ExitStack) -> Target:
    from kafka_ref import KafkaReference

    kafka = stack.enter_context(KafkaReference())
    create_spread(kafka.bootstrap, names, per_topic)
    spread = [(names[i // per_topic], i % per_topic) for i in range(args.spread)]
    return Target("Apache Kafka 4.3.1", kafka.bootstrap, kafka.pid, [("single", 0)], spread)


def produce_only(args: argparse.Namespace) -> None:
    """One partition against --spread partitions, in turns: msg/s and broker CPU per million records;
    with --before-src, --mock or --kafka, each of those brokers takes its turn in every round too."""
    topics = max(args.spread_topics, 1)
    per_topic = -(-args.spread // topics)
    print(f"load average {os.getloadavg()[0]:.1f}; {args.records:,} x 100 B, acks=1, linger.ms=5: one partition "
          f"against {args.spread:,} ({topics} topics of {per_topic}), {args.rounds} rounds")
    names = [f"spread-{i:03d}" for i in range(topics)]
    with tempfile.TemporaryDirectory(prefix="scale-produce-") as tmp, ExitStack() as stack:
        targets = [odradek_target("odradek", Path(tmp) / "this", args, names, per_topic, None)]
        if args.before_src:
            targets.append(odradek_target(f"odradek {args.before_src}", Path(tmp) / "before", args, names, per_topic,
                                          Path(args.before_src)))
        if args.mock:
            targets.append(mock_target(args, stack))
        if args.kafka:
            targets.append(kafka_target(args, names, per_topic, stack))
        for t in targets:
            if t.pid is not None:
                wait_idle(t.pid)
            for shape in (t.single, t.spread):  # a first run of each shape, not counted (first writes, imports)
                produce(t.bootstrap, shape, args.records // 4)
        for t in targets:
            if t.pid is not None:
                wait_idle(t.pid)
            if t.broker is not None:
                t.broker.stalls()
        per_m = args.records / 1e6
        for r in range(args.rounds):
            for t in targets[r % len(targets):] + targets[:r % len(targets)]:  # each first in turn
                row = []
                for shape, partitions, out in (("one", t.single, t.singles), ("many", t.spread, t.manys)):
                    own: list[float] = []
                    sent: list[float] | None = [] if args.client_stats else None
                    requests = produce_requests(t.broker) if t.broker is not None else 0.0
                    rate, cpu = produce(t.bootstrap, partitions, args.records, t.pid, own, sent)
                    out.append((rate, cpu / per_m, own[0] / per_m))
                    size = ""
                    if t.broker is not None:  # produce() first sends one record a partition, a request each
                        requests = produce_requests(t.broker) - requests - len(partitions)
                        size = f", {args.records / max(requests, 1):,.0f} records a Produce"
                    if sent:
                        size += f", {sent[0]:,.0f} a Produce by librdkafka's count"
                    row.append(f"{shape} {rate:,.0f} msg/s (CPU s/M: broker {out[-1][1]:.2f}, client "
                               f"{out[-1][2]:.2f}{size})")
                stalls = f"; {stalls_line(t.broker)}" if t.broker is not None else ""
                print(f"round {r + 1}, {t.label}: {', '.join(row)}: {t.manys[-1][0] / t.singles[-1][0]:.0%}{stalls}",
                      flush=True)
        for t in targets:
            one = [statistics.median(x[i] for x in t.singles) for i in (0, 1, 2)]
            many = [statistics.median(x[i] for x in t.manys) for i in (0, 1, 2)]
            ratios = sorted(m[0] / s[0] for s, m in zip(t.singles, t.manys, strict=True))
            broker_cpu = (lambda v: f"broker {v:.2f}, ") if t.pid is not None else (lambda v: "")
            print(f"median, {t.label}: one partition {one[0]:,.0f} msg/s (CPU s/M: {broker_cpu(one[1])}client "
                  f"{one[2]:.2f}); {args.spread:,} partitions {many[0]:,.0f} msg/s ({broker_cpu(many[1])}client "
                  f"{many[2]:.2f}); ratio {many[0] / one[0]:.0%} (rounds {ratios[0]:.0%}-{ratios[-1]:.0%})")
        print(f"load average {os.getloadavg()[0]:.1f}")
        for t in targets:
            if t.broker is not None:
                t.broker.stop()


def raw_produce_frames(targets: list[tuple[str, int]], records: int) -> list[bytes]:
    """One Produce v10 frame (acks=1, one batch of `records` 100 B records) for each target."""
    batch = encode_batch([(None, b"x" * 100, ())] * records, timestamp_ms=int(time.time() * 1000))
    cls = request_type(0, 10)
    return [encode_request(0, 10, i, build(cls, transactional_id=None, acks=1, timeout=datetime.timedelta(seconds=30),
                                           topic_data=[{"name": t, "partition_data": [{"index": p, "records": batch}]}]),
                           client_id="scale-bench")
            for i, (t, p) in enumerate(targets)]


def raw_produce_run(port: int, frames: list[bytes], requests: int, in_flight: int) -> float:
    """Seconds to have `requests` of `frames` (in turn) answered, at most `in_flight` unanswered."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sent = answered = 0
        buf = bytearray()
        started = time.perf_counter()
        while answered < requests:
            while sent < requests and sent - answered < in_flight:
                s.sendall(frames[sent % len(frames)])
                sent += 1
            data = s.recv(1 << 20)
            if not data:
                raise ConnectionError("the broker closed the connection")
            buf += data
            while len(buf) >= 4:
                size = struct.unpack_from(">i", buf)[0]
                if len(buf) < 4 + size:
                    break
                del buf[:4 + size]
                answered += 1
        return time.perf_counter() - started


def raw_produce(args: argparse.Namespace) -> None:
    """The broker's CPU per Produce request from a raw socket, in rounds."""
    topics = max(args.spread_topics, 1)
    per_topic = -(-args.spread // topics)
    print(f"load average {os.getloadavg()[0]:.1f}; Produce v10 of {args.batch} x 100 B records to one of "
          f"{args.spread:,} partitions each, {args.in_flight} in flight, {args.requests:,} a round")
    with tempfile.TemporaryDirectory(prefix="scale-raw-") as tmp:
        b = Broker(Path(tmp) / "data", args.nofile)
        b.start()
        assert b.proc is not None
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{b.port}"})
        names = [f"spread-{i:03d}" for i in range(topics)]
        for f in admin.create_topics([NewTopic(n, per_topic, 1) for n in names]).values():
            f.result(60)
        del admin
        frames = raw_produce_frames([(names[i // per_topic], i % per_topic) for i in range(args.spread)], args.batch)
        wait_idle(b.proc.pid)
        raw_produce_run(b.port, frames, min(args.requests, 2000), args.in_flight)  # first writes, imports
        wait_idle(b.proc.pid)
        per_request = []
        for r in range(args.rounds):
            cpu0 = proc_cpu_seconds(b.proc.pid)
            took = raw_produce_run(b.port, frames, args.requests, args.in_flight)
            cpu = proc_cpu_seconds(b.proc.pid) - cpu0
            per_request.append(cpu / args.requests * 1e6)
            print(f"round {r + 1}: {args.requests / took:,.0f} requests/s, broker CPU {per_request[-1]:.0f} us a "
                  f"request, {per_request[-1] / args.batch:.3f} s a million records; {stalls_line(b)}")
        median = statistics.median(per_request)
        print(f"median: broker CPU {median:.0f} us a request ({min(per_request):.0f}-{max(per_request):.0f}), "
              f"{median / args.batch:.3f} s a million records; load average {os.getloadavg()[0]:.1f}")
        b.stop()


def produce_requests(b: Broker) -> float:
    """kafka_network_requestmetrics_requests_total{request="Produce"} from the broker's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{b.metrics_port}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    found = re.search(r'^kafka_network_requestmetrics_requests_total\{request="Produce"\} (\S+)$', text,
                      re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def stalls_line(b: Broker) -> str:
    count, longest = b.stalls()
    return f"loop stalls > 5 ms: {count}, longest {longest} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topics", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=100)
    ap.add_argument("--per-request", type=int, default=10, help="topics per CreateTopics / DeleteTopics")
    ap.add_argument("--spread", type=int, default=1000, help="partitions produced to at once")
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--produce-only", action="store_true", help="only one partition against --spread, in rounds")
    ap.add_argument("--spread-topics", type=int, default=10, help="--produce-only: topics the spread covers")
    ap.add_argument("--before-src", help="--produce-only: another odradek tree's src/ (e.g. an archive of an earlier "
                                         "commit), its broker taking turns with this tree's in every round")
    ap.add_argument("--mock", action="store_true", help="--produce-only: also librdkafka's mock cluster (the client alone)")
    ap.add_argument("--kafka", action="store_true", help="--produce-only: also Apache Kafka 4.3.1 (bench/kafka_ref.py)")
    ap.add_argument("--client-stats", action="store_true",
                    help="--produce-only: librdkafka's statistics count its Produce requests (any broker)")
    ap.add_argument("--rounds", type=int, default=5, help="--produce-only, --raw-produce: rounds")
    ap.add_argument("--raw-produce", action="store_true", help="the broker's CPU per Produce from a raw socket")
    ap.add_argument("--batch", type=int, default=25, help="--raw-produce: records a request")
    ap.add_argument("--in-flight", type=int, default=20, help="--raw-produce: requests unanswered at most")
    ap.add_argument("--requests", type=int, default=10_000, help="--raw-produce: requests a round")
    ap.add_argument("--metadata-runs", type=int, default=20)
    ap.add_argument("--nofile", type=int, help="the broker's RLIMIT_NOFILE (soft and hard)")
    ap.add_argument("--connections", type=int, help="measure N idle connections beside --active ones instead")
    ap.add_argument("--active", type=int, default=100)
    ap.add_argument("--rate", type=int, default=2000, help="Produce requests a second of the active connections")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--churn", type=int, default=0, help="--connections: idle ones reopened a second beside the active")
    args = ap.parse_args()
    if args.connections:
        connections(args)
        return
    if args.produce_only:
        produce_only(args)
        return
    if args.raw_produce:
        raw_produce(args)
        return
    total = args.topics * args.partitions
    print(f"load average {os.getloadavg()[0]:.1f}; {args.topics} topics x {args.partitions} partitions = {total:,}")
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        b = Broker(Path(tmp) / "data", args.nofile)
        took = b.start()
        metadata_all(b.port)  # the first request of its kind (imports) out of the figures
        rss0, fds0 = b.rss_mb(), b.open_files()
        print(f"start (empty): {took:.2f} s; RSS {rss0:.0f} MB, {fds0} open files")
        b.stalls()

        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{b.port}"})
        names = [f"scale-{i:04d}" for i in range(args.topics)]
        slowest = 0.0
        started = time.perf_counter()
        for i in range(0, len(names), args.per_request):
            chunk = names[i:i + args.per_request]
            t0 = time.perf_counter()
            futures = admin.create_topics([NewTopic(n, args.partitions, 1) for n in chunk], request_timeout=120)
            for f in futures.values():
                f.result(120)
            slowest = max(slowest, time.perf_counter() - t0)
        took = time.perf_counter() - started
        print(f"create {total:,} partitions ({args.per_request} topics a request): {took:.2f} s "
              f"({took / total * 1e3:.3f} ms a partition), slowest request {slowest * 1e3:.0f} ms; {stalls_line(b)}")

        runs = [metadata_all(b.port) for _ in range(args.metadata_runs)]
        times = sorted(r[0] * 1e3 for r in runs)
        print(f"Metadata v12, all {runs[0][1]} topics ({runs[0][2]:,} B): median {statistics.median(times):.1f} ms, "
              f"slowest {times[-1]:.1f} ms of {len(times)}; {stalls_line(b)}")

        time.sleep(2)
        rss, fds = b.rss_mb(), b.open_files()
        print(f"idle with {total:,} partitions: RSS {rss:.0f} MB ({(rss - rss0) * 1024 / total:.1f} KB a partition), "
              f"{fds} open files ({(fds - fds0) / total:.3f} a partition)")

        one = "scale-single"
        admin.create_topics([NewTopic(one, 1, 1)])[one].result(60)
        spread = [(names[i // args.partitions], i % args.partitions) for i in range(min(args.spread, total))]
        single, cpu1 = produce(b.port, [(one, 0)], args.records, b.proc.pid)  # type: ignore[union-attr]
        many, cpu2 = produce(b.port, spread, args.records, b.proc.pid)  # type: ignore[union-attr]
        print(f"produce {args.records:,} x 100 B, acks=1: one partition {single:,.0f} msg/s "
              f"(broker CPU {cpu1:.2f} s), {len(spread):,} partitions {many:,.0f} msg/s "
              f"(broker CPU {cpu2:.2f} s): {many / single:.0%}; {stalls_line(b)}; "
              f"{b.open_files()} open files")

        del admin  # its reconnection attempts while the broker restarts are noise
        stop_s = b.stop()
        took = b.start()
        meta = metadata_all(b.port)[0]
        print(f"clean restart: stop {stop_s:.2f} s, start {took:.2f} s to ApiVersions (+{meta * 1e3:.0f} ms "
              f"Metadata all topics); {stalls_line(b)}")
        b.stop(signal.SIGKILL)
        took = b.start()
        meta = metadata_all(b.port)[0]
        print(f"restart after SIGKILL: start {took:.2f} s to ApiVersions (+{meta * 1e3:.0f} ms Metadata); "
              f"{stalls_line(b)}; RSS {b.rss_mb():.0f} MB, {b.open_files()} open files")

        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{b.port}"})
        slowest = 0.0
        started = time.perf_counter()
        for i in range(0, len(names), args.per_request):
            t0 = time.perf_counter()
            for f in admin.delete_topics(names[i:i + args.per_request], request_timeout=120).values():
                f.result(120)
            slowest = max(slowest, time.perf_counter() - t0)
        took = time.perf_counter() - started
        print(f"delete {total:,} partitions: {took:.2f} s, slowest request {slowest * 1e3:.0f} ms; {stalls_line(b)}")
        b.stop()


if __name__ == "__main__":
    main()
