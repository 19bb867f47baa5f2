"""A consume-transform-produce loop with exactly-once semantics (run as a process by
tests/test_transactions.py, which SIGKILLs and restarts it).

Reads `input` (read_committed, group `group`), writes value.upper() to `output`, and
commits its output records and its input offsets in one transaction every `batch`
records (send_offsets_to_transaction), printing "committed N" after each (N: the records so
far), so that a test can kill it mid-stream however fast it runs. Exits 0 once `input` is fully
consumed.

    python tests/txn_worker.py BOOTSTRAP INPUT OUTPUT GROUP TRANSACTIONAL_ID [BATCH]
"""

from __future__ import annotations

import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition


def main() -> int:
    bootstrap, source, sink, group, txn_id = sys.argv[1:6]
    batch = int(sys.argv[6]) if len(sys.argv) > 6 else 50
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "isolation.level": "read_committed",
        "enable.auto.commit": False, "auto.offset.reset": "earliest", "enable.partition.eof": True,
        "session.timeout.ms": 2000, "heartbeat.interval.ms": 300,
    })
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id,
                         "transaction.timeout.ms": 10000, "linger.ms": 5})
    producer.init_transactions(30)
    consumer.subscribe([source])
    eof: set[int] = set()
    committed = 0
    idle_until = time.monotonic() + 60
    while time.monotonic() < idle_until:
        msgs = consumer.consume(batch, 0.5)
        records = []
        for m in msgs:
            if m.error() is not None:
                if m.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                    continue
                raise SystemExit(f"consume error: {m.error()}")
            eof.discard(m.partition())
            records.append(m)
        if records:
            producer.begin_transaction()
            for m in records:
                producer.produce(sink, key=m.key(), value=m.value().upper(), partition=m.partition())
            ends: dict[int, int] = {}
            for m in records:
                ends[m.partition()] = max(ends.get(m.partition(), 0), m.offset() + 1)
            producer.send_offsets_to_transaction([TopicPartition(source, p, o) for p, o in ends.items()],
                                                 consumer.consumer_group_metadata(), 30)
            producer.commit_transaction(30)
            committed += len(records)
            print(f"committed {committed}", flush=True)
            idle_until = time.monotonic() + 60
        elif consumer.assignment() and eof >= {tp.partition for tp in consumer.assignment()}:
            break
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
