"""Listeners as Kafka configures them: several per broker, each advertised to its own clients."""

from __future__ import annotations

from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]
from conftest import free_port, unique
from test_clients import create_topic

from odradek.security.devcerts import write_dev_certificates


def brokers_seen(conf: dict[str, str]) -> set[tuple[str, int]]:
    metadata = AdminClient(conf).list_topics(timeout=10)
    return {(b.host, b.port) for b in metadata.brokers.values()}


def test_metadata_advertises_the_listener_the_client_came_through(broker_factory: object) -> None:
    internal = free_port()
    b = broker_factory(env={  # type: ignore[operator]
        "ODRADEK_LISTENERS": "PLAINTEXT://127.0.0.1:{port},INTERNAL://127.0.0.1:" + str(internal),
        "ODRADEK_ADVERTISED_LISTENERS": f"INTERNAL://localhost:{internal}",
        "ODRADEK_LISTENER_SECURITY_PROTOCOL_MAP": "PLAINTEXT:PLAINTEXT,INTERNAL:PLAINTEXT",
    })
    assert brokers_seen({"bootstrap.servers": b.bootstrap}) == {("127.0.0.1", b.port)}
    assert brokers_seen({"bootstrap.servers": f"127.0.0.1:{internal}"}) == {("localhost", internal)}


def test_ssl_listener_serves_produce_and_consume_with_the_plaintext_one_beside(
    broker_factory: object, tmp_path: Path
) -> None:
    certs = write_dev_certificates(tmp_path / "certs", key_password="broker-key-secret")
    tls_port = free_port()
    b = broker_factory(env={  # type: ignore[operator]
        "ODRADEK_LISTENERS": "PLAINTEXT://127.0.0.1:{port},SSL://127.0.0.1:" + str(tls_port),
        "ODRADEK_SSL_KEYSTORE_LOCATION": str(certs.keystore),
        "ODRADEK_SSL_KEY_PASSWORD": "broker-key-secret",
    })
    topic = unique("tls")
    create_topic(b.bootstrap, topic)
    tls = {"bootstrap.servers": f"127.0.0.1:{tls_port}", "security.protocol": "SSL",
           "ssl.ca.location": str(certs.truststore)}
    assert brokers_seen(tls) == {("127.0.0.1", tls_port)}
    producer = Producer(tls)
    for i in range(2000):  # ~1.2 MB: requests of hundreds of KB, read in pieces through TLS
        producer.produce(topic, key=b"k", value=f"over tls {i}".encode() * 50)
    assert producer.flush(15) == 0
    consumer = Consumer({**tls, "group.id": unique("g"), "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    values = []
    try:
        while len(values) < 2000:
            msg = consumer.poll(10)
            assert msg is not None, f"only {len(values)} records came back over TLS"
            assert msg.error() is None, msg.error()
            values.append(msg.value())
    finally:
        consumer.close()
    assert values == [f"over tls {i}".encode() * 50 for i in range(2000)]
    assert brokers_seen({"bootstrap.servers": b.bootstrap}) == {("127.0.0.1", b.port)}
    # DescribeConfigs shows the key password as Kafka does: sensitive, without its value.
    resource = ConfigResource(ConfigResource.Type.BROKER, "0")
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    entries = admin.describe_configs([resource])[resource].result(10)
    assert entries["ssl.key.password"].is_sensitive and entries["ssl.key.password"].value is None
    assert entries["ssl.keystore.location"].value == str(certs.keystore)
    logs = b.logs()
    assert "broker-key-secret" not in logs and "Traceback" not in logs
