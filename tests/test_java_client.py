"""Kafka's own Java client (org.apache.kafka:kafka-clients 4.3.1) against a real `odradek serve`.

Three Java programs under tests/java (JavaClientProducer, JavaClientConsumer, JavaClientAdmin,
each extending ClientScenarios), compiled together once, run scenarios against the module's
broker and print one JSON line per result; the assertions are made here on what they print, and
where it matters on what the broker holds (read back with librdkafka, or the segment files
themselves). Each program runs once for the module with all its scenarios (a JVM start is the
slow part), and each test checks its scenario's lines. The AdminClient's security scenario (SCRAM users, ACLs) runs against a
second broker with a SASL_PLAINTEXT listener and the AclAuthorizer.
"""

from __future__ import annotations

import json
import struct
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition
from conftest import (
    JAVA_DIR,
    ROOT,
    BrokerProcess,
    compile_java,
    free_port,
    java_command,
    module_broker,
    unique,
)
from kafka.partitioner.default import murmur2  # kafka-python's copy of the Java client's hash

# A small heap, and C1 only: these JVMs live seconds, and C2's compiler threads would cost more
# CPU than they save on a busy machine.
ENV = {"ODRADEK_GROUP_INITIAL_REBALANCE_DELAY_MS": "0", "ODRADEK_OFFSETS_TOPIC_NUM_PARTITIONS": "3",
       "ODRADEK_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "3"}
CODEC_IDS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}  # a record batch's attributes & 7
# The tests that check what Kafka answers: pytest --kafka runs them against Apache Kafka.
KAFKA_BEHAVIOUR = pytest.mark.kafka_behaviour

jbroker = module_broker("jbroker", ENV)

Lines = dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="session")
def java_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/java/ClientScenarios.java and the three programs, compiled once; the class directory."""
    return compile_java([JAVA_DIR / "ClientScenarios.java", *sorted(JAVA_DIR.glob("JavaClient*.java"))],
                        tmp_path_factory.mktemp("java-client-classes"))


def run_java(classes: Path, program: str, bootstrap: str, prefix: str, *scenarios: str,
             system: dict[str, str] | None = None, timeout: float = 240) -> Lines:
    """Runs the compiled <program> (see java_classes) with the scenarios; its JSON lines grouped by scenario."""
    props = [f"-D{key}={value}" for key, value in (system or {}).items()]
    done = subprocess.run([*java_command(classes=classes), *props, program, bootstrap, prefix, *scenarios],
                          capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    lines: Lines = defaultdict(list)
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            parsed = json.loads(line)
            lines[parsed.pop("scenario")].append(parsed)
    return lines


def scenario(lines: Lines, name: str) -> list[dict[str, Any]]:
    """One scenario's lines, failing the test with the Java exception if it threw."""
    got = lines.get(name, [])
    errors = [line["error"] for line in got if "error" in line]
    assert not errors, f"{name}: {errors}"
    assert got, f"{name} printed nothing"
    return got


def read_all(bootstrap: str, topic: str, partitions: int, isolation: str = "read_uncommitted") -> list[Any]:
    """Every record of the topic as librdkafka reads it (up to the end each partition reports)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("ck"), "enable.auto.commit": False,
                  "enable.partition.eof": True, "isolation.level": isolation})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: list[Any] = []
    eof: set[int] = set()
    deadline = time.monotonic() + 20
    try:
        while len(eof) < partitions:
            assert time.monotonic() < deadline, f"librdkafka stalled on {topic} with {len(out)} records"
            for m in c.consume(1000, 0.2):
                if m.error() is not None:
                    assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                    eof.add(m.partition())
                else:
                    out.append(m)
    finally:
        c.close()
    return out


def batch_codecs(data_dir: Path, topic: str) -> list[int]:
    """The compression codec of each record batch in partition 0's segment files, as stored."""
    directory = next(d for d in (data_dir / f"{topic}-0", data_dir / "logs" / f"{topic}-0") if d.is_dir())
    codecs = []
    for segment in sorted(directory.glob("*.log")):
        data = segment.read_bytes()
        pos = 0
        while pos + 23 <= len(data):
            (length,) = struct.unpack_from(">i", data, pos + 8)
            if length == 0:
                break
            (attributes,) = struct.unpack_from(">h", data, pos + 21)
            codecs.append(attributes & 7)
            pos += 12 + length
    return codecs


# -- the producer ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def produced(jbroker: BrokerProcess, java_classes: Path) -> Lines:
    return run_java(java_classes, "JavaClientProducer", jbroker.bootstrap, unique("jp"),
                    "acks", "idempotence", "compression", "headers", "partitioner", "transactions")


@KAFKA_BEHAVIOUR
def test_java_producer_acks_0_1_and_all_each_land_in_order(jbroker: BrokerProcess, produced: Lines) -> None:
    runs = {line["acks"]: line for line in scenario(produced, "acks")}
    assert runs["0"]["offsets"] == [-1] * 5  # acks=0: the producer never hears an offset
    assert runs["1"]["offsets"] == list(range(5, 10))
    assert runs["all"]["offsets"] == list(range(10, 15))
    values = [m.value().decode() for m in read_all(jbroker.bootstrap, runs["0"]["topic"], 1)]
    assert values == [f"acks{acks}-{i}" for acks in ("0", "1", "all") for i in range(5)]


@KAFKA_BEHAVIOUR
def test_java_idempotent_producer_writes_each_record_once(produced: Lines) -> None:
    (line,) = scenario(produced, "idempotence")
    assert line["offsets"] == list(range(200))
    (state,) = line["producers"]  # DescribeProducers: one producer id, its sequence at the last record
    assert state["producerId"] >= 0 and state["epoch"] == 0
    assert state["lastSequence"] == 199


@KAFKA_BEHAVIOUR
def test_java_producer_compression_codecs_are_stored_and_read_back(jbroker: BrokerProcess, produced: Lines) -> None:
    lines = scenario(produced, "compression")
    assert sorted(line["codec"] for line in lines) == sorted(CODEC_IDS)
    for line in lines:
        codec, topic = line["codec"], line["topic"]
        expected = [f"{codec}-{i}-{'x' * 100}" for i in range(100)]
        assert line["offsets"] == list(range(100))
        assert line["read"] == expected  # the Java consumer decompresses what it wrote
        assert [m.value().decode() for m in read_all(jbroker.bootstrap, topic, 1)] == expected  # and librdkafka
        codecs = batch_codecs(jbroker.data_dir, topic)
        assert codecs and set(codecs) == {CODEC_IDS[codec]}, f"{codec}: batches stored with codecs {codecs}"


@KAFKA_BEHAVIOUR
def test_java_headers_null_keys_and_tombstones_round_trip(jbroker: BrokerProcess, produced: Lines) -> None:
    lines = scenario(produced, "headers")
    assert [(line["offset"], line["key"], line["value"]) for line in lines] == \
        [(0, "k1", "with-headers"), (1, None, "no-key"), (2, "k1", None)]
    assert lines[0]["headers"] == [["trace", list(b"abc-123")], ["dup", list(b"1")], ["dup", list(b"2")],
                                   ["empty", None], ["bytes", [0, 255, 10]]]
    assert lines[1]["headers"] == [] and lines[2]["headers"] == []
    first = read_all(jbroker.bootstrap, lines[0]["topic"], 1)[0]  # librdkafka sees the same headers
    assert first.headers() == [("trace", b"abc-123"), ("dup", b"1"), ("dup", b"2"), ("empty", None),
                               ("bytes", b"\x00\xff\n")]


@KAFKA_BEHAVIOUR
def test_java_default_partitioner_is_murmur2_and_a_custom_partitioner_is_obeyed(
        jbroker: BrokerProcess, produced: Lines) -> None:
    (line,) = scenario(produced, "partitioner")
    expected = {key: (murmur2(key.encode()) & 0x7FFFFFFF) % 6 for key in line["default"]}
    assert line["default"] == expected
    assert len(set(expected.values())) == 6
    stored = {m.key().decode(): m.partition() for m in read_all(jbroker.bootstrap, line["topic"], 6)}
    assert stored == expected  # the broker kept each record in the partition the producer chose
    custom = line["custom"]
    assert custom == {key: 0 if key.startswith("vip-") else 1 + len(key) % 3 for key in custom}
    assert {m.key().decode(): m.partition() for m in read_all(jbroker.bootstrap, line["customTopic"], 4)} == custom


@KAFKA_BEHAVIOUR
def test_java_transaction_with_send_offsets_is_seen_only_when_committed(
        jbroker: BrokerProcess, produced: Lines) -> None:
    lines = scenario(produced, "transactions")
    assert lines[0]["consumed"] == 10
    result = lines[1]
    committed = sorted([f"IN-{i}" for i in range(10)] + ["after-abort"])
    assert sorted(result["readCommitted"]) == committed
    assert sorted(result["readUncommitted"]) == sorted(committed + ["aborted-0", "aborted-1", "aborted-2"])
    # the offsets went to the group inside the committed transaction
    assert sorted(result["groupOffsets"].values()) == [5, 5]
    (listed,) = result["listed"]
    assert listed["state"] in ("PrepareCommit", "CompleteCommit")  # the last markers may still be on their way
    assert listed["producerId"] >= 0
    # librdkafka's read_committed agrees
    assert sorted(m.value().decode() for m in read_all(jbroker.bootstrap, result["out"], 2, "read_committed")) \
        == committed


# -- the consumer ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def consumed(jbroker: BrokerProcess, java_classes: Path) -> Lines:
    return run_java(java_classes, "JavaClientConsumer", jbroker.bootstrap, unique("jc"),
                    "commit", "seek", "pause", "cooperative", "static")


@KAFKA_BEHAVIOUR
def test_java_consumer_commit_sync_and_async_and_a_new_member_resumes_there(consumed: Lines) -> None:
    first, resumed = scenario(consumed, "commit")
    assert first["firstRead"] == 30
    assert first["afterSync"] == {"0": 4} and first["metadata"] == "sync-meta"
    assert first["asyncCallback"] == "ok:3"
    assert first["afterAsync"] == {"0": 10, "1": 10, "2": 10}
    assert resumed["resumed"] == ["later-0", "later-1", "later-2"]  # nothing before the commits again


@KAFKA_BEHAVIOUR
def test_java_consumer_assign_seek_and_offsets_for_times(consumed: Lines) -> None:
    (line,) = scenario(consumed, "seek")
    assert line["firstOffset"] == 7 and line["values"] == [f"p0-{i}" for i in range(7, 20)]
    assert (line["beginning"], line["end"]) == (0, 20)
    assert (line["beginningOffsets"], line["endOffsets"]) == (0, 20)
    # the first record at or after base + 5.5 s is offset 6 (timestamp base + 6 s)
    assert (line["forTimeOffset"], line["forTimeTimestamp"]) == (6, 6000)
    assert line["futureIsNull"] is True
    assert (line["seekedValue"], line["seekedTimestamp"]) == ("p0-6", 6000)


@KAFKA_BEHAVIOUR
def test_java_consumer_pause_holds_a_partition_back_until_resume(consumed: Lines) -> None:
    (line,) = scenario(consumed, "pause")
    assert line["whilePaused"] == [f"p0-{i}" for i in range(10)]
    assert line["paused"] == [1]
    assert line["afterResume"] == [f"p1-{i}" for i in range(10)]
    assert line["pausedAfterResume"] == []


@KAFKA_BEHAVIOUR
def test_java_cooperative_sticky_moves_only_the_partitions_that_change_owner(consumed: Lines) -> None:
    (line,) = scenario(consumed, "cooperative")
    first, second = line["first"], line["second"]
    assert first[0] == ["assigned", [0, 1, 2, 3]]
    revoked = [partitions for kind, partitions in first if kind == "revoked"]
    assert revoked == [sorted(line["secondOwns"])]  # only what moved, and once
    assert not [e for e in first + second if e[0] in ("lost",)]
    assert all(kind == "assigned" for kind, _ in second)
    assert sorted(line["firstOwns"] + line["secondOwns"]) == [0, 1, 2, 3]
    assert len(line["firstOwns"]) == len(line["secondOwns"]) == 2
    group = line["group"]
    assert group["state"] == "Stable" and group["assignor"] == "cooperative-sticky"
    assert sorted(sorted(m["partitions"]) for m in group["members"]) == \
        sorted([sorted(line["firstOwns"]), sorted(line["secondOwns"])])


@KAFKA_BEHAVIOUR
def test_java_static_member_back_within_the_session_keeps_its_partitions(consumed: Lines) -> None:
    (line,) = scenario(consumed, "static")
    assert line["aAfter"] == line["aBefore"] and line["bAfter"] == line["bBefore"]
    assert sorted(line["aBefore"] + line["bBefore"]) == [0, 1, 2, 3]
    assert line["againEvents"] == [["assigned", line["aBefore"]]]
    assert line["bEventsAfter"] == line["bEventsBefore"], f"member-b saw a rebalance: {line['bEvents']}"
    # while away the static member stays in the group (no LeaveGroup, its session still runs)
    assert sorted(m["instanceId"] for m in line["whileAway"]["members"]) == ["member-a", "member-b"]
    after = line["after"]
    assert after["state"] == "Stable"
    assert {m["instanceId"]: m["partitions"] for m in after["members"]} == \
        {"member-a": line["aBefore"], "member-b": line["bBefore"]}


# -- the AdminClient ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def administered(jbroker: BrokerProcess, java_classes: Path) -> Lines:
    return run_java(java_classes, "JavaClientAdmin", jbroker.bootstrap, unique("ja"),
                    "topics", "configs", "cluster", "groups", "records", "transactions")


@KAFKA_BEHAVIOUR
def test_java_admin_creates_lists_grows_and_deletes_topics(administered: Lines) -> None:
    (line,) = scenario(administered, "topics")
    assert line["listedA"] and line["listedB"]
    assert line["internalHidden"] and line["internalListed"]  # __consumer_offsets only with listInternal
    assert line["createAgain"] == "TopicExistsException"
    assert line["tooManyReplicas"] == "InvalidReplicationFactorException"
    assert line["shrink"] == "InvalidPartitionsException"
    assert [p["partition"] for p in line["partitions"]] == [0, 1, 2, 3, 4]  # createPartitions 3 -> 5
    assert len({p["leader"] for p in line["partitions"]}) == 1
    assert all(p["replicas"] == p["isr"] == 1 for p in line["partitions"])
    assert line["topicIdSet"] and not line["internal"]
    assert (line["retention"], line["cleanup"]) == ("3600000", "compact")  # the configs given at creation
    assert not line["bListedAfterDelete"]
    assert line["deleteMissing"] == line["describeMissing"] == "UnknownTopicOrPartitionException"


@KAFKA_BEHAVIOUR
def test_java_admin_describe_and_incremental_alter_configs(administered: Lines) -> None:
    (line,) = scenario(administered, "configs")
    assert line["segmentBefore"]["value"] == "1048576" and line["segmentBefore"]["source"] == "DYNAMIC_TOPIC_CONFIG"
    assert line["retentionBefore"]["source"] == "DEFAULT_CONFIG" and line["retentionBefore"]["value"] == "604800000"
    assert line["retentionAfter"] == {**line["retentionBefore"], "value": "120000", "source": "DYNAMIC_TOPIC_CONFIG"}
    assert line["retentionAfter"]["type"] == "LONG"
    assert line["cleanupAfter"]["value"] == "delete,compact"  # APPEND to the list
    assert line["cleanupAfter"]["type"] == "LIST"
    assert line["segmentAfter"]["source"] == "DEFAULT_CONFIG"  # DELETE: back to the default
    assert line["segmentAfter"]["value"] == "1073741824"
    assert line["cleanupSubtracted"] == "compact"  # SUBTRACT from the list
    assert line["unknown"] == line["badValue"] == "InvalidConfigurationException"
    assert {"retention.ms", "cleanup.policy", "segment.bytes", "max.message.bytes", "min.insync.replicas",
            "message.timestamp.type", "compression.type"} <= set(line["topicConfigs"])
    broker = line["brokerConfigs"]
    assert broker["num.partitions"] == "1" and broker["auto.create.topics.enable"] == "true"
    assert broker["log.segment.bytes"] == "1073741824"


@KAFKA_BEHAVIOUR
def test_java_admin_describes_the_cluster(jbroker: BrokerProcess, administered: Lines) -> None:
    (line,) = scenario(administered, "cluster")
    assert len(line["clusterId"]) == 22  # a base64 UUID
    (node,) = line["nodes"]
    assert (node["host"], node["port"]) == ("127.0.0.1", jbroker.port)
    assert line["controller"] == node["id"]


@KAFKA_BEHAVIOUR
def test_java_admin_lists_alters_and_deletes_group_offsets(administered: Lines) -> None:
    active, line = scenario(administered, "groups")
    assert active["read"] == 10
    assert active["alterWhileActive"] == "UnknownMemberIdException"  # only an empty group's offsets move
    topic = line["topic"]
    assert line["committed"] == {f"{topic}-0": 5, f"{topic}-1": 5}
    assert line["altered"] == {f"{topic}-0": [1, "rewound"], f"{topic}-1": [3, ""]}
    (listed,) = line["listed"]
    assert listed.split(":")[1:3] == ["Classic", "Empty"]
    assert line["state"] == "Empty"
    assert line["afterDeleteOffsets"] == {f"{topic}-0": 1}
    assert line["describeDeleted"] == "GroupIdNotFoundException"


@KAFKA_BEHAVIOUR
def test_java_admin_delete_records_moves_the_log_start(administered: Lines) -> None:
    (line,) = scenario(administered, "records")
    assert line["lowWatermark"] == 4
    assert line["beyondEnd"] == "OffsetOutOfRangeException"
    assert line["offsets"] == {"earliest": 4, "latest": 10, "forTimestamp": 4}
    assert line["firstConsumed"] == 4


@KAFKA_BEHAVIOUR
def test_java_admin_lists_and_describes_transactions(administered: Lines) -> None:
    (line,) = scenario(administered, "transactions")
    topic, open_, committed = line["topic"], line["open"], line["committed"]
    assert open_["listedState"] == open_["state"] == "Ongoing"
    assert open_["partitions"] == [f"{topic}-0"] and open_["startTimeSet"]
    assert open_["producerId"] == open_["listedProducerId"] >= 0
    assert open_["timeoutMs"] == 60000  # the Java producer's transaction.timeout.ms default
    assert line["producers"] == [{"producerId": open_["producerId"], "currentTransactionStartOffset": 0}]
    assert line["firstAfterCommit"] in ("PrepareCommit", "CompleteCommit")  # Kafka's markers may still be on their way
    assert committed["listedState"] == committed["state"] == "CompleteCommit"
    assert committed["partitions"] == []
    assert committed["producerId"] == open_["producerId"]
    assert committed["epoch"] >= open_["epoch"]  # transactions v2 (KIP-890) bumps it at each end
    assert not line["ongoingAfterCommit"]
    assert line["describeMissing"] == "TransactionalIdNotFoundException"


# -- SCRAM users and ACLs ----------------------------------------------------------------

ADMIN_PASSWORD = "admin-secret-java-41"
ALICE_PASSWORD = "alice-secret-java-7c"


def login(mechanism: str, module: str, user: str, password: str) -> str:
    return ("security.protocol=SASL_PLAINTEXT\n"
            f"sasl.mechanism={mechanism}\n"
            f"sasl.jaas.config=org.apache.kafka.common.security.{module} required "
            f'username="{user}" password="{password}";\n')


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """PLAINTEXT (the fixture's port) plus SASL_PLAINTEXT with SCRAM and PLAIN (admin, the super user)."""
    directory = tmp_path_factory.mktemp("java-secured")
    b = BrokerProcess(directory / "data", env=ENV)
    b.sasl_port = free_port()  # type: ignore[attr-defined]
    jaas = ('org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" '
            f'password="{ADMIN_PASSWORD}" user_admin="{ADMIN_PASSWORD}";')
    props = {
        "listeners": f"PLAINTEXT://127.0.0.1:{b.port},SASL_PLAINTEXT://127.0.0.1:{b.sasl_port}",  # type: ignore[attr-defined]
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
        "sasl.jaas.config": jaas,
        "authorizer.class.name": "kafka.security.authorizer.AclAuthorizer",
        "super.users": "User:admin",
    }
    (directory / "server.properties").write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    b.extra_args = ["--config", str(directory / "server.properties")]
    b.start()
    yield b
    if b.proc is not None and b.proc.poll() is None:
        b.stop()


def test_java_admin_scram_users_and_acls_decide_who_writes(secured: BrokerProcess, tmp_path: Path,
                                                           java_classes: Path) -> None:
    admin_config, alice_config = tmp_path / "admin.properties", tmp_path / "alice.properties"
    admin_config.write_text(login("PLAIN", "plain.PlainLoginModule", "admin", ADMIN_PASSWORD))
    alice_config.write_text(login("SCRAM-SHA-512", "scram.ScramLoginModule", "alice", ALICE_PASSWORD))
    lines = run_java(java_classes, "JavaClientAdmin", f"127.0.0.1:{secured.sasl_port}", unique("js"), "security",  # type: ignore[attr-defined]
                     system={"admin.config": str(admin_config), "alice.config": str(alice_config)})
    (line,) = scenario(lines, "security")
    assert line["credentials"] == ["SCRAM_SHA_256:4096", "SCRAM_SHA_512:8192"]
    assert line["users"] == ["alice"]
    assert line["unknownUser"] == "ResourceNotFoundException"
    prefix_ok = line["acls"][0].rsplit(":", 1)[1]
    assert line["acls"] == [f"User:alice ALLOW DESCRIBE TOPIC:PREFIXED:{prefix_ok}",
                            f"User:alice ALLOW WRITE TOPIC:PREFIXED:{prefix_ok}"]
    assert line["aliceAllowed"] == "offset 0"  # SCRAM-SHA-512, under the prefixed ACL
    assert line["aliceDenied"] == "TopicAuthorizationException"
    assert line["alice256Allowed"] == "offset 1"  # the same user over SCRAM-SHA-256
    assert line["aliceDescribesAcls"] == "ClusterAuthorizationException"
    assert line["wrongPassword"] == "SaslAuthenticationException"
    assert line["deleted"] == line["acls"]
    assert line["afterDelete"] == "TopicAuthorizationException"
    assert line["remainingCredentials"] == ["SCRAM_SHA_512:8192"]
    assert line["alice256AfterDelete"] == "SaslAuthenticationException"
