"""Topics, configs and records survive a clean restart and a SIGKILL."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource
from conftest import unique
from test_clients import consume_ck, create_topic, produce_ck


def test_topics_configs_and_records_survive_clean_restart(broker_factory) -> None:  # type: ignore[no-untyped-def]
    b = broker_factory()
    topic = unique("persist")
    create_topic(b.bootstrap, topic, partitions=2, config={"retention.ms": "123456789"})
    placed = produce_ck(b.bootstrap, topic, [{"key": b"%d" % i, "value": b"v%d" % i} for i in range(1000)])
    assert b.stop() == 0
    # SIGTERM's stop ends by itself, not at serve's shutdown budget (a wall-clock bound would trip
    # on a loaded machine; bench/ is the place for how long it takes)
    assert "the shutdown did not end within" not in b.logs()
    assert (Path(b.data_dir) / ".kafka_cleanshutdown").exists()
    b.start()
    got = consume_ck(b.bootstrap, topic, 1000, partitions=2)
    assert sorted((m.partition(), m.offset(), m.value()) for m in got) == sorted(
        (p, o, b"v%d" % i) for i, (p, o) in enumerate(placed)
    )
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    res = ConfigResource("topic", topic)
    configs = admin.describe_configs([res])[res].result(10)
    assert configs["retention.ms"].value == "123456789"
    md = admin.list_topics(timeout=10)
    assert len(md.topics[topic].partitions) == 2


def test_every_acknowledged_record_survives_sigkill_during_produce(broker_factory) -> None:  # type: ignore[no-untyped-def]
    b = broker_factory(name="killed")
    topic = unique("kill")
    create_topic(b.bootstrap, topic)
    acked: list[tuple[int, bytes]] = []
    stop = threading.Event()

    def produce() -> None:
        p = Producer({"bootstrap.servers": b.bootstrap, "acks": 1, "linger.ms": 1,
                      "message.timeout.ms": 3000, "retries": 0})

        def cb(err, msg):  # type: ignore[no-untyped-def]
            if err is None:
                acked.append((msg.offset(), msg.value()))

        i = 0
        while not stop.is_set() and i < 2_000_000:
            try:
                p.produce(topic, value=b"r%d" % i, on_delivery=cb)
                i += 1
            except BufferError:
                p.poll(0.01)
            p.poll(0)
        p.flush(5)

    t = threading.Thread(target=produce)
    t.start()
    deadline = time.monotonic() + 120  # returns once 20,000 are acknowledged
    while len(acked) < 20000 and time.monotonic() < deadline:
        time.sleep(0.05)
    b.kill()
    stop.set()
    t.join(30)
    assert len(acked) >= 20000
    b.start()
    got = consume_ck(b.bootstrap, topic, max(o for o, _ in acked) + 1, timeout=60)
    stored = {m.offset(): m.value() for m in got}
    for offset, value in acked:
        assert stored[offset] == value, f"acknowledged record at offset {offset} is lost or changed"


def test_metrics_endpoint_reports_kafka_named_metrics(broker_factory) -> None:  # type: ignore[no-untyped-def]
    import urllib.request

    from conftest import free_port

    port = free_port()
    b = broker_factory("--metrics-port", str(port))
    topic = unique("metrics")
    produce_ck(b.bootstrap, topic, [{"value": b"m%d" % i} for i in range(25)])
    consume_ck(b.bootstrap, topic, 25)
    deadline = time.monotonic() + 60
    while True:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        if f'kafka_log_log_logendoffset{{partition="0",topic="{topic}"}} 25.0' in text or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert f'kafka_server_brokertopicmetrics_messagesin_total{{topic="{topic}"}} 25.0' in text
    assert 'kafka_network_requestmetrics_requests_total{request="Produce"}' in text
    # Kafka's TotalTimeMs per API: how many requests were timed and their total milliseconds
    timed = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
             if line.startswith("kafka_network_requestmetrics_totaltimems_")}
    assert timed['kafka_network_requestmetrics_totaltimems_count{request="Produce"}'] >= 1
    assert timed['kafka_network_requestmetrics_totaltimems_sum{request="Produce"}'] > 0
    assert timed['kafka_network_requestmetrics_totaltimems_count{request="Fetch"}'] >= 1
    assert f'kafka_log_log_logendoffset{{partition="0",topic="{topic}"}} 25.0' in text
