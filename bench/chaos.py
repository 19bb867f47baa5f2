"""Failure injection: N rounds of SIGKILL of a random broker under acks=all load.

A ZooKeeper and 3 brokers on 127.0.0.1; one RF=3 topic with
min.insync.replicas=2; a confluent-kafka producer (acks=all, one request in
flight, retries) writes sequence numbers without pause. Each round SIGKILLs a
random broker, waits until a live leader is acknowledging again, and restarts
it. Afterwards every record is read back and checked: no acknowledged record
lost, and the first appearance of each record in production order (without an
idempotent producer a retried batch may appear twice; duplicates are counted
and reported, not hidden; with the default idempotent producer a duplicate fails).

    .venv/bin/python bench/chaos.py [--rounds 10] [--seed 1] [--leaders] [--no-idempotence]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster_bench import LocalCluster


def read_all(bootstrap: str, topic: str, end: int, timeout: float = 120) -> list[int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"chaos-{time.time_ns()}", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "enable.partition.eof": True})
    c.assign([TopicPartition(topic, 0, 0)])
    values: list[int] = []
    deadline = time.monotonic() + timeout
    offset = 0
    try:
        while time.monotonic() < deadline and offset < end:
            for msg in c.consume(10000, 0.5):
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(msg.error())
                    continue
                values.append(int(msg.value()))
                offset = msg.offset() + 1
    finally:
        c.close()
    return values


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--leaders", action="store_true", help="always SIGKILL the partition leader")
    ap.add_argument("--no-idempotence", dest="idempotence", action="store_false",
                    help="a plain retrying producer (retried batches may then be duplicated)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs; rounds={args.rounds} "
          f"seed={args.seed} idempotence={args.idempotence}")
    with tempfile.TemporaryDirectory(prefix="odradek-chaos-") as d:
        cluster = LocalCluster(Path(d))
        try:
            topic = "chaos"
            cluster.create_topic(topic, configs={"min.insync.replicas": "2"})
            acked: set[int] = set()
            errors: list[str] = []
            stop = threading.Event()
            producer = Producer({
                "bootstrap.servers": cluster.bootstrap, "acks": "all", "enable.idempotence": args.idempotence,
                "max.in.flight.requests.per.connection": 5 if args.idempotence else 1,
                "retries": 10_000_000, "retry.backoff.ms": 50,
                "linger.ms": 5, "message.timeout.ms": 300_000, "topic.metadata.refresh.interval.ms": 1000,
            })

            newest = [-1]  # the highest acknowledged sequence number

            def on_delivery(err: object, msg: object) -> None:
                if err is None:
                    value = int(msg.value())  # type: ignore[attr-defined]
                    acked.add(value)
                    newest[0] = max(newest[0], value)
                else:
                    errors.append(str(err))

            sent = 0

            def pump() -> None:
                nonlocal sent
                while not stop.is_set():
                    try:
                        producer.produce(topic, str(sent).encode(), partition=0, on_delivery=on_delivery)
                        sent += 1
                    except BufferError:
                        producer.poll(0.05)
                    if sent % 100 == 0:
                        producer.poll(0.001)
                producer.flush(300)

            pumper = threading.Thread(target=pump)
            pumper.start()
            try:
                for n in range(1, args.rounds + 1):
                    time.sleep(rng.uniform(0.5, 2.0))
                    victim = rng.randrange(3)
                    part = cluster.partition(topic)
                    if args.leaders and part is not None and part.leader >= 0:
                        victim = part.leader
                    role = "leader" if part is not None and part.leader == victim else "follower"
                    cluster.kill(victim)
                    started = time.monotonic()
                    queued_at_kill = sent
                    # acks flow again when a record queued after the kill is acknowledged
                    while newest[0] < queued_at_kill and time.monotonic() - started < 60:
                        time.sleep(0.01)
                    print(f"round {n}: SIGKILL broker {victim} ({role}); acks flowing again after "
                          f"{time.monotonic() - started:.2f} s ({len(acked)} acked so far)")
                    cluster.start(victim)
                    cluster.wait_leader(topic, isr_size=3, timeout=60)
            finally:
                stop.set()
                pumper.join(300)
            values = read_all(cluster.bootstrap, topic, end=sent * 2)
            first = list(dict.fromkeys(values))  # each value's first appearance, in the order read
            seen = set(first)
            lost = acked - seen
            duplicates = len(values) - len(seen)
            in_order = first == sorted(first)
            print(f"produced {sent}, acknowledged {len(acked)}, delivery errors {len(errors)}; "
                  f"read back {len(values)} records: {len(lost)} acknowledged lost, {duplicates} duplicates, "
                  f"order {'kept' if in_order else 'BROKEN'} (idempotent producer: {args.idempotence})")
            ok = not lost and in_order and (duplicates == 0 or not args.idempotence)
            print("RESULT:", "PASS" if ok else "FAIL")
            return 0 if ok else 1
        finally:
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
