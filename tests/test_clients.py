"""Round trips through a running odradek with each real client."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from conftest import BrokerProcess, unique

# Each test here checks what Kafka answers: pytest --kafka runs them against Apache Kafka.
pytestmark = pytest.mark.kafka_behaviour

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def create_topic(bootstrap: str, name: str, partitions: int = 1, config: dict[str, str] | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, 1, config=config or {})], operation_timeout=30)
    futures[name].result(60)
    # Kafka answers CreateTopics once its controller has the topic; the broker's metadata follows
    # a moment later (until then Produce gets UNKNOWN_TOPIC_OR_PARTITION), so a client waits for it
    deadline = time.monotonic() + 60
    while True:
        found = admin.list_topics(name, timeout=30).topics.get(name)
        if found is not None and found.error is None and len(found.partitions) == partitions:
            return
        assert time.monotonic() < deadline, f"{name} not in Metadata 60 s after CreateTopics"
        time.sleep(0.05)


def produce_ck(bootstrap: str, topic: str, messages: list[dict[str, object]], **conf: object) -> list[tuple[int, int]]:
    """Produce with confluent-kafka; returns (partition, offset) per message, in order."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **conf})
    results: list[tuple[int, int] | None] = [None] * len(messages)

    def done(i: int):  # type: ignore[no-untyped-def]
        def cb(err, msg):  # type: ignore[no-untyped-def]
            assert err is None, err
            results[i] = (msg.partition(), msg.offset())
        return cb

    for i, m in enumerate(messages):
        p.produce(topic, on_delivery=done(i), **m)  # type: ignore[arg-type]
        p.poll(0)
    assert p.flush(120) == 0
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def consume_ck(bootstrap: str, topic: str, count: int, partitions: int = 1, timeout: float = 60, **conf: object) -> list:  # type: ignore[type-arg]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("g"), "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", **conf})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise AssertionError(msg.error())
        out.append(msg)
    c.close()
    assert len(out) == count, f"consumed {len(out)} of {count}"
    return out


def test_confluent_round_trip_keeps_keys_values_headers_timestamps_and_order(broker: BrokerProcess) -> None:
    topic = unique("ck")
    create_topic(broker.bootstrap, topic, partitions=3)
    messages = [
        {"key": f"k{i % 7}".encode(), "value": f"v{i}".encode(), "headers": [("h", f"{i}".encode())],
         "timestamp": 1_700_000_000_000 + i}
        for i in range(3000)
    ]
    placed = produce_ck(broker.bootstrap, topic, messages)
    got = consume_ck(broker.bootstrap, topic, len(messages), partitions=3)
    by_partition: dict[int, list] = {}  # type: ignore[type-arg]
    for m in got:
        by_partition.setdefault(m.partition(), []).append(m)
    for msgs in by_partition.values():
        offsets = [m.offset() for m in msgs]
        assert offsets == list(range(len(msgs))), "offsets are dense and ordered per partition"
        values = [int(m.value()[1:]) for m in msgs]
        assert values == sorted(values), "order holds within a partition"
    for m in got:
        i = int(m.value()[1:])
        assert m.key() == f"k{i % 7}".encode()
        assert m.headers() == [("h", f"{i}".encode())]
        assert m.timestamp()[1] == 1_700_000_000_000 + i
        assert placed[i] == (m.partition(), m.offset())
    # the same key always lands in the same partition
    key_partitions: dict[bytes, set[int]] = {}
    for m in got:
        key_partitions.setdefault(m.key(), set()).add(m.partition())
    assert all(len(ps) == 1 for ps in key_partitions.values())


@pytest.mark.parametrize("codec", CODECS)
def test_compressed_batches_written_by_confluent_read_by_kafka_python(broker: BrokerProcess, codec: str) -> None:
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    topic = unique(f"codec-{codec}")
    create_topic(broker.bootstrap, topic)
    messages = [{"key": b"k%d" % i, "value": b"value-%d-" % i + b"x" * 200} for i in range(500)]
    produce_ck(broker.bootstrap, topic, messages, **{"compression.codec": codec})
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=10000)
    consumer.assign([KTP(topic, 0)])
    got = []
    for record in consumer:
        got.append(record)
        if len(got) == len(messages):
            break
    consumer.close()
    assert [(r.offset, r.key, r.value) for r in got] == [
        (i, m["key"], m["value"]) for i, m in enumerate(messages)
    ]


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_written_by_kafka_python_read_by_confluent(broker: BrokerProcess, codec: str) -> None:
    from kafka import KafkaProducer

    topic = unique(f"kp-{codec}")
    create_topic(broker.bootstrap, topic)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, compression_type=codec, linger_ms=5)
    futures = [producer.send(topic, key=b"k%d" % i, value=b"v%d" % i, headers=[("n", b"%d" % i)]) for i in range(300)]
    producer.flush(30)
    offsets = [f.get(10).offset for f in futures]
    producer.close()
    assert offsets == list(range(300))
    got = consume_ck(broker.bootstrap, topic, 300)
    assert [(m.key(), m.value(), m.headers()) for m in got] == [
        (b"k%d" % i, b"v%d" % i, [("n", b"%d" % i)]) for i in range(300)
    ]


def test_aiokafka_round_trip(broker: BrokerProcess) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka import TopicPartition as ATP

    topic = unique("aio")
    create_topic(broker.bootstrap, topic, partitions=2)

    async def main() -> list[tuple[int, int, bytes, bytes]]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, compression_type="gzip")
        await producer.start()
        try:
            for i in range(200):
                await producer.send(topic, key=b"k%d" % i, value=b"v%d" % i, partition=i % 2,
                                    headers=[("x", b"1")])
            await producer.flush()
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest")
        await consumer.start()
        consumer.assign([ATP(topic, 0), ATP(topic, 1)])
        out = []
        try:
            while len(out) < 200:
                batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 20)
                for records in batch.values():
                    for r in records:
                        assert r.headers == (("x", b"1"),)
                        out.append((r.partition, r.offset, r.key, r.value))
        finally:
            await consumer.stop()
        return out

    got = asyncio.run(main())
    assert len(got) == 200
    for p in (0, 1):
        part = [g for g in got if g[0] == p]
        assert [g[1] for g in part] == list(range(100))
        assert [g[3] for g in part] == [b"v%d" % i for i in range(p, 200, 2)]


def test_kcat_produce_and_consume(broker: BrokerProcess) -> None:
    topic = unique("kcat")
    lines = "".join(f"key{i}:value{i}\n" for i in range(50))
    subprocess.run(["kcat", "-b", broker.bootstrap, "-P", "-t", topic, "-K", ":", "-z", "lz4"],
                   input=lines.encode(), check=True, timeout=30)
    out = subprocess.run(["kcat", "-b", broker.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e",
                          "-f", "%k=%s@%o\n"], capture_output=True, check=True, timeout=30)
    assert out.stdout.decode().splitlines() == [f"key{i}=value{i}@{i}" for i in range(50)]
    meta = subprocess.run(["kcat", "-b", broker.bootstrap, "-L", "-t", topic], capture_output=True,
                          check=True, timeout=30)
    assert f'topic "{topic}" with 1 partitions' in meta.stdout.decode()


def test_list_offsets_earliest_latest_and_by_timestamp(broker: BrokerProcess) -> None:
    topic = unique("lo")
    create_topic(broker.bootstrap, topic)
    base = 1_600_000_000_000
    produce_ck(broker.bootstrap, topic, [{"value": b"%d" % i, "timestamp": base + i * 1000} for i in range(100)],
               **{"batch.num.messages": 10})
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("g")})
    low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    assert (low, high) == (0, 100)
    found = c.offsets_for_times([TopicPartition(topic, 0, base + 42_500)], timeout=10)
    assert found[0].offset == 43
    beyond = c.offsets_for_times([TopicPartition(topic, 0, base + 10_000_000)], timeout=10)
    assert beyond[0].offset == -1
    c.close()
