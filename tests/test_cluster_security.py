"""A three-broker ZooKeeper cluster that replicates over SASL_SSL, with users and ACLs
that reach every broker (issue 14)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from conftest import unique

from odradek.security.devcerts import write_dev_certificates

pytest_plugins = ["cluster_fixtures"]  # the zookeeper and cluster_factory fixtures

JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required username="broker" '
        'password="broker-secret" user_broker="broker-secret" user_admin="admin-secret";')


def sasl(port: int, truststore: Path, mechanism: str, user: str, password: str) -> dict[str, Any]:
    return {"bootstrap.servers": f"127.0.0.1:{port}", "security.protocol": "SASL_SSL",
            "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password,
            "ssl.ca.location": str(truststore)}


def test_brokers_replicate_over_sasl_ssl_and_share_users_and_acls(cluster_factory: Any, tmp_path: Path) -> None:
    certs = write_dev_certificates(tmp_path / "certs")
    cluster = cluster_factory(3, env={
        "ODRADEK_LISTENERS": "PLAINTEXT://127.0.0.1:{port},SASL_SSL://127.0.0.1:{port2}",
        "ODRADEK_INTER_BROKER_LISTENER_NAME": "SASL_SSL",
        "ODRADEK_SASL_ENABLED_MECHANISMS": "PLAIN,SCRAM-SHA-512",
        "ODRADEK_SASL_MECHANISM_INTER_BROKER_PROTOCOL": "PLAIN",
        "ODRADEK_SASL_JAAS_CONFIG": JAAS,
        "ODRADEK_SSL_KEYSTORE_LOCATION": str(certs.keystore),
        "ODRADEK_SSL_TRUSTSTORE_LOCATION": str(certs.truststore),
        "ODRADEK_AUTHORIZER_CLASS_NAME": "kafka.security.authorizer.AclAuthorizer",
        "ODRADEK_SUPER_USERS": "User:broker;User:admin",
    })
    b0, b1, b2 = (cluster.by_id(i) for i in range(3))
    admin0 = AdminClient(sasl(b0.port2, certs.truststore, "PLAIN", "admin", "admin-secret"))
    # Metadata through the SASL_SSL listener advertises every broker's SASL_SSL address.
    seen = {(b.host, b.port) for b in admin0.list_topics(timeout=15).brokers.values()}
    assert seen == {("127.0.0.1", b.port2) for b in (b0, b1, b2)}

    topic, group = unique("secure"), unique("g")
    admin0.create_topics([NewTopic(topic, 1, 3, config={"min.insync.replicas": "2"})])[topic].result(60)
    cred = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    admin0.alter_user_scram_credentials(
        [UserScramCredentialUpsertion("alice", cred, b"alice-secret")])["alice"].result(15)

    admin1 = AdminClient(sasl(b1.port2, certs.truststore, "PLAIN", "admin", "admin-secret"))
    acls = [
        AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:alice", "*",
                   AclOperation.WRITE, AclPermissionType.ALLOW),
        AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:alice", "*",
                   AclOperation.READ, AclPermissionType.ALLOW),
        AclBinding(ResourceType.GROUP, group, ResourcePatternType.LITERAL, "User:alice", "*",
                   AclOperation.READ, AclPermissionType.ALLOW),
    ]
    for future in admin1.create_acls(acls).values():
        future.result(15)

    # alice logs in with SCRAM on broker 2 (her user and ACLs were made on brokers 0 and 1).
    alice = sasl(b2.port2, certs.truststore, "SCRAM-SHA-512", "alice", "alice-secret")
    deadline = time.monotonic() + 60
    errors: list[Any] = []
    while True:  # users and ACLs travel through ZooKeeper watches
        producer = Producer({**alice, "acks": "all", "enable.idempotence": True})
        errors.clear()
        producer.produce(topic, b"first", on_delivery=lambda err, _msg: errors.append(err))
        producer.flush(15)
        if errors == [None] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert errors == [None], errors
    for i in range(200):
        producer.produce(topic, f"v{i}".encode())
    assert producer.flush(60) == 0

    # Every replica caught up over the SASL_SSL inter-broker listener.
    cluster.wait_for("3 in-sync replicas", lambda: len(
        admin0.list_topics(topic, timeout=10).topics[topic].partitions[0].isrs) == 3)

    consumer = Consumer({**alice, "group.id": group, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    values = []
    try:
        deadline = time.monotonic() + 60  # the group's join over SASL_SSL first
        while len(values) < 201:
            assert time.monotonic() < deadline, f"{len(values)} records read"
            msg = consumer.poll(1)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            values.append(msg.value())
    finally:
        consumer.close()
    assert values == [b"first"] + [f"v{i}".encode() for i in range(200)]

    # A wrong password is refused on every broker; no secret reaches a log.
    wrong = Producer({**sasl(b1.port2, certs.truststore, "SCRAM-SHA-512", "alice", "not-hers"),
                      "error_cb": lambda err: errors.append(err)})
    errors.clear()
    deadline = time.monotonic() + 60
    while not any(e.code() == KafkaError._AUTHENTICATION for e in errors):
        assert time.monotonic() < deadline, errors
        wrong.poll(0.5)
    for b in (b0, b1, b2):
        logs = b.logs()
        assert "alice-secret" not in logs and "admin-secret" not in logs and "broker-secret" not in logs
        assert "Traceback" not in logs
