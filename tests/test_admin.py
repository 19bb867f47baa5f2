"""Topic administration through confluent-kafka's AdminClient: Kafka's error codes (librdkafka names
INVALID_TOPIC_EXCEPTION "TOPIC_EXCEPTION" and UNKNOWN_TOPIC_OR_PARTITION "UNKNOWN_TOPIC_OR_PART")."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)
from conftest import BrokerProcess, unique

# Each test here checks what Kafka answers: pytest --kafka runs them against Apache Kafka.
pytestmark = pytest.mark.kafka_behaviour


def error_of(future) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(KafkaException) as info:
        future.result(10)
    return info.value.args[0].name()


def wait_for_metadata(admin: AdminClient, name: str, present: bool = True) -> None:
    """Kafka answers CreateTopics and DeleteTopics once its controller has the change; the broker's
    metadata (and the answers that read it) follow a moment later, so a client waits for it."""
    deadline = time.monotonic() + 15
    while (name in admin.list_topics(timeout=10).topics) != present:
        assert time.monotonic() < deadline, f"{name} {'not ' if present else ''}in Metadata after 15 s"
        time.sleep(0.05)


def test_create_topic_errors(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    name = unique("dup")
    admin.create_topics([NewTopic(name, 2, 1)])[name].result(10)
    assert error_of(admin.create_topics([NewTopic(name, 2, 1)])[name]) == "TOPIC_ALREADY_EXISTS"
    assert error_of(admin.create_topics([NewTopic("bad/name", 1, 1)])["bad/name"]) == "TOPIC_EXCEPTION"
    assert error_of(admin.create_topics([NewTopic("x" * 250, 1, 1)])["x" * 250]) == "TOPIC_EXCEPTION"
    zero = unique("zero")
    assert error_of(admin.create_topics([NewTopic(zero, 0, 1)])[zero]) == "INVALID_PARTITIONS"
    rf = unique("rf")
    assert error_of(admin.create_topics([NewTopic(rf, 1, 3)])[rf]) == "INVALID_REPLICATION_FACTOR"
    cfg = unique("cfg")
    assert error_of(admin.create_topics([NewTopic(cfg, 1, 1, config={"retention.ms": "soon"})])[cfg]) == "INVALID_CONFIG"
    assert error_of(admin.create_topics([NewTopic(cfg, 1, 1, config={"no.such.key": "1"})])[cfg]) == "INVALID_CONFIG"
    collide = unique("a_b")
    admin.create_topics([NewTopic(collide, 1, 1)])[collide].result(10)
    other = collide.replace("_", ".")
    assert error_of(admin.create_topics([NewTopic(other, 1, 1)])[other]) == "TOPIC_EXCEPTION"


def test_create_partitions_and_delete_topics(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    name = unique("grow")
    admin.create_topics([NewTopic(name, 2, 1)])[name].result(10)
    wait_for_metadata(admin, name)
    admin.create_partitions([NewPartitions(name, 5)])[name].result(10)
    deadline = time.monotonic() + 15  # the new partitions reach the broker's metadata a moment later
    while len(admin.list_topics(name, timeout=10).topics[name].partitions) != 5:
        assert time.monotonic() < deadline, "5 partitions not in Metadata after 15 s"
        time.sleep(0.05)
    assert error_of(admin.create_partitions([NewPartitions(name, 3)])[name]) == "INVALID_PARTITIONS"
    admin.delete_topics([name])[name].result(10)
    wait_for_metadata(admin, name, present=False)
    assert error_of(admin.delete_topics([name])[name]) == "UNKNOWN_TOPIC_OR_PART"


def test_configs_describe_alter_and_incremental(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    name = unique("conf")
    admin.create_topics([NewTopic(name, 1, 1, config={"retention.ms": "1000"})])[name].result(10)
    wait_for_metadata(admin, name)
    res = ConfigResource("topic", name)
    configs = admin.describe_configs([res])[res].result(10)
    assert configs["retention.ms"].value == "1000"
    assert configs["retention.ms"].source == 1  # DYNAMIC_TOPIC_CONFIG: set on the topic
    assert configs["cleanup.policy"].value == "delete" and configs["cleanup.policy"].is_default
    inc = ConfigResource("topic", name, incremental_configs=[
        ConfigEntry("segment.bytes", "1048576", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
    ])
    admin.incremental_alter_configs([inc])[inc].result(10)
    configs = admin.describe_configs([res])[res].result(10)
    assert configs["segment.bytes"].value == "1048576"
    assert configs["retention.ms"].value == "604800000" and configs["retention.ms"].is_default
    bad = ConfigResource("topic", name, incremental_configs=[
        ConfigEntry("max.message.bytes", "lots", incremental_operation=AlterConfigOpType.SET)])
    assert error_of(admin.incremental_alter_configs([bad])[bad]) == "INVALID_CONFIG"
    node_id = admin.describe_cluster(request_timeout=10).result(10).nodes[0].id  # odradek 0, Kafka's node.id
    broker_res = ConfigResource("broker", str(node_id))
    broker_configs = admin.describe_configs([broker_res])[broker_res].result(10)
    assert broker_configs["num.partitions"].value == "1"
    assert broker_configs["log.segment.bytes"].value == "1073741824"


def test_describe_cluster(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    desc = admin.describe_cluster(request_timeout=10).result(10)
    # a KRaft broker shows clients a live broker as the controller (the quorum is not theirs to reach)
    assert [f"{n.host}:{n.port}" for n in desc.nodes] == [broker.bootstrap]
    assert desc.cluster_id and desc.controller.id == desc.nodes[0].id
