"""odradek.testing: the embedded broker and the pytest plugin, used as a user would."""

from __future__ import annotations

import asyncio
import textwrap
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from odradek.testing import Broker


def _produce(bootstrap: str, topic: str, values: list[bytes], **conf: object) -> list[tuple[int, int]]:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, **conf})
    placed: list[tuple[int, int]] = []
    errors = []

    def cb(err, msg):  # type: ignore[no-untyped-def]
        if err is not None:
            errors.append(err)
        else:
            placed.append((msg.partition(), msg.offset()))

    for v in values:
        p.produce(topic, value=v, key=v, on_delivery=cb)
    assert p.flush(30) == 0
    assert not errors, errors
    return placed


def _consume(bootstrap: str, topic: str, n: int, partitions: int = 1) -> list[tuple[int, int, bytes, bytes]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "embedded-test", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out = []
    deadline = time.monotonic() + 30
    while len(out) < n and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            out.append((m.partition(), m.offset(), m.key(), m.value()))
    c.close()
    return sorted(out)


def test_sync_broker_round_trip_and_clean_stop(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with Broker(data_dir=tmp_path) as b:
        b.create_topic("orders", partitions=3)
        placed = _produce(b.bootstrap_servers, "orders", [b"o%d" % i for i in range(300)])
        got = _consume(b.bootstrap_servers, "orders", 300, partitions=3)
        assert len(got) == 300 and sorted(placed) == [(p, o) for p, o, _, _ in got]
    assert (tmp_path / "orders-0").is_dir(), "file storage keeps Kafka's layout in data_dir"


def test_two_brokers_in_one_process_are_independent() -> None:
    with Broker() as a, Broker(storage="memory") as b:
        assert a.bootstrap_servers != b.bootstrap_servers
        a.create_topic("only-in-a")
        _produce(a.bootstrap_servers, "only-in-a", [b"x"])
        from confluent_kafka.admin import AdminClient

        topics_b = AdminClient({"bootstrap.servers": b.bootstrap_servers}).list_topics(timeout=10).topics
        assert "only-in-a" not in topics_b


def test_memory_and_file_storage_give_the_same_records() -> None:
    values = [b"v%d" % i * (i % 5 + 1) for i in range(500)]
    results = []
    for storage in ("file", "memory"):
        with Broker(storage=storage) as b:
            b.create_topic("same", partitions=2)
            _produce(b.bootstrap_servers, "same", values, partitioner="murmur2")
            results.append(_consume(b.bootstrap_servers, "same", len(values), partitions=2))
    assert results[0] == results[1] and len(results[0]) == 500


def test_async_broker_runs_on_the_callers_loop() -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    async def main() -> list[bytes]:
        async with Broker(storage="memory") as b:
            b.create_topic("aio", partitions=1)
            producer = AIOKafkaProducer(bootstrap_servers=b.bootstrap_servers)
            await producer.start()
            for i in range(10):
                await producer.send_and_wait("aio", b"m%d" % i)
            await producer.stop()
            consumer = AIOKafkaConsumer("aio", bootstrap_servers=b.bootstrap_servers,
                                        auto_offset_reset="earliest", group_id=None)
            await consumer.start()
            out = []
            while len(out) < 10:
                batch = await asyncio.wait_for(consumer.getmany(timeout_ms=500), 20)
                out.extend(r.value for rs in batch.values() for r in rs)
            await consumer.stop()
            return out

    assert asyncio.run(main()) == [b"m%d" % i for i in range(10)]


def test_producer_retries_through_injected_not_leader_and_delivers() -> None:
    with Broker(storage="memory") as b:
        b.create_topic("faulty")
        b.inject_errors("Produce", ["NOT_LEADER_OR_FOLLOWER", "NOT_LEADER_OR_FOLLOWER"], topic="faulty")
        placed = _produce(b.bootstrap_servers, "faulty", [b"once"], retries=5, **{"retry.backoff.ms": 10})
        assert placed == [(0, 0)], "delivered once, at offset 0, after the injected errors"
        assert _consume(b.bootstrap_servers, "faulty", 1) == [(0, 0, b"once", b"once")]


def test_injected_fatal_error_reaches_the_application() -> None:
    with Broker(storage="memory") as b:
        b.create_topic("fatal")
        b.inject_errors("Produce", ["TOPIC_AUTHORIZATION_FAILED"], topic="fatal")
        p = Producer({"bootstrap.servers": b.bootstrap_servers})
        errors = []
        p.produce("fatal", b"x", on_delivery=lambda err, msg: errors.append(err))
        p.flush(10)
        assert errors[0] is not None and errors[0].name() == "TOPIC_AUTHORIZATION_FAILED"


def test_delay_and_disconnect_all() -> None:
    with Broker(storage="memory") as b:
        b.create_topic("slow")
        _produce(b.bootstrap_servers, "slow", [b"warm"])
        b.delay("Produce", 300)
        started = time.monotonic()
        _produce(b.bootstrap_servers, "slow", [b"late"])
        assert time.monotonic() - started >= 0.3
        b.delay("Produce", 0)
        p = Producer({"bootstrap.servers": b.bootstrap_servers})
        p.produce("slow", b"before")
        assert p.flush(10) == 0
        b.disconnect_all()
        p.produce("slow", b"after")
        assert p.flush(10) == 0, "the client reconnects after the connections were dropped"


SAMPLE_TESTS = textwrap.dedent(
    '''
    import asyncio, time
    import pytest
    from confluent_kafka import Consumer, Producer, TopicPartition


    def test_confluent(kafka_bootstrap, kafka_topic):
        p = Producer({"bootstrap.servers": kafka_bootstrap})
        for i in range(5):
            p.produce(kafka_topic, b"c%d" % i)
        assert p.flush(10) == 0
        c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "g", "auto.offset.reset": "earliest"})
        c.subscribe([kafka_topic])
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 5 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(m.value())
        c.close()
        assert got == [b"c%d" % i for i in range(5)]


    @pytest.mark.partitions(4)
    def test_partitions_marker(kafka_bootstrap, kafka_topic):
        from kafka import KafkaConsumer
        c = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
        assert c.partitions_for_topic(kafka_topic) == {0, 1, 2, 3}
        c.close()


    def test_kafka_python(kafka_bootstrap, kafka_topic):
        from kafka import KafkaConsumer, KafkaProducer
        p = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        p.send(kafka_topic, b"kp").get(10)
        p.close()
        c = KafkaConsumer(kafka_topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                          consumer_timeout_ms=10000)
        assert next(iter(c)).value == b"kp"
        c.close()


    def test_aiokafka(kafka_bootstrap, kafka_topic):
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        async def main():
            p = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
            await p.start()
            await p.send_and_wait(kafka_topic, b"aio")
            await p.stop()
            c = AIOKafkaConsumer(kafka_topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
            await c.start()
            msg = await asyncio.wait_for(c.getone(), 20)
            await c.stop()
            return msg.value

        assert asyncio.run(main()) == b"aio"


    def test_fresh_topic_per_test(kafka_topic, request):
        assert kafka_topic.startswith("test-test_fresh_topic_per_test")
    '''
)


def test_plugin_fixtures_in_a_user_project(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user_code=SAMPLE_TESTS)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)


def test_plugin_runs_the_same_tests_against_an_external_broker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user_code=SAMPLE_TESTS)
    with Broker(storage="memory") as external:
        result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider",
                                               f"--kafka-bootstrap={external.bootstrap_servers}")
    result.assert_outcomes(passed=5)


def test_demo_command_runs_the_seed_walkthrough() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "odradek", "demo", "-n", "3000", "-p", "2"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "produced 3000" in out.stdout and "consumed 3000" in out.stdout and "kept" in out.stdout
    assert "Traceback" not in out.stderr
