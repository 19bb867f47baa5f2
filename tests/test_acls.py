"""ACL authorization with Kafka's semantics, seen by confluent-kafka over mTLS.

One `odradek serve` for the module: an SSL listener with ssl.client.auth=required and
ssl.principal.mapping.rules turning `CN=alice` into `User:alice`, the AclAuthorizer, and
`User:admin` as the super user who grants everything through AdminClient.create_acls.
Each test names its own topics, groups and transactional ids, so ACLs granted by one
test never reach another's resources (only `carol` gets the `*` wildcard).
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)
from conftest import ROOT, BrokerProcess, free_port, recv_exact, unique
from kio.schema.errors import ErrorCode as E

from odradek.protocol.build import build
from odradek.protocol.framing import decode_response, encode_request, request_type
from odradek.security.devcerts import DevCertificates, write_dev_certificates

if TYPE_CHECKING:
    from cluster_fixtures import ZooKeeper

pytest_plugins = ["cluster_fixtures"]  # the zookeeper fixture

AUTHORIZER = "kafka.security.authorizer.AclAuthorizer"
LITERAL, PREFIXED, MATCH, ANY_PATTERN = (ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED,
                                         ResourcePatternType.MATCH, ResourcePatternType.ANY)
TOPIC, GROUP, TXN = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID
ALLOW, DENY = AclPermissionType.ALLOW, AclPermissionType.DENY
Op = AclOperation


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCertificates:
    return write_dev_certificates(tmp_path_factory.mktemp("certs"), clients=["admin", "alice", "bob", "carol"])


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, certs: DevCertificates) -> Iterator[BrokerProcess]:
    port = free_port()
    env = {
        "ODRADEK_LISTENERS": f"SSL://127.0.0.1:{port}",
        "ODRADEK_INTER_BROKER_LISTENER_NAME": "SSL",
        "ODRADEK_SSL_KEYSTORE_LOCATION": str(certs.keystore),
        "ODRADEK_SSL_TRUSTSTORE_LOCATION": str(certs.truststore),
        "ODRADEK_SSL_CLIENT_AUTH": "required",
        "ODRADEK_SSL_PRINCIPAL_MAPPING_RULES": "RULE:^CN=(.*?)(,.*)?$/$1/,DEFAULT",
        "ODRADEK_AUTHORIZER_CLASS_NAME": AUTHORIZER,
        "ODRADEK_SUPER_USERS": "User:admin",
        "ODRADEK_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    }
    b = BrokerProcess(tmp_path_factory.mktemp("acls") / "data", port=port, env=env).start()
    yield b
    if b.proc is not None and b.proc.poll() is None:
        b.stop()


class As:
    """One principal's clients (a fresh one each time: librdkafka remembers a topic's
    authorization error until its next metadata refresh)."""

    def __init__(self, broker: Any, certs: DevCertificates, who: str) -> None:  # anything with .bootstrap
        self.principal = f"User:{who}"
        client = certs.clients[who]
        self.conf = {
            "bootstrap.servers": broker.bootstrap, "security.protocol": "SSL",
            "ssl.ca.location": str(certs.truststore), "ssl.certificate.location": str(client.cert_path),
            "ssl.key.location": str(client.key_path),
        }
        self._admin: AdminClient | None = None

    def admin(self) -> AdminClient:
        """One AdminClient per principal (a client dropped while its futures run fails them)."""
        if self._admin is None:
            self._admin = AdminClient(self.conf)
        return self._admin

    def producer(self, **extra: Any) -> Producer:
        return Producer({**self.conf, "message.timeout.ms": 5000, **extra})

    def consumer(self, group: str, **extra: Any) -> Consumer:
        return Consumer({**self.conf, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, **extra})

    def produce(self, topic: str, *values: bytes) -> list[str | None]:
        """Each record's delivery error name (None: delivered)."""
        results: list[str | None] = []
        producer = self.producer()
        for value in values:
            try:
                producer.produce(topic, value, on_delivery=lambda err, _msg: results.append(
                    None if err is None else err.name()))
            except KafkaException as exc:
                results.append(exc.args[0].name())
        producer.flush(60)
        return results

    def consume(self, topic: str, group: str, want: int, timeout: float = 60.0) -> tuple[list[bytes], set[str]]:
        """Up to `want` values from the start of `topic` in `group`, and the errors seen."""
        consumer = self.consumer(group)
        consumer.subscribe([topic])
        values: list[bytes] = []
        errors: set[str] = set()
        deadline = time.monotonic() + timeout
        try:
            while len(values) < want and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                if msg.error():
                    errors.add(msg.error().name())
                    if errors & {"GROUP_AUTHORIZATION_FAILED", "TOPIC_AUTHORIZATION_FAILED"} and not values:
                        break
                    continue
                values.append(msg.value())
        finally:
            consumer.close()
        return values, errors


def call(broker: Any, certs: DevCertificates | None, who: str, api_key: int, version: int, **body: Any) -> Any:
    """One request over mTLS as `who` (plain TCP without `certs`), for the answers AdminClient
    does not show."""
    host, port = broker.bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=15) as raw:
        s = raw
        if certs is not None:
            context = ssl.create_default_context(cafile=str(certs.truststore))
            client = certs.clients[who]
            context.load_cert_chain(str(client.cert_path), str(client.key_path))
            s = context.wrap_socket(raw, server_hostname=host)
        s.sendall(encode_request(api_key, version, 7, build(request_type(api_key, version), body)))
        size = struct.unpack(">i", recv_exact(s, 4))[0]
        return decode_response(recv_exact(s, size), api_key, version)[1]


EVERYTHING = {"resource_type_filter": 1, "resource_name_filter": None, "pattern_type_filter": 1,
              "principal_filter": None, "host_filter": None, "operation": 1, "permission_type": 1}


def error_of(future: Any) -> str:
    with pytest.raises(KafkaException) as info:
        future.result(15)
    return str(info.value.args[0].name())


def acl(resource: ResourceType, name: str, op: AclOperation, who: str = "User:alice", *,
        pattern: ResourcePatternType = LITERAL, permission: AclPermissionType = ALLOW,
        host: str = "*") -> AclBinding:
    return AclBinding(resource, name, pattern, who, host, op, permission)


@pytest.fixture(scope="module")
def admin(secured: BrokerProcess, certs: DevCertificates) -> As:
    return As(secured, certs, "admin")


@pytest.fixture(scope="module")
def alice(secured: BrokerProcess, certs: DevCertificates) -> As:
    return As(secured, certs, "alice")


@pytest.fixture(scope="module")
def bob(secured: BrokerProcess, certs: DevCertificates) -> As:
    return As(secured, certs, "bob")


def grant(admin: As, *bindings: AclBinding) -> None:
    for future in admin.admin().create_acls(list(bindings)).values():
        future.result(15)


def new_topic(admin: As, prefix: str, partitions: int = 1) -> str:
    name = unique(prefix)
    admin.admin().create_topics([NewTopic(name, partitions, 1)])[name].result(15)
    return name


# -- the ACL APIs ---------------------------------------------------------------


def test_acl_apis_need_alter_and_describe_on_the_cluster(alice: As, secured: BrokerProcess,
                                                          certs: DevCertificates) -> None:
    client = alice.admin()
    binding = acl(TOPIC, unique("x"), Op.READ)
    assert error_of(client.create_acls([binding])[binding]) == "CLUSTER_AUTHORIZATION_FAILED"
    everything = AclBindingFilter(ResourceType.ANY, None, ANY_PATTERN, None, None, Op.ANY, AclPermissionType.ANY)
    assert error_of(client.delete_acls([everything])[everything]) == "CLUSTER_AUTHORIZATION_FAILED"
    # librdkafka drops DescribeAcls' top-level error (an empty list comes back): read the wire
    described = call(secured, certs, "alice", 29, 3, **EVERYTHING)
    assert described.error_code == E.cluster_authorization_failed and described.resources == ()
    unknown = call(secured, certs, "admin", 29, 3, **{**EVERYTHING, "resource_type_filter": 0})
    assert unknown.error_code == E.invalid_request


def test_describe_and_delete_acls_by_filter(admin: As) -> None:
    client = admin.admin()
    name = unique("flt")
    literal = acl(TOPIC, name, Op.READ)
    prefix = acl(TOPIC, name[:5], Op.WRITE, pattern=PREFIXED)
    other = acl(GROUP, name, Op.READ, "User:bob")
    grant(admin, literal, prefix, other)
    matching = AclBindingFilter(TOPIC, name, MATCH, None, None, Op.ANY, AclPermissionType.ANY)
    found = client.describe_acls(matching).result(15)
    assert literal in found and prefix in found and other not in found
    exact = AclBindingFilter(TOPIC, name, ANY_PATTERN, None, None, Op.ANY, AclPermissionType.ANY)
    assert client.describe_acls(exact).result(15) == [literal]
    by_principal = AclBindingFilter(ResourceType.ANY, name, ANY_PATTERN, "User:bob", None, Op.ANY,
                                    AclPermissionType.ANY)
    assert client.describe_acls(by_principal).result(15) == [other]
    gone = client.delete_acls([exact])[exact].result(15)
    assert gone == [literal]
    assert literal not in client.describe_acls(matching).result(15)
    cluster = AclBinding(ResourceType.BROKER, "not-the-cluster", LITERAL, "User:alice", "*", Op.ALTER, ALLOW)
    assert error_of(client.create_acls([cluster])[cluster]) == "INVALID_REQUEST"


def test_acl_apis_without_an_authorizer_are_security_disabled(broker_factory: Any) -> None:
    plain = broker_factory()
    client = AdminClient({"bootstrap.servers": plain.bootstrap})
    binding = acl(TOPIC, "t", Op.READ)
    assert error_of(client.create_acls([binding])[binding]) == "SECURITY_DISABLED"
    assert call(plain, None, "", 29, 3, **EVERYTHING).error_code == E.security_disabled


def test_an_unknown_authorizer_class_is_one_sentence(tmp_path: Path) -> None:
    env = {**os.environ, "ODRADEK_AUTHORIZER_CLASS_NAME": "com.example.MyAuthorizer"}
    done = subprocess.run([sys.executable, "-m", "odradek", "serve", "--listen", f"127.0.0.1:{free_port()}",
                           "--data-dir", str(tmp_path / "data")], check=False, env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "authorizer.class.name must be empty or one of kafka.security.authorizer.AclAuthorizer" in done.stderr
    assert "Traceback" not in done.stderr


# -- produce, consume, groups -------------------------------------------------------


def test_produce_denied_then_allowed(admin: As, alice: As) -> None:
    topic = new_topic(admin, "prod")
    assert alice.produce(topic, b"no") == ["TOPIC_AUTHORIZATION_FAILED"]
    grant(admin, acl(TOPIC, topic, Op.WRITE))
    assert alice.produce(topic, b"yes", b"again") == [None, None]
    values, _ = admin.consume(topic, unique("check"), 2)
    assert values == [b"yes", b"again"]


def test_consumer_group_denied_then_allowed(admin: As, alice: As) -> None:
    topic = new_topic(admin, "cons")
    assert admin.produce(topic, b"a", b"b", b"c") == [None] * 3
    group = unique("app-grp")
    values, errors = alice.consume(topic, group, 3, timeout=30)  # ends at the first refusal
    assert not values and "GROUP_AUTHORIZATION_FAILED" in errors
    grant(admin, acl(GROUP, "app-grp", Op.READ, pattern=PREFIXED), acl(TOPIC, topic, Op.DESCRIBE))
    values, errors = alice.consume(topic, group, 3, timeout=30)
    assert not values and "TOPIC_AUTHORIZATION_FAILED" in errors
    grant(admin, acl(TOPIC, topic, Op.READ))
    values, _ = alice.consume(topic, group, 3)
    assert values == [b"a", b"b", b"c"]
    consumer = alice.consumer(group)
    consumer.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
    assert consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset == 3
    consumer.close()


def test_list_and_describe_groups_show_only_describable_groups(admin: As, alice: As) -> None:
    topic = new_topic(admin, "lg")
    mine, theirs = unique("lg-mine"), unique("lg-theirs")
    for group in (mine, theirs):
        consumer = admin.consumer(group)
        consumer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
        consumer.close()
    grant(admin, acl(GROUP, mine, Op.DESCRIBE))
    listed = {g.group_id for g in alice.admin().list_consumer_groups().result(15).valid}
    assert mine in listed and theirs not in listed
    everyone = {g.group_id for g in admin.admin().list_consumer_groups().result(15).valid}
    assert {mine, theirs} <= everyone
    described = alice.admin().describe_consumer_groups([theirs])[theirs]
    assert error_of(described) == "GROUP_AUTHORIZATION_FAILED"
    assert alice.admin().describe_consumer_groups([mine])[mine].result(15).group_id == mine
    assert error_of(alice.admin().delete_consumer_groups([mine])[mine]) == "GROUP_AUTHORIZATION_FAILED"
    grant(admin, acl(GROUP, mine, Op.DELETE))
    alice.admin().delete_consumer_groups([mine])[mine].result(15)


def test_transactions_denied_then_allowed(admin: As, alice: As) -> None:
    topic = new_topic(admin, "txn")
    txn_id = unique("txn-id")
    producer = alice.producer(**{"transactional.id": txn_id})
    with pytest.raises(KafkaException) as info:
        producer.init_transactions(15)
    assert info.value.args[0].name() == "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"
    grant(admin, acl(TXN, txn_id, Op.WRITE), acl(TOPIC, topic, Op.WRITE))
    producer = alice.producer(**{"transactional.id": txn_id})
    producer.init_transactions(15)
    producer.begin_transaction()
    producer.produce(topic, b"committed")
    producer.commit_transaction(15)
    values, _ = admin.consume(topic, unique("check"), 1)
    assert values == [b"committed"]
    # offsets sent to the transaction need READ on the group (AddOffsetsToTxn, TxnOffsetCommit)
    group = unique("txn-grp")
    metadata = alice.consumer(group).consumer_group_metadata()
    producer.begin_transaction()
    producer.produce(topic, b"with offsets")
    with pytest.raises(KafkaException) as info:
        producer.send_offsets_to_transaction([TopicPartition(topic, 0, 1)], metadata, 15)
    assert info.value.args[0].name() == "GROUP_AUTHORIZATION_FAILED"
    producer.abort_transaction(15)
    grant(admin, acl(GROUP, group, Op.READ), acl(TOPIC, topic, Op.READ))
    producer.begin_transaction()
    producer.produce(topic, b"with offsets")
    producer.send_offsets_to_transaction([TopicPartition(topic, 0, 1)], metadata, 15)
    producer.commit_transaction(15)
    committed = admin.consumer(group).committed([TopicPartition(topic, 0)], timeout=10)
    assert committed[0].offset == 1


def test_idempotent_producer_needs_idempotent_write_or_a_topic_write(admin: As, bob: As) -> None:
    topic = new_topic(admin, "idem")
    grant(admin, acl(TOPIC, topic, Op.DESCRIBE, "User:bob"))
    producer = bob.producer(**{"enable.idempotence": True})
    producer.produce(topic, b"x")
    with pytest.raises(KafkaException) as info:  # librdkafka: a fatal error
        producer.flush(10)
    assert info.value.args[0].name() == "CLUSTER_AUTHORIZATION_FAILED"
    grant(admin, acl(TOPIC, topic, Op.WRITE, "User:bob"))  # KIP-679: WRITE on a topic is enough
    delivered: list[Any] = []
    producer = bob.producer(**{"enable.idempotence": True})
    producer.produce(topic, b"y", on_delivery=lambda err, _m: delivered.append(err))
    producer.flush(15)
    assert delivered == [None]


# -- topics and configs ---------------------------------------------------------------


def test_topic_admin_and_configs_denied_then_allowed(admin: As, alice: As) -> None:
    client = alice.admin()
    prefix = unique("adm") + "-"
    name = prefix + "orders"
    assert error_of(client.create_topics([NewTopic(name, 1, 1)])[name]) == "TOPIC_AUTHORIZATION_FAILED"
    grant(admin, acl(TOPIC, prefix, Op.CREATE, pattern=PREFIXED))
    client.create_topics([NewTopic(name, 1, 1)])[name].result(15)

    resource = ConfigResource("topic", name)
    assert error_of(client.describe_configs([resource])[resource]) == "TOPIC_AUTHORIZATION_FAILED"
    change = ConfigResource("topic", name, incremental_configs=[
        ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)])
    assert error_of(client.incremental_alter_configs([change])[change]) == "TOPIC_AUTHORIZATION_FAILED"
    grant(admin, acl(TOPIC, prefix, Op.ALTER_CONFIGS, pattern=PREFIXED))  # implies DESCRIBE_CONFIGS
    client.incremental_alter_configs([change])[change].result(15)
    described = client.describe_configs([resource])[resource].result(15)
    assert described["retention.ms"].value == "3600000"

    assert error_of(client.create_partitions([NewPartitions(name, 2)])[name]) == "TOPIC_AUTHORIZATION_FAILED"
    assert error_of(client.delete_topics([name])[name]) == "TOPIC_AUTHORIZATION_FAILED"
    grant(admin, acl(TOPIC, prefix, Op.ALTER, pattern=PREFIXED), acl(TOPIC, prefix, Op.DELETE, pattern=PREFIXED))
    client.create_partitions([NewPartitions(name, 2)])[name].result(15)
    client.delete_topics([name])[name].result(15)
    broker_config = ConfigResource("broker", "0")
    assert error_of(client.describe_configs([broker_config])[broker_config]) == "CLUSTER_AUTHORIZATION_FAILED"


def test_metadata_hides_topics_the_principal_may_not_describe(admin: As, alice: As) -> None:
    hidden, visible = new_topic(admin, "hidden"), new_topic(admin, "visible")
    grant(admin, acl(TOPIC, visible, Op.DESCRIBE))
    topics = alice.admin().list_topics(timeout=15).topics
    assert visible in topics and hidden not in topics
    answer = alice.admin().list_topics(hidden, timeout=15).topics[hidden]
    assert answer.error is not None and answer.error.name() == "TOPIC_AUTHORIZATION_FAILED"
    # auto-creation needs CREATE too (on the cluster or the topic)
    auto = unique("auto")
    grant(admin, acl(TOPIC, auto, Op.WRITE))
    assert alice.produce(auto, b"x") == ["TOPIC_AUTHORIZATION_FAILED"]
    assert auto not in admin.admin().list_topics(timeout=15).topics
    grant(admin, acl(TOPIC, auto, Op.CREATE))
    assert alice.produce(auto, b"x") == [None]


def test_partition_apis_answer_kafkas_errors(admin: As, secured: BrokerProcess, certs: DevCertificates) -> None:
    topic = new_topic(admin, "raw")
    assert admin.produce(topic, b"x") == [None]

    def ask(who: str = "alice") -> dict[str, Any]:
        return {
            "list_offsets": call(secured, certs, who, 2, 6, replica_id=-1, isolation_level=0, topics=[
                {"name": topic, "partitions": [{"partition_index": 0, "timestamp": -1}]}]
            ).topics[0].partitions[0].error_code,
            "epoch": call(secured, certs, who, 23, 4, replica_id=-1, topics=[
                {"topic": topic, "partitions": [{"partition": 0, "leader_epoch": 0}]}]
            ).topics[0].partitions[0].error_code,
            "delete_records": call(secured, certs, who, 21, 2, timeout=5000, topics=[
                {"name": topic, "partitions": [{"partition_index": 0, "offset": 0}]}]
            ).topics[0].partitions[0].error_code,
            "producers": call(secured, certs, who, 61, 0, topics=[{"name": topic, "partition_indexes": [0]}]
                              ).topics[0].partitions[0].error_code,
        }

    assert ask() == {"list_offsets": E.topic_authorization_failed, "epoch": E.topic_authorization_failed,
                     "delete_records": E.topic_authorization_failed, "producers": E.topic_authorization_failed}
    grant(admin, acl(TOPIC, topic, Op.DESCRIBE))
    assert ask() == {"list_offsets": E.none, "epoch": E.none, "delete_records": E.topic_authorization_failed,
                     "producers": E.topic_authorization_failed}
    assert ask("admin") == dict.fromkeys(ask("admin"), E.none)

    markers = call(secured, certs, "alice", 27, 1, markers=[
        {"producer_id": 1, "producer_epoch": 0, "transaction_result": True, "coordinator_epoch": 0,
         "topics": [{"name": topic, "partition_indexes": [0]}]}])
    assert markers.markers[0].topics[0].partitions[0].error_code == E.cluster_authorization_failed
    txn_id = unique("raw-txn")
    described = call(secured, certs, "alice", 65, 0, transactional_ids=[txn_id])
    assert described.transaction_states[0].error_code == E.transactional_id_authorization_failed
    init = call(secured, certs, "alice", 22, 4, transactional_id=txn_id, transaction_timeout=60000)
    assert init.error_code == E.transactional_id_authorization_failed

    cluster = call(secured, certs, "alice", 60, 1, include_cluster_authorized_operations=True)
    assert cluster.error_code == E.none and cluster.cluster_authorized_operations == 0
    everything = call(secured, certs, "admin", 60, 1, include_cluster_authorized_operations=True)
    assert everything.cluster_authorized_operations & (1 << Op.ALTER.value)

    # Metadata v12: an undescribable topic named by id keeps its name secret; KIP-430 bits
    hidden = new_topic(admin, "raw-hidden")
    hidden_id = call(secured, certs, "admin", 3, 12, allow_auto_topic_creation=False,
                     include_topic_authorized_operations=False,
                     topics=[{"topic_id": None, "name": hidden}]).topics[0].topic_id
    assert isinstance(hidden_id, uuid.UUID) and hidden_id.int != 0
    by_id = call(secured, certs, "alice", 3, 12, allow_auto_topic_creation=False,
                 include_topic_authorized_operations=True,
                 topics=[{"topic_id": hidden_id, "name": None}, {"topic_id": None, "name": topic}])
    denied, described_topic = by_id.topics
    assert denied.error_code == E.topic_authorization_failed and denied.name is None
    assert denied.topic_id == hidden_id
    assert described_topic.error_code == E.none
    assert described_topic.topic_authorized_operations == 1 << Op.DESCRIBE.value


# -- patterns, DENY, wildcards, super users -------------------------------------------


def test_deny_wins_over_allow(admin: As, alice: As) -> None:
    prefix = unique("deny") + "-"
    topic = new_topic(admin, prefix)
    grant(admin, acl(TOPIC, prefix, Op.ALL, pattern=PREFIXED),
          acl(TOPIC, topic, Op.WRITE, permission=DENY))
    assert alice.produce(topic, b"x") == ["TOPIC_AUTHORIZATION_FAILED"]
    assert topic in alice.admin().list_topics(timeout=15).topics  # a DENY of WRITE leaves DESCRIBE
    grant(admin, acl(TOPIC, topic, Op.ALL, permission=DENY, host="127.0.0.1"))
    assert topic not in alice.admin().list_topics(timeout=15).topics


def test_wildcard_principal_and_wildcard_resource(admin: As, bob: As, secured: BrokerProcess,
                                                  certs: DevCertificates) -> None:
    shared, other = new_topic(admin, "shared"), new_topic(admin, "other")
    grant(admin, acl(TOPIC, shared, Op.WRITE, "User:*"))
    assert bob.produce(shared, b"anyone") == [None]
    assert bob.produce(other, b"no") == ["TOPIC_AUTHORIZATION_FAILED"]
    carol = As(secured, certs, "carol")
    grant(admin, acl(TOPIC, "*", Op.DESCRIBE, "User:carol"))
    assert {shared, other} <= set(carol.admin().list_topics(timeout=15).topics)
    assert carol.produce(other, b"no") == ["TOPIC_AUTHORIZATION_FAILED"]


def test_super_users_bypass_acls(admin: As, alice: As) -> None:
    topic = new_topic(admin, "super")
    grant(admin, acl(TOPIC, topic, Op.ALL, "User:*", permission=DENY))
    assert admin.produce(topic, b"admin") == [None]
    assert admin.consume(topic, unique("super-grp"), 1)[0] == [b"admin"]
    assert alice.produce(topic, b"alice") == ["TOPIC_AUTHORIZATION_FAILED"]


def test_an_authorised_principal_is_unaffected_by_another_ones_denial(admin: As, alice: As, bob: As) -> None:
    topic = new_topic(admin, "mixed")
    grant(admin, acl(TOPIC, topic, Op.WRITE))
    delivered: list[Any] = []
    good = alice.producer()
    bad = bob.producer()
    refused: list[Any] = []
    for i in range(200):
        good.produce(topic, b"%d" % i, on_delivery=lambda err, _m: delivered.append(err))
        if i % 20 == 0:
            try:
                bad.produce(topic, b"bob", on_delivery=lambda err, _m: refused.append(err.name() if err else None))
            except KafkaException as exc:
                refused.append(exc.args[0].name())
        good.poll(0)
        bad.poll(0)
    good.flush(15)
    bad.flush(15)
    assert delivered == [None] * 200
    assert refused and set(refused) == {"TOPIC_AUTHORIZATION_FAILED"}
    values, _ = admin.consume(topic, unique("check"), 200)
    assert values == [b"%d" % i for i in range(200)]


# -- durability (last: restarts the module's broker) --------------------------------------


def test_acls_survive_a_broker_restart(admin: As, alice: As, secured: BrokerProcess) -> None:
    topic = new_topic(admin, "durable")
    binding = acl(TOPIC, topic, Op.WRITE)
    grant(admin, binding)
    secured.restart()
    mine = AclBindingFilter(TOPIC, topic, ANY_PATTERN, None, None, Op.ANY, AclPermissionType.ANY)
    assert admin.admin().describe_acls(mine).result(15) == [binding]
    assert alice.produce(topic, b"after restart") == [None]
    assert (secured.data_dir / "acls.json").exists()


# -- cluster mode: ACLs in ZooKeeper reach every broker -----------------------------------


def test_acls_reach_every_broker_of_a_zookeeper_cluster(zookeeper: ZooKeeper, tmp_path: Path,
                                                        certs: DevCertificates) -> None:
    """Two brokers replicating over PLAINTEXT (so User:ANONYMOUS is a super user, as Kafka asks
    of a plaintext inter-broker listener), clients on mTLS listeners; an ACL created through
    one broker is enforced and described by the other, in Kafka's /kafka-acl layout."""
    from cluster_fixtures import FAST_ENV, ClusterBroker
    from kazoo.client import KazooClient

    chroot = f"acls-{time.time_ns()}"
    brokers: list[ClusterBroker] = []
    ssl_of: dict[int, SimpleNamespace] = {}
    for i in range(2):
        b = ClusterBroker(i, tmp_path / f"broker-{i}", zookeeper.connect(chroot), {})
        ssl_port = free_port()
        ssl_of[i] = SimpleNamespace(bootstrap=f"127.0.0.1:{ssl_port}")
        b.env = {**FAST_ENV,
                 "ODRADEK_LISTENERS": f"PLAINTEXT://127.0.0.1:{b.port},SSL://127.0.0.1:{ssl_port}",
                 "ODRADEK_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
                 "ODRADEK_SSL_KEYSTORE_LOCATION": str(certs.keystore),
                 "ODRADEK_SSL_TRUSTSTORE_LOCATION": str(certs.truststore),
                 "ODRADEK_SSL_CLIENT_AUTH": "required",
                 "ODRADEK_SSL_PRINCIPAL_MAPPING_RULES": "RULE:^CN=(.*?)(,.*)?$/$1/,DEFAULT",
                 "ODRADEK_AUTHORIZER_CLASS_NAME": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                 "ODRADEK_SUPER_USERS": "User:admin;User:ANONYMOUS"}
        brokers.append(b)
    try:
        for b in brokers:
            b.start()
        admin0, alice1 = As(ssl_of[0], certs, "admin"), As(ssl_of[1], certs, "alice")
        deadline = time.monotonic() + 60
        while len(admin0.admin().list_topics(timeout=10).brokers) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        topic = unique("zk-acl")
        admin0.admin().create_topics([NewTopic(topic, 1, 2)])[topic].result(60)
        assert alice1.produce(topic, b"no") == ["TOPIC_AUTHORIZATION_FAILED"]
        grant(admin0, acl(TOPIC, topic, Op.WRITE))

        def described_by(i: int) -> Any:
            return call(ssl_of[i], certs, "admin", 29, 3, **{**EVERYTHING, "resource_type_filter": 2,
                                                               "resource_name_filter": topic})

        wait_until = time.monotonic() + 60
        while not described_by(1).resources and time.monotonic() < wait_until:
            time.sleep(0.05)
        resource = described_by(1).resources[0]
        assert (resource.resource_name, resource.acls[0].principal, resource.acls[0].operation) == (
            topic, "User:alice", Op.WRITE.value)
        assert alice1.produce(topic, b"yes") == [None]

        zk = KazooClient(hosts=zookeeper.connect(chroot))
        zk.start(timeout=10)
        try:
            raw, _ = zk.get(f"/kafka-acl/Topic/{topic}")
            assert json.loads(raw) == {"version": 1, "acls": [
                {"principal": "User:alice", "permissionType": "Allow", "operation": "Write", "host": "*"}]}
            assert zk.get_children("/kafka-acl-changes")
        finally:
            zk.stop()

        # deleted through broker 1, gone from broker 0
        gone = call(ssl_of[1], certs, "admin", 31, 3, filters=[
            {**EVERYTHING, "resource_type_filter": 2, "resource_name_filter": topic}])
        assert len(gone.filter_results[0].matching_acls) == 1
        wait_until = time.monotonic() + 10
        while described_by(0).resources and time.monotonic() < wait_until:
            time.sleep(0.05)
        assert described_by(0).resources == ()
        assert As(ssl_of[0], certs, "alice").produce(topic, b"no") == ["TOPIC_AUTHORIZATION_FAILED"]
    finally:
        for b in brokers:
            b.kill()
