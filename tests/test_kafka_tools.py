"""Apache Kafka's own command-line tools (4.3.1, from the Maven jars in tests/java/lib) against a
real `odradek serve`.

Each tool runs as the class its bin/kafka-*.sh script starts (`java -cp 'tests/java/lib/*'
org.apache.kafka.tools.TopicCommand ...`), and the tests check what it prints, as a user reads
it: kafka-topics, kafka-console-producer / kafka-console-consumer, kafka-consumer-groups,
kafka-configs, kafka-transactions, kafka-get-offsets, kafka-producer-perf-test and
kafka-consumer-perf-test.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from conftest import BrokerProcess, java_command, module_broker, unique
from kafka.partitioner.default import murmur2  # kafka-python's copy of the Java client's hash

# Each test here checks what Kafka answers: pytest --kafka runs them against Apache Kafka.
pytestmark = pytest.mark.kafka_behaviour

ENV = {"ODRADEK_GROUP_INITIAL_REBALANCE_DELAY_MS": "0", "ODRADEK_OFFSETS_TOPIC_NUM_PARTITIONS": "3",
       "ODRADEK_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "3"}
TOPICS = "org.apache.kafka.tools.TopicCommand"
CONSOLE_PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"
CONSUMER_GROUPS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
CONFIGS = "kafka.admin.ConfigCommand"
TRANSACTIONS = "org.apache.kafka.tools.TransactionsCommand"
GET_OFFSETS = "org.apache.kafka.tools.GetOffsetShell"
PRODUCER_PERF = "org.apache.kafka.tools.ProducerPerformance"
CONSUMER_PERF = "org.apache.kafka.tools.ConsumerPerformance"

tbroker = module_broker("tbroker", ENV)


def tool(main: str, *args: str, stdin: str | None = None, expect_exit: int = 0) -> str:
    """Runs one of Kafka's tools as its bin/*.sh script would; its stdout."""
    done = subprocess.run([*java_command("kafka-tools"), main, *args], input=stdin,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == expect_exit, f"{main} {' '.join(args)} exited {done.returncode}:\n" \
        f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout + (done.stderr if expect_exit else "")


def tools(*calls: tuple[str, ...]) -> list[str]:
    """Several tools that do not depend on each other, at once (a JVM start is mostly waiting)."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: tool(*call), calls))


def create_topic(broker: BrokerProcess, name: str, partitions: int) -> None:
    """A topic made with librdkafka's admin (kafka-topics itself has its own test; a JVM costs seconds)."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(10)


def table(output: str, first_column: str) -> list[dict[str, str]]:
    """The rows of a table kafka-consumer-groups prints (cells padded with spaces, "-" for none)."""
    lines = [line for line in output.splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.split()[0] == first_column)
    header = lines[start].split()  # "COORDINATOR (ID)" splits in two, as its cells do ("host:port  (0)")
    return [dict(zip(header, line.split(), strict=True)) for line in lines[start + 1:]]


def tsv(output: str, first_column: str) -> list[dict[str, str]]:
    """The rows of kafka-transactions' tab-separated tables (cells may be empty)."""
    lines = [line for line in output.splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.startswith(first_column))
    header = [cell.strip() for cell in lines[start].split("\t")]
    return [dict(zip(header, [cell.strip() for cell in line.split("\t")], strict=False)) for line in lines[start + 1:]]


def test_kafka_topics_creates_lists_describes_alters_and_deletes(tbroker: BrokerProcess) -> None:
    bs = ["--bootstrap-server", tbroker.bootstrap]
    topic = unique("tools-topic")
    out = tool(TOPICS, *bs, "--create", "--topic", topic, "--partitions", "2", "--replication-factor", "1",
               "--config", "retention.ms=3600000", "--config", "cleanup.policy=compact")
    assert out.strip() == f"Created topic {topic}."
    assert topic in tool(TOPICS, *bs, "--list").split()
    again = tool(TOPICS, *bs, "--create", "--topic", topic, "--partitions", "1", expect_exit=1)
    assert f"Topic '{topic}' already exists." in again

    tool(TOPICS, *bs, "--alter", "--topic", topic, "--partitions", "4")
    described = tool(TOPICS, *bs, "--describe", "--topic", topic).splitlines()
    summary = described[0]
    assert summary.startswith(f"Topic: {topic}\tTopicId: ")
    assert "\tPartitionCount: 4\tReplicationFactor: 1\t" in summary
    # the topic's own configs (Kafka 4.3 lists min.insync.replicas too: a cluster-wide dynamic default, KIP-966)
    assert {"cleanup.policy=compact", "retention.ms=3600000"} <= set(summary.split("Configs: ")[1].split(","))
    partitions = [dict(re.findall(r"(\w+): (\S*)", line)) for line in described[1:]]
    assert [p["Partition"] for p in partitions] == ["0", "1", "2", "3"]
    leader = partitions[0]["Leader"]
    assert all(p["Topic"] == topic and p["Leader"] == p["Replicas"] == p["Isr"] == leader for p in partitions)

    tool(TOPICS, *bs, "--delete", "--topic", topic)
    admin, deadline = AdminClient({"bootstrap.servers": tbroker.bootstrap}), time.monotonic() + 10
    while topic in admin.list_topics(timeout=10).topics:  # Kafka's broker learns of it a moment later
        assert time.monotonic() < deadline, f"{topic} still listed after --delete"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def console(tbroker: BrokerProcess) -> dict[str, Any]:
    """Keyed lines through kafka-console-producer into a 3-partition topic, read back by
    kafka-console-consumer in a group (which commits what it read)."""
    topic, group = unique("tools-console"), unique("tools-group")
    create_topic(tbroker, topic, 3)
    lines = [f"user-{i % 5}:event-{i}" for i in range(20)]
    tool(CONSOLE_PRODUCER, "--bootstrap-server", tbroker.bootstrap, "--topic", topic,
         "--reader-property", "parse.key=true", "--reader-property", "key.separator=:",
         stdin="\n".join(lines) + "\n")
    out = tool(CONSOLE_CONSUMER, "--bootstrap-server", tbroker.bootstrap, "--topic", topic, "--group", group,
               "--from-beginning", "--max-messages", "20", "--formatter-property", "print.key=true",
               "--formatter-property", "print.partition=true", "--formatter-property", "print.offset=true")
    return {"topic": topic, "group": group, "lines": lines, "out": out}


def test_console_producer_and_consumer_round_trip_keyed_lines(console: dict[str, Any]) -> None:
    read = [line.split("\t") for line in console["out"].splitlines() if line.startswith("Partition:")]
    assert len(read) == 20
    by_partition: dict[int, list[tuple[int, str, str]]] = {}
    for partition, offset, key, value in read:
        by_partition.setdefault(int(partition.removeprefix("Partition:")), []).append(
            (int(offset.removeprefix("Offset:")), key, value))
    for partition, records in by_partition.items():
        assert [offset for offset, _, _ in records] == list(range(len(records)))  # in order, no gaps
        for _, key, _ in records:
            assert (murmur2(key.encode()) & 0x7FFFFFFF) % 3 == partition  # the Java client's partitioner
    for key in {line.split(":")[0] for line in console["lines"]}:  # per key, the order they were typed
        assert [v for ps in by_partition.values() for _, k, v in ps if k == key] == \
            [line.split(":")[1] for line in console["lines"] if line.startswith(key + ":")]


def test_consumer_groups_describes_lag_and_resets_offsets(tbroker: BrokerProcess, console: dict[str, Any]) -> None:
    bs = ["--bootstrap-server", tbroker.bootstrap]
    topic, group = console["topic"], console["group"]
    out = tool(CONSUMER_GROUPS, *bs, "--describe", "--group", group)
    rows = table(out, "GROUP")
    assert sorted(int(r["PARTITION"]) for r in rows) == [0, 1, 2]
    assert all(r["GROUP"] == group and r["TOPIC"] == topic and r["LAG"] == "0"
               and r["CURRENT-OFFSET"] == r["LOG-END-OFFSET"] for r in rows)
    ends = {int(r["PARTITION"]): int(r["LOG-END-OFFSET"]) for r in rows}
    assert sum(ends.values()) == 20

    out = tool(CONSUMER_GROUPS, *bs, "--reset-offsets", "--group", group, "--topic", topic, "--to-earliest",
               "--execute")
    assert sorted((int(r["PARTITION"]), r["NEW-OFFSET"]) for r in table(out, "GROUP")) == \
        [(0, "0"), (1, "0"), (2, "0")]
    out = tool(CONSUMER_GROUPS, *bs, "--reset-offsets", "--group", group, "--topic", f"{topic}:1",
               "--to-offset", "2", "--execute")
    assert [(r["PARTITION"], r["NEW-OFFSET"]) for r in table(out, "GROUP")] == [("1", "2")]
    admin = AdminClient({"bootstrap.servers": tbroker.bootstrap})
    (future,) = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)]).values()
    committed = {tp.partition: tp.offset for tp in future.result(10).topic_partitions}
    assert committed == {0: 0, 1: 2, 2: 0}

    out = tool(CONSUMER_GROUPS, *bs, "--describe", "--group", group, "--state")
    (state,) = table(out, "GROUP")
    assert state["GROUP"] == group and state["STATE"] == "Empty" and state["#MEMBERS"] == "0"
    assert group in tool(CONSUMER_GROUPS, *bs, "--list").split()

    out = tool(CONSUMER_GROUPS, *bs, "--delete", "--group", group)
    assert f"Deletion of requested consumer groups ('{group}') was successful." in out
    assert group not in [g.group_id for g in AdminClient({"bootstrap.servers": tbroker.bootstrap})
                         .list_consumer_groups().result(10).valid]


def test_consumer_groups_describes_an_active_member(tbroker: BrokerProcess) -> None:
    topic, group = unique("tools-live"), unique("tools-live-group")
    create_topic(tbroker, topic, 2)
    consumer = Consumer({"bootstrap.servers": tbroker.bootstrap, "group.id": group, "client.id": "live-client",
                         "auto.offset.reset": "earliest"})
    assigned, stop = threading.Event(), threading.Event()
    consumer.subscribe([topic], on_assign=lambda _consumer, partitions: partitions and assigned.set())
    polling = threading.Thread(target=lambda: [consumer.poll(0.1) for _ in iter(stop.is_set, True)])
    polling.start()
    try:
        assert assigned.wait(20), "the consumer never got its assignment"
        out = tool(CONSUMER_GROUPS, "--bootstrap-server", tbroker.bootstrap, "--describe", "--group", group,
                   "--members", "--verbose")
    finally:
        stop.set()
        polling.join()
        consumer.close()
    (member,) = table(out, "GROUP")
    assert member["GROUP"] == group and member["CONSUMER-ID"].startswith("live-client-")
    assert (member["HOST"], member["CLIENT-ID"]) == ("/127.0.0.1", "live-client")
    assert (member["#PARTITIONS"], member["CURRENT-ASSIGNMENT"]) == ("2", f"{topic}:0,1")


def test_kafka_configs_alters_and_describes_topic_configs(tbroker: BrokerProcess) -> None:
    topic = unique("tools-configs")
    entity = ["--bootstrap-server", tbroker.bootstrap, "--entity-type", "topics", "--entity-name", topic]
    create_topic(tbroker, topic, 1)
    out = tool(CONFIGS, *entity, "--alter", "--add-config", "retention.ms=60000,cleanup.policy=[delete,compact]")
    assert out.strip() == f"Completed updating config for topic {topic}."
    out = tool(CONFIGS, *entity, "--describe")
    lines = out.splitlines()
    assert lines[0] == f"Dynamic configs for topic {topic} are:"
    assert sorted(line.split(" sensitive=")[0].strip() for line in lines[1:]) == \
        ["cleanup.policy=delete,compact", "retention.ms=60000"]
    # log.retention.ms has no default in Kafka (log.retention.hours has): no broker synonym for retention.ms
    assert "  retention.ms=60000 sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:retention.ms=60000}\n" in out
    assert "  cleanup.policy=delete,compact sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:cleanup.policy=" \
        "delete,compact, DEFAULT_CONFIG:log.cleanup.policy=delete}\n" in out

    tool(CONFIGS, *entity, "--alter", "--delete-config", "retention.ms")
    out = tool(CONFIGS, *entity, "--describe", "--all")
    values = dict(re.findall(r"^  ([\w.]+)=(\S*) sensitive=", out, re.MULTILINE))
    assert values["retention.ms"] == "604800000"  # back to the broker's default
    assert values["cleanup.policy"] == "delete,compact"
    assert {"segment.bytes", "max.message.bytes", "min.insync.replicas", "message.timestamp.type"} <= set(values)


def test_kafka_transactions_lists_and_describes_an_open_transaction(tbroker: BrokerProcess) -> None:
    bs = ["--bootstrap-server", tbroker.bootstrap]
    topic, txn_id = unique("tools-txn"), unique("tools-txn-id")
    create_topic(tbroker, topic, 1)
    p = Producer({"bootstrap.servers": tbroker.bootstrap, "transactional.id": txn_id})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, b"pending", partition=0)
    p.flush(10)

    listing, description, producers = tools(
        (TRANSACTIONS, *bs, "list"), (TRANSACTIONS, *bs, "describe", "--transactional-id", txn_id),
        (TRANSACTIONS, *bs, "describe-producers", "--topic", topic, "--partition", "0"))
    (listed,) = [r for r in tsv(listing, "TransactionalId") if r["TransactionalId"] == txn_id]
    assert listed["TransactionState"] == "Ongoing"
    (described,) = tsv(description, "CoordinatorId")
    assert described["TransactionalId"] == txn_id and described["ProducerId"] == listed["ProducerId"]
    assert described["TransactionState"] == "Ongoing" and described["TopicPartitions"] == f"{topic}-0"
    assert int(described["CurrentTransactionStartTimeMs"]) > 0 and int(described["TransactionDurationMs"]) >= 0
    (producer,) = tsv(producers, "ProducerId")
    assert producer["ProducerId"] == listed["ProducerId"]
    assert producer["CurrentTransactionStartOffset"] == "0" and producer["LastSequence"] == "0"

    p.commit_transaction(30)
    for _ in range(10):  # the commit returns once PrepareCommit is logged; the markers follow (as in Kafka)
        (described,) = tsv(tool(TRANSACTIONS, *bs, "describe", "--transactional-id", txn_id), "CoordinatorId")
        if described["TransactionState"] != "PrepareCommit":
            break
    assert described["TransactionState"] == "CompleteCommit" and described["TopicPartitions"] == ""


def test_kafka_get_offsets_latest_earliest_and_max_timestamp(tbroker: BrokerProcess) -> None:
    bs = ["--bootstrap-server", tbroker.bootstrap]
    topic = unique("tools-offsets")
    create_topic(tbroker, topic, 2)
    p = Producer({"bootstrap.servers": tbroker.bootstrap, "linger.ms": 0})
    for i, timestamp in enumerate([1_000, 5_000, 3_000, 2_000]):  # partition 0's largest timestamp at offset 1
        p.produce(topic, f"v{i}".encode(), partition=0, timestamp=1_700_000_000_000 + timestamp)
        p.flush(10)
    p.produce(topic, b"other", partition=1)
    p.flush(10)
    admin = AdminClient({"bootstrap.servers": tbroker.bootstrap})
    admin.delete_records([TopicPartition(topic, 0, 1)])[TopicPartition(topic, 0, 1)].result(10)

    latest, earliest, max_timestamp = tools(
        (GET_OFFSETS, *bs, "--topic", topic), (GET_OFFSETS, *bs, "--topic", topic, "--time", "-2"),
        (GET_OFFSETS, *bs, "--topic-partitions", f"{topic}:0", "--time", "-3"))
    assert latest.split() == [f"{topic}:0:4", f"{topic}:1:1"]
    assert earliest.split() == [f"{topic}:0:1", f"{topic}:1:0"]
    assert max_timestamp.split() == [f"{topic}:0:1"]


def test_producer_and_consumer_perf_tests_move_every_record(tbroker: BrokerProcess) -> None:
    topic = unique("tools-perf")
    out = tool(PRODUCER_PERF, "--topic", topic, "--num-records", "3000", "--record-size", "200",
               "--throughput", "-1", "--command-property", f"bootstrap.servers={tbroker.bootstrap}", "acks=all")
    summary = out.strip().splitlines()[-1]
    assert re.match(r"3000 records sent, [\d.]+ records/sec \([\d.]+ MB/sec\), [\d.]+ ms avg latency", summary), out
    out = tool(CONSUMER_PERF, "--bootstrap-server", tbroker.bootstrap, "--topic", topic, "--num-records", "3000",
               "--timeout", "30000")
    header, values = out.strip().splitlines()[-2:]
    row = dict(zip([h.strip() for h in header.split(",")], [v.strip() for v in values.split(",")], strict=True))
    assert row["data.consumed.in.nMsg"] == "3000"
    assert float(row["data.consumed.in.MB"]) == pytest.approx(3000 * 200 / 1024 / 1024, abs=0.001)
