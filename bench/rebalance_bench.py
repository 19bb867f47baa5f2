"""Rebalance time, classic vs KIP-848 consumer protocol, with Kafka's Java client, in one run.

    .venv/bin/python bench/rebalance_bench.py [--members 10] [--partitions 20] [--rounds 1]
        [--bootstrap HOST:PORT] [--kafka]

For each protocol (group.protocol=classic, then consumer) on its own topic and group:
`--members` consumers start at once (tests/java/Kip848Consumers.java, one JVM, every
client setting at its default), and once they share the topic one of them closes.
Figures, from the consumers' own assigned/revoked callbacks on one clock:

- join: from the consumers' start until every partition is owned by exactly one of
  them and each owns at least one (the JVM's client start-up is in both figures);
- leave: from the leaving consumer's close until its partitions are owned again.

Without --bootstrap it starts its own `odradek serve` with Kafka's defaults
(group.initial.rebalance.delay.ms 3000, group.consumer.heartbeat.interval.ms 5000,
group.consumer.session.timeout.ms 45000), so both protocols are measured with the
settings a user gets.

--kafka runs each round against Apache Kafka 4.3.1 too (one KRaft combined node from
tests/java/lib, odradek.testing.kafka_reference.KafkaReference, every setting at its default
but the internal topics' replication factor of 1; Kafka 4.3 serves the consumer protocol by
default) and prints odradek / Kafka for each figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic
from produce_consume import free_port

ROOT = Path(__file__).resolve().parent.parent
JAVA_DIR = ROOT / "tests" / "java"
LEAVE_AT_MS = 45_000  # the leaving member closes then: every join has settled by far
RUN_UNTIL_MS = 75_000
KAFKA = "kafka-4.3.1"


def start_broker(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = open(data_dir.parent / "broker.log", "ab")  # noqa: SIM115 - open for the broker's lifetime
    proc = subprocess.Popen([sys.executable, "-m", "odradek", "serve", "--listen", f"127.0.0.1:{port}",
                             "--data-dir", str(data_dir)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the broker did not start: see {data_dir.parent / 'broker.log'}")


def run(bootstrap: str, protocol: str, members: int, partitions: int) -> tuple[float, float]:
    topic = f"rebalance-{protocol}-{time.time_ns()}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
    schedule = ",".join(["0-"] * (members - 1) + [f"0-{LEAVE_AT_MS}"])
    java = shutil.which("java")
    if java is None:
        raise SystemExit("no java on PATH")
    done = subprocess.run([java, "-Xmx512m", "-cp", str(JAVA_DIR / "lib" / "*"), str(JAVA_DIR / "Kip848Consumers.java"),
                           bootstrap, topic, f"{topic}-group", protocol, "0", schedule, str(RUN_UNTIL_MS)],
                          capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    timeline = sorted((e for e in events if e["event"] in ("assigned", "revoked", "lost")), key=lambda e: e["t_ms"])
    errors = [e for e in events if e["event"] == "error"]
    if errors:
        raise SystemExit(f"{protocol}: consumer errors {errors}")
    return settle_time(timeline, members, partitions, 0, LEAVE_AT_MS), \
        settle_time(timeline, members - 1, partitions, LEAVE_AT_MS, RUN_UNTIL_MS) - LEAVE_AT_MS


def settle_time(timeline: list[dict[str, Any]], members: int, partitions: int, since: float, until: float) -> float:
    """When the assignment last became complete (every partition owned once, `members` owners)
    within [since, until): the time of the event that completed it for good."""
    owner: dict[int, int] = {}
    settled = float("nan")
    for e in timeline:
        if e["t_ms"] >= until:
            break
        for p in e["partitions"]:
            if e["event"] == "assigned":
                owner[p] = e["consumer"]
            else:
                owner.pop(p, None)
        complete = len(owner) == partitions and len(set(owner.values())) == members
        if e["t_ms"] >= since:
            settled = e["t_ms"] if complete else float("nan")
    return settled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--partitions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--bootstrap")
    parser.add_argument("--kafka", action="store_true", help="also run each round against Apache Kafka 4.3.1")
    args = parser.parse_args()
    proc = None
    tmp = None
    kafka = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        tmp = tempfile.TemporaryDirectory(prefix="rebalance-bench-")
        proc, bootstrap = start_broker(Path(tmp.name) / "data")
    brokers = {"odradek": bootstrap}
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        if args.kafka:
            sys.path.insert(0, str(ROOT / "src"))
            from odradek.testing.kafka_reference import KafkaReference
            kafka = KafkaReference().start()
            brokers[KAFKA] = kafka.bootstrap
        print(f"# {platform.node()} {platform.machine()}, {args.members} Java consumers (kafka-clients "
              f"{next(JAVA_DIR.joinpath('lib').glob('kafka-clients-*.jar')).stem.split('-')[-1]}), "
              f"{args.partitions} partitions, default settings, brokers "
              + ", ".join(f"{name} {address}" for name, address in brokers.items()))
        print(f"{'broker':<12} {'protocol':<10} {'round':>5} {'join s':>8} {'leave s':>8}")
        for r in range(args.rounds):
            for name, address in brokers.items():
                for protocol in ("classic", "consumer"):
                    join_ms, leave_ms = run(address, protocol, args.members, args.partitions)
                    results.setdefault((name, protocol), []).append((join_ms, leave_ms))
                    print(f"{name:<12} {protocol:<10} {r + 1:>5} {join_ms / 1000:>8.2f} {leave_ms / 1000:>8.2f}",
                          flush=True)
        if kafka is not None:
            for protocol in ("classic", "consumer"):
                o, k = results[("odradek", protocol)], results[(KAFKA, protocol)]
                join = sum(j for j, _ in o) / sum(j for j, _ in k)
                leave = sum(v for _, v in o) / sum(v for _, v in k)
                print(f"odradek / Kafka, {protocol}: join {join:.2f}, leave {leave:.2f}")
    finally:
        if kafka is not None:
            kafka.cleanup()
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        if tmp is not None:
            tmp.cleanup()

if __name__ == "__main__":
    main()
