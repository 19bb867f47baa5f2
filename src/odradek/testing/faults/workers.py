"""Client workloads, each run as its own process inside a client namespace:

    python -m odradek.testing.faults.workers producer|consumer|txn --bootstrap B --topic T --out F
        --id N --duration S

Each writes one JSON object per line to F (flushed at once) for the checker: what
was acknowledged (producer), read and committed (consumer), transformed in which
transaction (txn). A worker stops by itself after --duration seconds or on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from typing import IO, Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

stop = threading.Event()


class Out:
    def __init__(self, path: str) -> None:
        self.f: IO[str] = open(path, "a", buffering=1)  # noqa: SIM115 - closed by close()
        self.lock = threading.Lock()

    def write(self, **row: Any) -> None:
        with self.lock:
            self.f.write(json.dumps(row, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self.f.close()


def producer(args: argparse.Namespace, out: Out) -> None:
    p: Any = Producer({
        "bootstrap.servers": args.bootstrap, "acks": "all", "enable.idempotence": True,
        "linger.ms": 5, "message.timeout.ms": 60000, "request.timeout.ms": 10000,
        "topic.metadata.refresh.interval.ms": 1000, "retry.backoff.ms": 100, "retry.backoff.max.ms": 500,
        "socket.connection.setup.timeout.ms": 5000, "reconnect.backoff.max.ms": 1000,
    })

    def delivered(err: Any, msg: Any) -> None:
        now = time.time()
        v = msg.value().decode()
        sent = float(v.split(":")[2])
        if err is None:
            epoch = msg.leader_epoch() if hasattr(msg, "leader_epoch") else None
            out.write(t="ack", p=msg.partition(), o=msg.offset(), v=v, e=epoch, sent=sent, at=now)
        else:
            out.write(t="err", v=v, err=str(err), sent=sent, at=now)

    seq = 0
    interval = 1.0 / args.rate
    next_at = time.monotonic()
    while not stop.is_set():
        v = f"{args.id}:{seq}:{time.time():.3f}"
        try:
            # the key names one partition per (worker, key): per-key order is checked per partition
            p.produce(args.topic, v.encode(), key=f"{args.id}-{seq % 6}".encode(), on_delivery=delivered)
            seq += 1
        except BufferError:
            pass
        p.poll(0)
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            p.poll(delay)
        else:
            next_at = time.monotonic()
    p.flush(70)
    out.write(t="done", sent=seq)


def consumer(args: argparse.Namespace, out: Out) -> None:
    c: Any = Consumer({
        "bootstrap.servers": args.bootstrap, "group.id": f"faults-group-{args.id}", "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "session.timeout.ms": 10000, "heartbeat.interval.ms": 1000,
        "topic.metadata.refresh.interval.ms": 1000, "isolation.level": "read_committed",
    })
    c.subscribe([args.topic])
    last_check = 0.0
    try:
        while not stop.is_set():
            msgs = c.consume(200, 0.5)
            done: dict[int, int] = {}
            for m in msgs:
                if m.error():
                    continue
                out.write(t="read", p=m.partition(), o=m.offset(), v=m.value().decode(), at=time.time())
                done[m.partition()] = m.offset() + 1
            if done:
                try:
                    res = c.commit(offsets=[TopicPartition(args.topic, p, o) for p, o in done.items()],
                                   asynchronous=False)
                    for tp in res or []:
                        if tp.error is None:
                            out.write(t="commit", p=tp.partition, o=tp.offset, at=time.time())
                except KafkaException as exc:
                    out.write(t="commit_err", err=str(exc), at=time.time())
            if time.monotonic() - last_check > 2:
                last_check = time.monotonic()
                try:
                    parts = [TopicPartition(args.topic, p) for p in range(args.partitions)]
                    for tp in c.committed(parts, timeout=5):
                        if tp.error is None and tp.offset >= 0:
                            out.write(t="committed", p=tp.partition, o=tp.offset, at=time.time())
                except KafkaException:
                    pass
    finally:
        c.close()


TXN_TIMEOUT_MS = 30000


def committed_offsets(c: Any, topic: str) -> None:
    """Seek the consumer back to its group's committed offsets (retried while the group
    coordinator moves: NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS)."""
    for attempt in range(10):
        try:
            for tp in c.committed(c.assignment(), timeout=10):
                c.seek(TopicPartition(topic, tp.partition, max(tp.offset, 0)))
            return
        except KafkaException:
            if attempt == 9:
                raise
            time.sleep(0.5)


def txn(args: argparse.Namespace, out: Out) -> None:
    """Consume-transform-produce: every record of --topic copied to --topic-out inside a
    transaction with its input offsets, as `<id>.<transaction number>|<record>`; every 4th
    transaction writes ABORT records and aborts.

    Errors are handled as a Kafka application must: a retriable one (a timed-out commit)
    is retried, an abortable one (txn_requires_abort) aborts the transaction and reads its
    input again, a fatal one (the producer fenced: its epoch was bumped by the coordinator,
    e.g. on aborting a transaction open past transaction.timeout.ms) ends this producer and
    starts a new one (InitProducerId). Each fatal error is logged as `txn_fenced` with how
    long the transaction had been open, for the checker to explain."""
    n = 0
    while not stop.is_set():
        c: Any = Consumer({
            "bootstrap.servers": args.bootstrap, "group.id": f"faults-txn-{args.id}", "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "isolation.level": "read_committed", "session.timeout.ms": 10000,
            "topic.metadata.refresh.interval.ms": 1000,
        })
        p: Any = Producer({
            "bootstrap.servers": args.bootstrap, "transactional.id": f"faults-txn-{args.id}",
            "transaction.timeout.ms": TXN_TIMEOUT_MS, "linger.ms": 5, "topic.metadata.refresh.interval.ms": 1000,
        })
        opened = 0.0  # when the current transaction's first record was produced (0: none open)
        try:
            p.init_transactions(30)
            c.subscribe([args.topic])
            while not stop.is_set():
                msgs = [m for m in c.consume(100, 0.5) if not m.error()]
                if not msgs:
                    continue
                n += 1
                abort = n % 4 == 0
                p.begin_transaction()
                opened = time.time()
                try:
                    for m in msgs:  # tagged with the transaction: the checker tells whose copy it reads
                        value = ("ABORT:" if abort else "") + f"{args.id}.{n}|" + m.value().decode()
                        p.produce(args.topic_out, value.encode(), partition=m.partition())
                    if abort:
                        p.abort_transaction(30)
                        out.write(t="txn_abort", n=len(msgs), txn=n, at=time.time())
                        opened = 0.0
                        committed_offsets(c, args.topic)  # read the same records again in the next transaction
                        continue
                    positions = c.position(c.assignment())
                    first: dict[int, int] = {}
                    for m in msgs:
                        first.setdefault(m.partition(), m.offset())
                    began = time.time()
                    p.send_offsets_to_transaction(positions, c.consumer_group_metadata(), 30)
                    for attempt in range(3):  # a timed-out commit is retried (its outcome is unknown until then)
                        try:
                            p.commit_transaction(30)
                            break
                        except KafkaException as exc:
                            if not exc.args[0].retriable() or attempt == 2:
                                raise
                    opened = 0.0
                    # the input it copied (first offset read per partition) and the offsets it committed
                    out.write(t="txn_commit", n=len(msgs), txn=n, at=time.time(), began=began,
                              first={str(k): v for k, v in first.items()},
                              to={str(tp.partition): tp.offset for tp in positions if tp.offset >= 0})
                except KafkaException as exc:
                    e = exc.args[0]
                    if e.fatal() or not e.txn_requires_abort():
                        raise
                    # abortable (e.g. the group coordinator no longer knows the member): abort, read again
                    p.abort_transaction(30)
                    out.write(t="txn_abort", n=len(msgs), txn=n, at=time.time(), after=e.name())
                    opened = 0.0
                    committed_offsets(c, args.topic)
        except KafkaException as exc:  # start over with a new producer and consumer from the committed offsets
            e = exc.args[0]
            now = time.time()
            if e.fatal():
                out.write(t="txn_fenced", err=str(exc), code=e.name(), at=now, txn=n,
                          open_s=round(now - opened, 3) if opened else None, timeout_s=TXN_TIMEOUT_MS / 1000)
            else:
                out.write(t="txn_err", err=str(exc), code=e.name(), retriable=e.retriable(), at=now, txn=n)
            time.sleep(1)
        finally:
            try:
                c.close()
            except (KafkaException, RuntimeError):
                pass
            try:
                p.flush(5)
            except KafkaException:  # a fenced producer raises its fatal error again: start over with a new one
                pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["producer", "consumer", "txn"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--topic-out", default="")
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--out", required=True)
    ap.add_argument("--id", type=int, default=0)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--duration", type=float, default=600.0)
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    timer = threading.Timer(args.duration, stop.set)
    timer.daemon = True
    timer.start()
    out = Out(args.out)
    try:
        {"producer": producer, "consumer": consumer, "txn": txn}[args.kind](args, out)
    finally:
        out.close()
        stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
