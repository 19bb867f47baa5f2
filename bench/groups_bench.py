"""Consumer group bench: time for 10 consumers to become Stable, and to recover after one leaves.

    .venv/bin/python bench/groups_bench.py [--consumers 10] [--partitions 20]
        [--initial-delay-ms 3000] [--bootstrap HOST:PORT]

Without --bootstrap it starts its own `odradek serve` on a free port with the
given group.initial.rebalance.delay.ms. Both figures should be dominated by the
configured delays (the initial delay, and the members' heartbeat interval that
tells them a rebalance started), not by the broker.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent


class Member(threading.Thread):
    def __init__(self, bootstrap: str, group: str, topic: str, heartbeat_ms: int) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group, "session.timeout.ms": 10000,
            "heartbeat.interval.ms": heartbeat_ms, "auto.offset.reset": "earliest",
        })
        self.topic = topic
        self.owned: set[int] = set()
        self.stop = threading.Event()
        self.start()

    def _assign(self, c: Consumer, parts: list[TopicPartition]) -> None:
        self.owned = {p.partition for p in parts}

    def _revoke(self, c: Consumer, parts: list[TopicPartition]) -> None:
        self.owned = set()

    def run(self) -> None:
        self.consumer.subscribe([self.topic], on_assign=self._assign, on_revoke=self._revoke)
        while not self.stop.is_set():
            self.consumer.poll(0.05)
        self.consumer.close()


def covered(members: list[Member], partitions: int) -> bool:
    owned = [m.owned for m in members]
    return all(owned) and sum(map(len, owned)) == partitions and len(set().union(*owned)) == partitions


def wait(members: list[Member], partitions: int, timeout: float = 120) -> float:
    start = time.monotonic()
    while not covered(members, partitions):
        if time.monotonic() - start > timeout:
            raise SystemExit("the group did not settle in time")
        time.sleep(0.005)
    return time.monotonic() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--consumers", type=int, default=10)
    ap.add_argument("--partitions", type=int, default=20)
    ap.add_argument("--initial-delay-ms", type=int, default=3000, help="group.initial.rebalance.delay.ms")
    ap.add_argument("--heartbeat-ms", type=int, default=1000, help="the consumers' heartbeat.interval.ms")
    ap.add_argument("--bootstrap", default=None)
    args = ap.parse_args()

    proc = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        port = free_port()
        bootstrap = f"127.0.0.1:{port}"
        data = tempfile.mkdtemp(prefix="odradek-groups-bench-")
        env = {**os.environ, "ODRADEK_GROUP_INITIAL_REBALANCE_DELAY_MS": str(args.initial_delay_ms)}
        proc = subprocess.Popen([sys.executable, "-m", "odradek", "serve", "--listen", bootstrap, "--data-dir", data],
                                env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the broker did not start") from None
                time.sleep(0.05)
    try:
        topic = f"groups-bench-{time.time_ns()}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, args.partitions, 1)])[topic].result(15)
        group = f"bench-{time.time_ns()}"
        t0 = time.monotonic()
        members = [Member(bootstrap, group, topic, args.heartbeat_ms) for _ in range(args.consumers)]
        wait(members, args.partitions)
        stable = time.monotonic() - t0  # includes the clients' own start-up
        time.sleep(1.0)
        leaving = members.pop()
        leaving.stop.set()  # close() sends LeaveGroup
        recovered = wait(members, args.partitions)
        print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}")
        print(f"config: group.initial.rebalance.delay.ms={args.initial_delay_ms}, "
              f"heartbeat.interval.ms={args.heartbeat_ms}, {args.consumers} consumers, {args.partitions} partitions")
        print(f"stable (first consumer created -> all {args.partitions} partitions assigned): {stable:.2f} s")
        print(f"recovery (one consumer leaves -> partitions reassigned to {len(members)}): {recovered:.2f} s")
        for m in members:
            m.stop.set()
        for m in members:
            m.join(15)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
