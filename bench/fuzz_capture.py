"""Record the request frames of real client sessions: the network fuzzer's corpus.

A recording TCP proxy (asyncio, 127.0.0.1) sits between real clients and a fresh
`odradek serve` (free port, temporary data dir) that advertises the proxy's address,
so every connection a client opens - bootstrap, partition leader, group and
transaction coordinator - goes through it. Each client connection is one session:
its request frames (without the 4-byte size prefix), in order.

The clients cover every API odradek speaks: confluent-kafka (librdkafka) producers
(plain with each codec, idempotent, transactional commit and abort), consumers (a
group with commits and leave, read_committed, assign + offsets_for_times), its
AdminClient (topics, partitions, configs, records, groups, cluster, ACLs, SCRAM
credentials), SASL logins (PLAIN, SCRAM-SHA-256/512) through a second proxy in front of
a SASL_PLAINTEXT listener (those sessions are marked "listener": "sasl"), and kafka-python 3
(its own request versions, plus DescribeProducers, ListTransactions,
DescribeTransactions, OffsetDelete and WriteTxnMarkers through abort_transaction).
A few versions no client sends here are built with kio (session label "kio-...").

    .venv/bin/python bench/fuzz_capture.py [--out bench/fuzz_corpus/sessions.json]

The corpus is JSON: {"sessions": [{"label": "...", "frames": ["<hex>", ...]}, ...]}.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from produce_consume import free_port, stop, wait_port

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "fuzz_corpus" / "sessions.json"
MAX_FRAMES_PER_SESSION = 60
SASL_APIS = (17, 36)  # SaslHandshake, SaslAuthenticate: sent to the SASL listener  # a consumer's fetch loop repeats itself; its first minute is enough


# A second listener speaks SASL (PLAIN users from this JAAS line, SCRAM users made by the
# capture's AdminClient); bench/net_fuzz.py starts its broker with the same settings.
SASL_USERS = {"admin": "fz-admin-secret", "alice": "fz-alice-secret"}
JAAS = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
        + " ".join(f'user_{u}="{p}"' for u, p in SASL_USERS.items()) + ";")


def broker_properties(plain_port: int, sasl_port: int, advertised: tuple[int, int] | None = None,
                      authorizer: bool = False) -> str:
    """server.properties: PLAINTEXT and SASL_PLAINTEXT listeners (advertised as other ports: a proxy's)."""
    props = {
        "listeners": f"PLAINTEXT://127.0.0.1:{plain_port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        "sasl.jaas.config": JAAS,
    }
    if advertised is not None:
        props["advertised.listeners"] = (f"PLAINTEXT://127.0.0.1:{advertised[0]},"
                                         f"SASL_PLAINTEXT://127.0.0.1:{advertised[1]}")
    if authorizer:  # the ACL APIs then work as with a secured Kafka; no ACL on a resource lets everyone in
        props["authorizer.class.name"] = "kafka.security.authorizer.AclAuthorizer"
        props["allow.everyone.if.no.acl.found"] = "true"
        props["super.users"] = "User:admin"
    return "".join(f"{k}={v}\n" for k, v in props.items())


class RecordingProxy:
    """127.0.0.1:port -> the broker; keeps each connection's request frames under the current label."""

    def __init__(self, upstream_port: int, listener: str = "") -> None:
        self.upstream_port = upstream_port
        self.listener = listener
        self.port = free_port()
        self.label = "start"
        self.sessions: list[dict[str, object]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RecordingProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames: list[bytes] = []
        self.sessions.append({"label": self.label, "frames": frames, "listener": self.listener})
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return

        async def client_to_broker() -> None:
            buf = b""
            try:
                while data := await reader.read(65536):
                    up_writer.write(data)
                    buf += data
                    while len(buf) >= 4:
                        (size,) = struct.unpack_from(">i", buf)
                        if len(buf) < 4 + size:
                            break
                        frames.append(buf[4:4 + size])
                        buf = buf[4 + size:]
                    await up_writer.drain()
            except ConnectionError:
                pass  # the client or the broker hung up: the session ends here
            up_writer.close()

        async def broker_to_client() -> None:
            try:
                while data := await up_reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except ConnectionError:
                pass
            writer.close()

        await asyncio.gather(client_to_broker(), broker_to_client(), return_exceptions=True)


# -- the client sessions ------------------------------------------------------------

def ck_admin(bootstrap: str) -> None:
    from confluent_kafka import ConsumerGroupTopicPartitions, IsolationLevel, TopicPartition
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewPartitions,
        NewTopic,
        OffsetSpec,
    )

    a = AdminClient({"bootstrap.servers": bootstrap})
    wait_all(a.create_topics([NewTopic("fz-admin", 2, 1, config={"retention.ms": "3600000"}),
                              NewTopic("fz-compact", 1, 1, config={"cleanup.policy": "compact"}),
                              NewTopic("fz-doomed", 1, 1)], operation_timeout=10))
    wait_all(a.create_topics([NewTopic("fz-admin", 1, 1)], validate_only=True))  # TOPIC_ALREADY_EXISTS
    a.list_topics(timeout=10)
    a.list_topics("fz-admin", timeout=10)
    wait_all(a.describe_cluster(include_authorized_operations=True))
    wait_all(a.describe_configs([ConfigResource("topic", "fz-admin"), ConfigResource("broker", "0")]))
    wait_all(a.alter_configs([ConfigResource("topic", "fz-admin", set_config={"retention.ms": "7200000"})]))
    wait_all(a.incremental_alter_configs([ConfigResource(
        "topic", "fz-admin", incremental_configs=[
            ConfigEntry("segment.ms", "600000", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)])]))
    wait_all(a.create_partitions([NewPartitions("fz-admin", 3)]))
    produce(bootstrap, "fz-admin", 30, {})
    wait_all(a.list_offsets({TopicPartition("fz-admin", 0): OffsetSpec.latest(),
                             TopicPartition("fz-admin", 1): OffsetSpec.earliest(),
                             TopicPartition("fz-admin", 2): OffsetSpec.max_timestamp()},
                            isolation_level=IsolationLevel.READ_COMMITTED))
    wait_all(a.delete_records([TopicPartition("fz-admin", 0, 2)]))
    wait_all(a.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(
        "fz-admin-group", [TopicPartition("fz-admin", 0, 1), TopicPartition("fz-admin", 1, 0)])]))
    wait_all(a.list_consumer_group_offsets([ConsumerGroupTopicPartitions("fz-admin-group")]))
    a.list_consumer_groups().result(10)
    wait_all(a.describe_consumer_groups(["fz-admin-group"]))
    wait_all(a.describe_topics(__import__("confluent_kafka").TopicCollection(["fz-admin"])))
    wait_all(a.delete_consumer_groups(["fz-admin-group"]))
    wait_all(a.delete_topics(["fz-doomed"], operation_timeout=10))


def ck_acls_and_scram(bootstrap: str) -> None:
    from confluent_kafka.admin import (
        AclBinding,
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialDeletion,
        UserScramCredentialUpsertion,
    )

    a = AdminClient({"bootstrap.servers": bootstrap})
    wait_all(a.create_acls([
        AclBinding(ResourceType.TOPIC, "fz-acl", ResourcePatternType.LITERAL, "User:alice", "*",
                   AclOperation.READ, AclPermissionType.ALLOW),
        AclBinding(ResourceType.GROUP, "fz-acl-", ResourcePatternType.PREFIXED, "User:alice", "127.0.0.1",
                   AclOperation.ALL, AclPermissionType.ALLOW),
        AclBinding(ResourceType.TOPIC, "fz-acl", ResourcePatternType.LITERAL, "User:mallory", "*",
                   AclOperation.WRITE, AclPermissionType.DENY),
        AclBinding(ResourceType.TRANSACTIONAL_ID, "fz-acl-txn", ResourcePatternType.LITERAL, "User:alice", "*",
                   AclOperation.WRITE, AclPermissionType.ALLOW)]))
    any_acl = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                               AclOperation.ANY, AclPermissionType.ANY)
    wait_all(a.describe_acls(any_acl))
    wait_all(a.describe_acls(AclBindingFilter(ResourceType.TOPIC, "fz-acl", ResourcePatternType.MATCH, "User:alice",
                                              None, AclOperation.ANY, AclPermissionType.ALLOW)))
    wait_all(a.delete_acls([AclBindingFilter(ResourceType.TOPIC, "fz-acl", ResourcePatternType.LITERAL,
                                             "User:mallory", None, AclOperation.ANY, AclPermissionType.ANY)]))
    wait_all(a.alter_user_scram_credentials([
        UserScramCredentialUpsertion("alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096),
                                     SASL_USERS["alice"].encode()),
        UserScramCredentialUpsertion("alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                                     SASL_USERS["alice"].encode(), b"fz-salt-0123456789"),
        UserScramCredentialUpsertion("bob", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), b"bob-pw"),
        UserScramCredentialDeletion("carol", ScramMechanism.SCRAM_SHA_256)]))
    wait_all(a.describe_user_scram_credentials())
    wait_all(a.describe_user_scram_credentials(["alice", "nobody"]))


def ck_sasl(bootstrap: str) -> None:
    """Logins over the SASL_PLAINTEXT listener (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), then ordinary requests."""
    from confluent_kafka import Consumer, Producer

    for mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        auth = {"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": mechanism,
                "sasl.username": "alice", "sasl.password": SASL_USERS["alice"]}
        p = Producer({**auth, "linger.ms": 5})
        for i in range(5):
            p.produce("fz-sasl", key=b"k", value=f"{mechanism}-{i}".encode())
        p.flush(15)
        c = Consumer({**auth, "group.id": "fz-sasl-group", "auto.offset.reset": "earliest"})
        c.subscribe(["fz-sasl"])
        deadline, got = time.monotonic() + 8, 0
        while got < 5 and time.monotonic() < deadline:
            got += len([m for m in c.consume(10, 0.5) if m.error() is None])
        c.close()
    wrong = Producer({"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                      "sasl.username": "alice", "sasl.password": "wrong", "message.timeout.ms": 3000})
    wrong.produce("fz-sasl", value=b"refused")
    wrong.flush(5)


def wait_all(futures: object) -> None:
    items = futures.values() if isinstance(futures, dict) else [futures]
    for f in items:
        try:
            f.result(15)
        except Exception as exc:  # noqa: BLE001 - any error answer (KafkaException, ...) is still a captured session
            print(f"  (answer: {exc})", file=sys.stderr)


def produce(bootstrap: str, topic: str, n: int, conf: dict[str, object], keyed: bool = True) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **conf})
    for i in range(n):
        p.produce(topic, key=f"k{i % 7}".encode() if keyed else None, value=f"value-{i}".encode(),
                  headers=[("h", b"x")] if i % 3 == 0 else None)
        if i % 10 == 9:
            p.flush(10)
    p.flush(15)


def ck_producers(bootstrap: str) -> None:
    produce(bootstrap, "fz-plain", 20, {"acks": "all"})
    produce(bootstrap, "fz-plain", 10, {"acks": "1", "compression.type": "gzip", "batch.num.messages": 5})
    for codec in ("snappy", "lz4", "zstd"):
        produce(bootstrap, "fz-plain", 10, {"acks": "all", "compression.type": codec})
    produce(bootstrap, "fz-plain", 5, {"acks": "0"}, keyed=False)
    produce(bootstrap, "fz-compact", 20, {"acks": "all"})


def ck_idempotent(bootstrap: str) -> None:
    produce(bootstrap, "fz-idem", 40, {"enable.idempotence": True, "max.in.flight.requests.per.connection": 5})


def ck_transactions(bootstrap: str) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition

    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": "fz-txn-1", "linger.ms": 5})
    p.init_transactions(15)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "fz-txn-group", "auto.offset.reset": "earliest"})
    for commit in (True, False, True):
        p.begin_transaction()
        for i in range(10):
            p.produce("fz-txn", key=b"k", value=f"t{i}".encode())
        p.flush(10)
        p.send_offsets_to_transaction([TopicPartition("fz-plain", 0, 5)], c.consumer_group_metadata(), 15)
        if commit:
            p.commit_transaction(15)
        else:
            p.abort_transaction(15)
    c.close()


def consume(bootstrap: str, topic: str, n: int, conf: dict[str, object], seconds: float = 15) -> None:
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "auto.offset.reset": "earliest",
                  "group.id": "fz-group", **conf})
    c.subscribe([topic])
    got, deadline = 0, time.monotonic() + seconds
    while got < n and time.monotonic() < deadline:
        msgs = c.consume(100, 0.5)
        got += sum(1 for m in msgs if m.error() is None)
        if msgs:
            c.commit(asynchronous=False)
    c.close()


def ck_consumers(bootstrap: str) -> None:
    from confluent_kafka import Consumer, TopicPartition

    consume(bootstrap, "fz-plain", 60, {"enable.auto.commit": False})
    consume(bootstrap, "fz-txn", 20, {"group.id": "fz-rc-group", "isolation.level": "read_committed"})
    consume(bootstrap, "fz-idem", 40, {"group.id": "fz-coop", "partition.assignment.strategy": "cooperative-sticky",
                                       "group.instance.id": "fz-static-1"})
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "fz-assign", "enable.auto.commit": False})
    c.assign([TopicPartition("fz-plain", 0, 3)])
    c.consume(10, 2)
    c.offsets_for_times([TopicPartition("fz-plain", 0, 1_000)], 10)
    c.get_watermark_offsets(TopicPartition("fz-plain", 0), 10)
    c.committed([TopicPartition("fz-plain", 0)], 10)
    c.close()


def kp_clients(bootstrap: str) -> None:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import AbortTransactionSpec

    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    for i in range(20):
        p.send("fz-kp", key=b"k", value=f"kp{i}".encode(), headers=[("h", b"1")])
    p.flush(15)
    p.close(5)
    tp = KafkaProducer(bootstrap_servers=bootstrap, transactional_id="fz-kp-txn")
    tp.init_transactions()
    tp.begin_transaction()
    tp.send("fz-kp", value=b"in-txn")
    tp.flush(10)
    tp.commit_transaction()
    tp.begin_transaction()
    tp.send("fz-kp", value=b"open")
    tp.flush(10)

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    for call in (lambda: admin.list_transactions(),
                 lambda: admin.describe_transactions(["fz-kp-txn", "fz-txn-1"]),
                 lambda: admin.describe_producers([TopicPartition("fz-kp", 0)])):
        attempt(call)
    producers = attempt(lambda: admin.describe_producers([TopicPartition("fz-kp", 0)])) or {}
    for state in producers.get(TopicPartition("fz-kp", 0), ()) or ():
        pid = getattr(state, "producer_id", None)
        epoch = getattr(state, "producer_epoch", None)
        if pid is not None and epoch is not None:
            spec = AbortTransactionSpec(TopicPartition("fz-kp", 0), pid, epoch)
            attempt(lambda spec=spec: admin.abort_transaction(spec))
    tp.close(1)

    c = KafkaConsumer("fz-kp", bootstrap_servers=bootstrap, group_id="fz-kp-group", auto_offset_reset="earliest",
                      enable_auto_commit=False, consumer_timeout_ms=3000, isolation_level="read_committed")
    for n, _ in enumerate(c):
        if n >= 15:
            break
    c.commit()
    c.close()
    for call in (lambda: admin.list_groups(),
                 lambda: admin.describe_groups(["fz-kp-group"]),
                 lambda: admin.list_group_offsets("fz-kp-group"),
                 lambda: admin.delete_group_offsets("fz-kp-group", [TopicPartition("fz-kp", 0)]),
                 lambda: admin.list_partition_offsets({TopicPartition("fz-kp", 0): -1}),
                 lambda: admin.delete_records({TopicPartition("fz-kp", 0): 1}),
                 lambda: admin.describe_cluster(),
                 lambda: admin.describe_configs([__import__("kafka.admin", fromlist=["ConfigResource"])
                                                 .ConfigResource("TOPIC", "fz-kp")]),
                 lambda: admin.delete_groups(["fz-kp-group"])):
        attempt(call)
    admin.close()


def attempt(call: Callable[[], object]) -> object:
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - any error answer (kafka.errors.*) is still a captured session
        print(f"  (answer: {type(exc).__name__}: {exc})", file=sys.stderr)
        return None


def kio_versions(bootstrap: str) -> None:
    """Versions no client above sends: built with kio, one connection each."""

    from odradek.protocol.build import build
    from odradek.protocol.framing import encode_request, request_type

    def send(api_key: int, version: int, **values: object) -> None:
        send_frame(bootstrap, encode_request(api_key, version, 1, build(request_type(api_key, version), **values)))

    for v in range(4):
        send(18, v, **({"client_software_name": "fz", "client_software_version": "1"} if v >= 3 else {}))
    send(17, 1, mechanism="PLAIN")
    send(36, 2, auth_bytes=b"\0alice\0" + SASL_USERS["alice"].encode())
    for v in (0, 4, 9, 12):
        topics = [{"name": "fz-plain", "topic_id": uuid.UUID(int=0)} if v >= 10 else {"name": "fz-plain"}]
        send(3, v, topics=topics, allow_auto_topic_creation=False, include_topic_authorized_operations=True,
             include_cluster_authorized_operations=True)
    send(23, 4, replica_id=-1, topics=[{"topic": "fz-plain", "partitions": [
        {"partition": 0, "current_leader_epoch": 0, "leader_epoch": 0}]}])
    send(10, 0, key="fz-group")
    send(10, 4, key_type=1, coordinator_keys=["fz-txn-1"])
    send(27, 1, markers=[{"producer_id": 0, "producer_epoch": 0, "transaction_result": False,
                          "topics": [{"name": "fz-txn", "partition_indexes": [0]}], "coordinator_epoch": -1}])
    send(47, 0, group_id="fz-group", topics=[{"name": "fz-plain", "partitions": [{"partition_index": 0}]}])
    send(61, 0, topics=[{"name": "fz-txn", "partition_indexes": [0]}])
    send(66, 1, state_filters=["Ongoing"], producer_id_filters=[], duration_filter=-1)
    send(65, 0, transactional_ids=["fz-txn-1"])
    send(60, 1, include_cluster_authorized_operations=False, endpoint_type=1)
    send(42, 2, groups_names=["fz-nothing"])


def send_frame(bootstrap: str, frame: bytes) -> None:
    """One request on its own connection; waits for the answer (or the broker closing)."""
    import socket

    host, port = bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(frame)
        try:
            s.recv(65536)
        except OSError:
            pass


def as_values(value: object) -> object:
    """A kio entity as the plain values `build` takes."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_values(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [as_values(v) for v in value]
    return value


def transcoded(sessions: list[dict[str, object]]) -> list[bytes]:
    """Every version odradek speaks that no client sent: the largest captured request of
    the same API decoded and built again in that version (fields it lacks get defaults)."""
    from odradek.protocol.build import build
    from odradek.protocol.framing import FrameError, decode_request, encode_request, request_type
    from odradek.server.handlers import ROUTES

    by_api: dict[int, list[bytes]] = {}
    for s in sessions:
        for f in s["frames"]:  # type: ignore[attr-defined]
            by_api.setdefault(api_label(f)[0], []).append(f)
    out = []
    for key, route in sorted(ROUTES.items()):
        captured = by_api.get(key, [])
        have = {api_label(f)[1] for f in captured}
        for frame in sorted(captured, key=len, reverse=True):
            try:
                _, body = decode_request(frame)
                break
            except FrameError:  # a version odradek cannot read: try the next
                continue
        else:
            continue
        values = as_values(body)
        for version in range(route.min_version, route.max_version + 1):
            if version not in have:
                out.append(encode_request(key, version, 1, build(request_type(key, version), values))[4:])
    return out


SCENARIOS: list[tuple[str, Callable[[str], None]]] = [
    ("ck-admin", ck_admin),
    ("ck-acls-scram", ck_acls_and_scram),
    ("ck-sasl", ck_sasl),  # on the SASL_PLAINTEXT listener
    ("ck-producer", ck_producers),
    ("ck-idempotent", ck_idempotent),
    ("ck-transactions", ck_transactions),
    ("ck-consumer", ck_consumers),
    ("kafka-python", kp_clients),
    ("kio-versions", kio_versions),
]


def api_label(frame: bytes) -> tuple[int, int]:
    key, version = struct.unpack_from(">hh", frame)
    return key, version


def capture() -> list[dict[str, object]]:
    plain_port, sasl_port = free_port(), free_port()
    proxy = RecordingProxy(plain_port).start()
    sasl_proxy = RecordingProxy(sasl_port, "sasl").start()
    with tempfile.TemporaryDirectory(prefix="odradek-capture-") as tmp:
        props = Path(tmp) / "server.properties"
        props.write_text(broker_properties(plain_port, sasl_port, (proxy.port, sasl_proxy.port), authorizer=True))
        cmd = [str(ROOT / ".venv" / "bin" / "odradek"), "serve", "--config", str(props),
               "--data-dir", str(Path(tmp) / "data")]
        with open(Path(tmp) / "broker.log", "wb") as log:  # the broker keeps its own descriptor
            broker = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                      env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            wait_port(plain_port)
            wait_port(sasl_port)
            for label, scenario in SCENARIOS:
                target = sasl_proxy if scenario is ck_sasl else proxy
                target.label = label
                t0 = time.monotonic()
                scenario(f"127.0.0.1:{target.port}")
                print(f"{label}: {time.monotonic() - t0:.1f} s", file=sys.stderr)
            proxy.label = sasl_proxy.label = "kio-transcoded"
            for frame in transcoded(list(proxy.sessions) + list(sasl_proxy.sessions)):
                target = sasl_proxy if api_label(frame)[0] in SASL_APIS else proxy
                send_frame(f"127.0.0.1:{target.port}", struct.pack(">i", len(frame)) + frame)
            time.sleep(0.5)
        finally:
            stop(broker)
            proxy.stop()
            sasl_proxy.stop()
            broker_log = (Path(tmp) / "broker.log").read_text(errors="replace")
            if "Traceback" in broker_log or "internal error" in broker_log:
                print("the broker logged an error during capture:\n" + broker_log[-4000:], file=sys.stderr)
    sessions = []
    for s in proxy.sessions + sasl_proxy.sessions:
        frames = list(s["frames"])  # type: ignore[call-overload]
        if frames:
            sessions.append({**s, "frames": frames[:MAX_FRAMES_PER_SESSION]})
    return sessions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    sessions = capture()
    seen: Counter[tuple[int, int]] = Counter()
    for s in sessions:
        for f in s["frames"]:  # type: ignore[attr-defined]
            seen[api_label(f)] += 1
    from odradek.protocol.apis import api_name
    from odradek.server.handlers import ROUTES

    print(f"{len(sessions)} sessions, {sum(seen.values())} frames", file=sys.stderr)
    for key in sorted({k for k, _ in seen} | set(ROUTES)):
        versions = sorted(v for k, v in seen if k == key)
        route = ROUTES.get(key)
        speaks = f"{route.min_version}-{route.max_version}" if route else "not spoken"
        print(f"  {key:3d} {api_name(key):<26} captured v{versions} (odradek: {speaks})", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"captured_with": "bench/fuzz_capture.py",
           "sessions": [{"label": s["label"], **({"listener": s["listener"]} if s["listener"] else {}),
                         "frames": [f.hex() for f in s["frames"]]}  # type: ignore[attr-defined]
                        for s in sessions]}
    args.out.write_text(json.dumps(doc, indent=0) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
