"""Cluster mode figures: RF=3 acks=all throughput vs one node, and leader failover time.

Starts a ZooKeeper (Debian's package) and 3 `odradek serve --zookeeper` brokers
on 127.0.0.1 in a temporary dir, then:
  1. produces N x SIZE-byte records with acks=all to an RF=3 topic
     (min.insync.replicas=2), and the same to a single `odradek serve` (RF=1),
     and prints both rates and their ratio;
  2. SIGKILLs the partition leader R times under a steady acks=all stream and
     prints, per kill, the time until Metadata shows a new leader and until the
     first record produced after the kill is acknowledged.

    .venv/bin/python bench/cluster_bench.py [--messages 200000] [--size 100] [--kills 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from odradek.cli.cluster_up import broker_command, free_port, start_zookeeper, wait_for_port

FAST_ENV = {
    "PYTHONUNBUFFERED": "1",
    "ODRADEK_ZOOKEEPER_SESSION_TIMEOUT_MS": "2000",
    "ODRADEK_REPLICA_LAG_TIME_MAX_MS": "2000",
    "ODRADEK_REPLICA_FETCH_WAIT_MAX_MS": "200",
}


class LocalCluster:
    """ZooKeeper + n brokers in `state_dir`; brokers can be killed and restarted."""

    def __init__(self, state_dir: Path, n: int = 3, env: dict[str, str] | None = None,
                 base_env: dict[str, str] = FAST_ENV, chroot: str = "odradek") -> None:
        self.state_dir = state_dir
        self.zk = start_zookeeper(state_dir, zk_port := free_port())
        self.connect = f"127.0.0.1:{zk_port}/{chroot}"
        self.env = {**os.environ, **base_env, **(env or {})}
        self.ports = [free_port() for _ in range(n)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * n
        for i in range(n):
            self.start(i)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def log_path(self, i: int) -> Path:
        return self.state_dir / f"broker-{i}.log"

    def start(self, i: int) -> None:
        with open(self.log_path(i), "ab") as log:
            self.procs[i] = subprocess.Popen(
                broker_command(i, self.ports[i], self.state_dir / f"broker-{i}", self.connect),
                stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)
        wait_for_port(self.ports[i], 60, proc=self.procs[i])

    def alive(self, i: int) -> bool:
        p = self.procs[i]
        return p is not None and p.poll() is None

    def kill(self, i: int) -> float:
        """SIGKILL broker i (if running); the wall-clock time of the signal."""
        p = self.procs[i]
        at = time.time()
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(10)
        return at

    def partition(self, topic: str, p: int = 0) -> Any:
        for i in range(len(self.ports)):
            if not self.alive(i):
                continue
            try:
                md = AdminClient({"bootstrap.servers": f"127.0.0.1:{self.ports[i]}"}).list_topics(topic, timeout=5)
                return md.topics[topic].partitions[p]
            except (KafkaException, KeyError):  # broker down mid-call, or the topic not in its metadata yet
                continue
        return None

    def wait_leader(self, topic: str, not_in: tuple[int, ...] = (), isr_size: int = 1, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            part = self.partition(topic)
            if part is not None and part.leader >= 0 and self.alive(part.leader) and part.leader not in not_in \
                    and len(part.isrs) >= isr_size:
                return part
            time.sleep(0.02)
        raise TimeoutError(f"no leader for {topic} outside {not_in}")

    def create_topic(self, name: str, rf: int = 3, configs: dict[str, str] | None = None) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        deadline = time.monotonic() + 30
        while len(admin.list_topics(timeout=10).brokers) < len(self.ports) and time.monotonic() < deadline:
            time.sleep(0.05)
        fs = admin.create_topics([NewTopic(name, 1, rf, config=configs or {})], operation_timeout=10)
        fs[name].result(15)
        self.wait_leader(name, isr_size=rf)

    def stop(self) -> None:
        for i in range(len(self.procs)):
            self.kill(i)
        if self.zk.poll() is None:
            self.zk.send_signal(signal.SIGKILL)
            self.zk.wait(10)


def produce_rate(bootstrap: str, topic: str, messages: int, size: int) -> float:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "batch.size": 1 << 20,
                  "queue.buffering.max.messages": 1_000_000})
    payload = b"x" * size
    p.produce(topic, payload, partition=0)
    p.flush(30)
    start = time.perf_counter()
    for _ in range(messages):
        while True:
            try:
                p.produce(topic, payload, partition=0)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    assert p.flush(300) == 0
    return messages / (time.perf_counter() - start)


def single_node_rate(tmp: Path, messages: int, size: int) -> float:
    port = free_port()
    with open(tmp / "single.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "odradek", "serve", "--listen", f"127.0.0.1:{port}",
                                 "--data-dir", str(tmp / "single")], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            wait_for_port(port, proc=proc)
            bootstrap = f"127.0.0.1:{port}"
            admin = AdminClient({"bootstrap.servers": bootstrap})
            admin.create_topics([NewTopic("bench", 1, 1)])["bench"].result(15)
            return produce_rate(bootstrap, "bench", messages, size)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)


def failover_times(cluster: LocalCluster, kills: int) -> list[tuple[float, float]]:
    """(seconds to a new leader in Metadata, seconds to the first ack after the kill) per kill."""
    topic = "failover"
    cluster.create_topic(topic, configs={"min.insync.replicas": "2"})
    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 0, "retry.backoff.ms": 20,
                  "topic.metadata.refresh.interval.ms": 500, "message.timeout.ms": 60000})
    acks: list[float] = []
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            p.produce(topic, b"x", partition=0, on_delivery=lambda err, msg: err or acks.append(time.monotonic()))
            p.poll(0.005)
        p.flush(60)

    pumper = threading.Thread(target=pump)
    pumper.start()
    results = []
    try:
        for _ in range(kills):
            part = cluster.wait_leader(topic, isr_size=3, timeout=60)
            time.sleep(0.5)
            killed_at = time.monotonic()
            cluster.kill(part.leader)
            cluster.wait_leader(topic, not_in=(part.leader,))
            leader_at = time.monotonic()
            while not any(a > leader_at for a in acks[-50:]):
                time.sleep(0.005)
            first_ack = min(a for a in acks[-50:] if a > killed_at)
            results.append((leader_at - killed_at, first_ack - killed_at))
            cluster.start(part.leader)
    finally:
        stop.set()
        pumper.join(60)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--kills", type=int, default=3)
    args = ap.parse_args()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="odradek-cluster-bench-") as d:
        tmp = Path(d)
        single = single_node_rate(tmp, args.messages, args.size)
        cluster = LocalCluster(tmp / "cluster")
        try:
            cluster.create_topic("bench", configs={"min.insync.replicas": "2"})
            replicated = produce_rate(cluster.bootstrap, "bench", args.messages, args.size)
            print(f"single node, RF=1 acks=all: {single:,.0f} msg/s ({single * args.size / 1e6:.1f} MB/s)")
            print(f"3 brokers,   RF=3 acks=all: {replicated:,.0f} msg/s ({replicated * args.size / 1e6:.1f} MB/s)"
                  f" = {100 * replicated / single:.0f}% of single node")
            for n, (leader_s, ack_s) in enumerate(failover_times(cluster, args.kills), 1):
                print(f"failover {n}: new leader in Metadata after {leader_s:.2f} s, first ack after {ack_s:.2f} s"
                      " (2 s ZooKeeper session timeout)")
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
