"""The version table: every version of every API odradek advertises is really served.

For each API in ROUTES (and each API this table has a case for) and each version kio
has a schema for, plus the pre-2.1 versions odradek routes through its own schemas
(protocol/legacy.py: ListOffsets v0, OffsetCommit v0-1, OffsetFetch v0), one parametrized
case runs against one real `odradek serve`:

- if the broker's own ApiVersions answer advertises the version, the API's semantic
  case builds a kio request of that version with real content (a record batch to a
  topic made for the test, a consumer group through a real join, a transaction through
  InitProducerId and AddPartitionsToTxn, a SCRAM login, ...) and checks what the answer
  means, not just that it parses: the record comes back at the offset Produce gave, the
  coordinator is this broker, an unknown topic is UNKNOWN_TOPIC_OR_PARTITION, a wrong
  topic id UNKNOWN_TOPIC_ID;
- if it does not, the version must be refused as Kafka refuses it: ApiVersions is
  answered at v0 with UNSUPPORTED_VERSION and its own range (KIP-511), any other
  API has its connection closed without an answer (Kafka's SocketServer: "Received
  request api key ... which is not enabled").

So raising a range in ROUTES turns that version's refusal case into its semantic case
at once, and an API advertised without a case here fails, naming the API.

Each case is written once per API and holds for all its versions; it branches on the
version only where the schema's meaning changes (topic ids from Produce v13, Fetch v13,
OffsetCommit/OffsetFetch v10; batched keys from FindCoordinator v4 and OffsetFetch v8;
KIP-394 member ids from JoinGroup v4; ...). Requests travel over one connection per
listener, encoded by kio through odradek.protocol.framing.

The broker has a PLAINTEXT listener (where every case runs, as User:ANONYMOUS, a super
user) and a SASL_PLAINTEXT listener with SCRAM for SaslHandshake and SaslAuthenticate;
the ACL APIs run against its StandardAuthorizer. Topic auto-creation is off so that an
unknown topic stays unknown.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import itertools
import os
import socket
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import BrokerProcess, free_port, recv_exact, wait_for_port
from kio.index import load_request_schema
from kio.schema.errors import ErrorCode as E
from kio.static.primitive import Records
from scramp import ScramClient  # type: ignore[import-untyped]

from odradek.protocol import legacy
from odradek.protocol.apis import api_name
from odradek.protocol.build import build, datetime_to_ms
from odradek.protocol.framing import decode_response, encode_request, request_type
from odradek.protocol.records import Record, encode_batch, iter_batches
from odradek.server.features import FEATURES
from odradek.server.handlers import ROUTES
from odradek.testing.requests import consumer_assignment, consumer_subscription

CLIENT_ID = "version-table"
SOFTWARE = {"client_software_name": "odradek-version-table", "client_software_version": "1.0"}  # ApiVersions v3+
SCRAM_USER = "table-user"
SCRAM_PASSWORD = "table-secret-6d1e"
SCRAM_ITERATIONS = 4096
PARTITIONS = 32  # of each topic the cases draw fresh partitions from
GROUP_SESSION_MS = 10000
TXN_TIMEOUT_MS = 60000
UNKNOWN_TOPIC = "version-table-no-such-topic"
# Kafka's AclOperation codes (the bits of authorized_operations)
READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS = 3, 4, 5, 6, 7, 8, 10, 11
# Kafka's ConfigSource codes (DescribeConfigs)
DYNAMIC_TOPIC_CONFIG, DEFAULT_CONFIG = 1, 5
T0 = 1_700_000_000_000  # record timestamps the cases choose (ms)
# what a client retries: a coordinator still loading its partitions (a fresh Kafka's)
RETRIABLE = (E.coordinator_load_in_progress, E.not_coordinator, E.coordinator_not_available)


# -- which versions exist --------------------------------------------------------------


def kio_versions(api_key: int) -> list[int]:
    """Every version kio has a request schema for."""
    found = []
    for version in range(40):
        try:
            load_request_schema(api_key, version)
        except Exception:  # noqa: BLE001, S112 - kio raises assorted errors for a version it lacks
            continue
        found.append(version)
    return found


def encodable(api_key: int, version: int) -> bool:
    """kio's schema, or odradek's own for a pre-2.1 version kio lacks (protocol/legacy.py)."""
    try:
        request_type(api_key, version)
    except Exception:  # noqa: BLE001 - kio raises assorted errors for a version it lacks
        return False
    return True


# -- one connection ----------------------------------------------------------------------


class BrokerClosed(AssertionError):
    pass


class Wire:
    """Requests one after another over one connection, reopened after the broker closes it."""

    def __init__(self, broker: BrokerProcess, port: int) -> None:
        self.broker = broker
        self.port = port
        self.sock: socket.socket | None = None
        self.correlation_id = 0

    def connect(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=20)
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def send(self, api_key: int, version: int, values: dict[str, Any] | None = None, /, **fields: Any) -> int:
        self.correlation_id += 1
        body = build(request_type(api_key, version), values, **fields)
        self.connect().sendall(encode_request(api_key, version, self.correlation_id, body, client_id=CLIENT_ID))
        return self.correlation_id

    def receive(self, api_key: int, version: int, correlation_id: int) -> Any:
        sock = self.connect()
        try:
            (size,) = struct.unpack(">i", recv_exact(sock, 4))
            frame = recv_exact(sock, size)
        except (ConnectionError, TimeoutError) as exc:
            self.close()
            log = "\n".join(self.broker.logs().splitlines()[-5:])
            raise BrokerClosed(f"{api_name(api_key)} v{version}: no answer ({exc}); the broker's log ends:\n{log}") \
                from None
        got, body = decode_response(frame, api_key, version)
        assert got == correlation_id
        return body

    def call(self, api_key: int, version: int, values: dict[str, Any] | None = None, /, **fields: Any) -> Any:
        return self.receive(api_key, version, self.send(api_key, version, values, **fields))


# -- the broker and what the cases share --------------------------------------------------


@dataclass
class Table:
    broker: BrokerProcess
    sasl_port: int
    wire: Wire
    node_id: int = -1
    cluster_id: str = ""
    advertised: dict[int, tuple[int, int]] = field(default_factory=dict)
    _topics: list[tuple[str, uuid.UUID]] = field(default_factory=list)
    _next_partition: int = PARTITIONS
    _names: Iterator[int] = field(default_factory=itertools.count)
    _compacted: tuple[str, uuid.UUID] | None = None
    kafka: bool = False  # the broker is Apache Kafka (pytest --kafka), not odradek

    def routes(self) -> dict[int, tuple[int, int]]:
        """What ApiVersions must advertise: ROUTES for odradek; Kafka's own table for Kafka."""
        if self.kafka:
            return dict(self.advertised)
        return {k: (r.min_version, r.max_version) for k, r in ROUTES.items()}

    # names ---------------------------------------------------------------------
    def name(self, prefix: str) -> str:
        return f"vt-{prefix}-{next(self._names)}"

    def call(self, api_key: int, version: int, values: dict[str, Any] | None = None, /, **fields: Any) -> Any:
        return self.wire.call(api_key, version, values, **fields)

    def supports(self, api_key: int, version: int) -> bool:
        lo, hi = self.advertised.get(api_key, (1, 0))
        return lo <= version <= hi

    def top(self, api_key: int) -> int:
        return self.advertised[api_key][1]

    # topics --------------------------------------------------------------------
    def create_topic(self, name: str, partitions: int = 1, configs: dict[str, str] | None = None) -> uuid.UUID:
        body = self.call(19, 5, timeout=datetime.timedelta(seconds=10), validate_only=False, topics=[
            {"name": name, "num_partitions": partitions, "replication_factor": 1, "assignments": [],
             "configs": [{"name": k, "value": v} for k, v in (configs or {}).items()]}])
        assert [(t.name, t.error_code) for t in body.topics] == [(name, E.none)], body
        topic_id = self.topic_id(name)
        # led: Kafka's broker takes the leadership a moment after its metadata shows the topic
        self.eventually(lambda: self.call(2, 5, replica_id=-1, topics=[{"name": name, "partitions": [
            {"partition_index": i, "timestamp": -1} for i in range(partitions)]}]).topics[0].partitions,
            lambda parts: all(x.error_code == E.none for x in parts))
        return topic_id

    def topic_id(self, name: str) -> uuid.UUID:
        """The topic's id, once Metadata shows the topic (Kafka's brokers learn of a topic created
        through the controller a moment after CreateTopics answers)."""
        topic = self.eventually(lambda: self.call(3, 12, topics=[{"name": name, "topic_id": None}],
                                                  allow_auto_topic_creation=False).topics[0],
                                lambda x: x.error_code == E.none and len(x.partitions) > 0)
        return topic.topic_id  # type: ignore[no-any-return]

    def partitions(self, name: str) -> int | None:
        """How many partitions Metadata shows of the topic; None when it does not know it."""
        topic = self.metadata(name).topics[0]
        return None if topic.error_code == E.unknown_topic_or_partition else len(topic.partitions)

    def eventually(self, get: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 10.0) -> Any:
        """`get()` until `ok` holds of it: what a broker's metadata shows a moment after the controller."""
        deadline = time.monotonic() + timeout
        while not ok(value := get()):
            assert time.monotonic() < deadline, f"still {value!r} after {timeout} s"
            time.sleep(0.02)
        return value

    def compacted(self) -> tuple[str, uuid.UUID]:
        """A topic with cleanup.policy=compact (created once)."""
        if self._compacted is None:
            name = self.name("compacted")
            self._compacted = (name, self.create_topic(name, 1, {"cleanup.policy": "compact"}))
        return self._compacted

    def partition(self) -> tuple[str, uuid.UUID, int]:
        """A partition nothing has written to yet: (topic, topic id, partition)."""
        if self._next_partition >= PARTITIONS:
            name = self.name("data")
            self._topics.append((name, self.create_topic(name, PARTITIONS)))
            self._next_partition = 0
        name, topic_id = self._topics[-1]
        self._next_partition += 1
        return name, topic_id, self._next_partition - 1

    # records -------------------------------------------------------------------
    def produce(self, topic: str, partition: int, batch: bytes, transactional_id: str | None = None,
                version: int = 9) -> int:
        body = self.call(0, version, acks=-1, timeout=datetime.timedelta(seconds=10), transactional_id=transactional_id,
                         topic_data=[{"name": topic, "partition_data": [{"index": partition, "records": Records(batch)}]}])
        part = body.responses[0].partition_responses[0]
        assert part.error_code == E.none, part
        return part.base_offset  # type: ignore[no-any-return]

    def fetch(self, topic: str, partition: int, offset: int = 0, isolation_level: int = 0) -> Any:
        body = self.call(1, 11, replica_id=-1, max_wait=datetime.timedelta(milliseconds=10), min_bytes=0,
                         max_bytes=1 << 20, isolation_level=isolation_level, session_id=0, session_epoch=-1,
                         topics=[{"topic": topic, "partitions": [{"partition": partition, "fetch_offset": offset,
                                                                  "partition_max_bytes": 1 << 20}]}],
                         forgotten_topics_data=[], rack_id="")
        part = body.responses[0].partitions[0]
        assert part.error_code == E.none, part
        return part

    def records(self, topic: str, partition: int, offset: int = 0) -> list[Record]:
        data = self.fetch(topic, partition, offset).records
        return [r for b in iter_batches(bytes(data or b"")) if not b.header.is_control for r in b.records]

    def list_offset(self, topic: str, partition: int, timestamp: int, isolation_level: int = 0) -> Any:
        body = self.call(2, 5, replica_id=-1, isolation_level=isolation_level, topics=[
            {"name": topic, "partitions": [{"partition_index": partition, "timestamp": timestamp}]}])
        part = body.topics[0].partitions[0]
        assert part.error_code == E.none, part
        return part

    def leader_epoch(self, topic: str, partition: int) -> int:
        meta = self.call(3, 9, topics=[{"name": topic}], allow_auto_topic_creation=False)
        return next(x.leader_epoch for x in meta.topics[0].partitions  # type: ignore[no-any-return]
                    if x.partition_index == partition)

    def metadata(self, *topics: str) -> Any:
        return self.call(3, 9, topics=[{"name": t} for t in topics], allow_auto_topic_creation=False,
                         include_cluster_authorized_operations=False, include_topic_authorized_operations=False)

    # groups --------------------------------------------------------------------
    def join(self, group: str, topic: str = "t") -> tuple[str, int]:
        """A one-member consumer group through JoinGroup v5 (KIP-394) and SyncGroup v3: (member, generation)."""
        args = {"group_id": group, "session_timeout": GROUP_SESSION_MS, "rebalance_timeout": 5000,
                "group_instance_id": None, "protocol_type": "consumer",
                "protocols": [{"name": "range", "metadata": consumer_subscription([topic])}]}
        first = self.call(11, 5, args, member_id="")
        assert first.error_code == E.member_id_required, first
        joined = self.call(11, 5, args, member_id=first.member_id)
        assert joined.error_code == E.none, joined
        return joined.member_id, joined.generation_id

    def join_sync(self, group: str, topic: str = "t", assignment: bytes = b"") -> tuple[str, int]:
        member, generation = self.join(group, topic)
        synced = self.call(14, 3, group_id=group, generation_id=generation, member_id=member, group_instance_id=None,
                           assignments=[{"member_id": member, "assignment": assignment}])
        assert synced.error_code == E.none, synced
        return member, generation

    def commit(self, group: str, topic: str, offsets: dict[int, int], metadata: str = "") -> None:
        body = self.call(8, 8, group_id=group, generation_id_or_member_epoch=-1, member_id="", group_instance_id=None,
                         topics=[{"name": topic, "partitions": [
                             {"partition_index": p, "committed_offset": o, "committed_leader_epoch": 0,
                              "committed_metadata": metadata} for p, o in offsets.items()]}])
        assert {p.error_code for t in body.topics for p in t.partitions} == {E.none}, body

    def committed(self, group: str, topic: str, partition: int) -> Any:
        body = self.call(9, 7, group_id=group, require_stable=False,
                         topics=[{"name": topic, "partition_indexes": [partition]}])
        assert body.error_code == E.none, body
        return body.topics[0].partitions[0]

    def group_state(self, group: str) -> Any:
        (described,) = self.call(15, 5, groups=[group], include_authorized_operations=False).groups
        return described

    # transactions ----------------------------------------------------------------
    def init_producer(self, transactional_id: str | None = None, version: int = 3) -> tuple[int, int]:
        body = self.eventually(lambda: self.call(22, version, transactional_id=transactional_id,
                                                 transaction_timeout=datetime.timedelta(milliseconds=TXN_TIMEOUT_MS),
                                                 producer_id=-1, producer_epoch=-1),
                               lambda x: x.error_code not in RETRIABLE)
        assert body.error_code == E.none, body
        return body.producer_id, body.producer_epoch

    def add_partitions(self, txn: str, pid: int, epoch: int, topic: str, partition: int) -> None:
        body = self.call(24, 3, v3_and_below_transactional_id=txn, v3_and_below_producer_id=pid,
                         v3_and_below_producer_epoch=epoch,
                         v3_and_below_topics=[{"name": topic, "partitions": [partition]}])
        errors = {p.partition_error_code for t in body.results_by_topic_v3_and_below for p in t.results_by_partition}
        assert errors == {E.none}, body

    def end_txn(self, txn: str, pid: int, epoch: int, commit: bool) -> None:
        body = self.call(26, 3, transactional_id=txn, producer_id=pid, producer_epoch=epoch, committed=commit)
        assert body.error_code == E.none, body

    def txn_state(self, txn: str) -> Any:
        (state,) = self.call(65, 0, transactional_ids=[txn]).transaction_states
        return state

    def wait_txn_state(self, txn: str, wanted: str) -> Any:
        deadline = time.monotonic() + 10
        while (state := self.txn_state(txn)).transaction_state != wanted:
            assert time.monotonic() < deadline, f"{txn} stayed {state.transaction_state}, never {wanted}"
            time.sleep(0.02)
        return state

    def wait_stable(self, topic: str, partition: int, offset: int) -> None:
        """Until the last stable offset reaches `offset` (the markers of an ended transaction are written)."""
        deadline = time.monotonic() + 10
        while (lso := self.fetch(topic, partition, 0, isolation_level=1).last_stable_offset) < offset:
            assert time.monotonic() < deadline, f"{topic}-{partition}: last stable offset stays {lso} < {offset}"
            time.sleep(0.02)


def batch(*values: bytes, timestamp_ms: int | None = None, **kw: Any) -> bytes:
    """One record batch of keyed records (key k<i>, the given values, one header)."""
    return encode_batch([(b"k%d" % i, v, [("h", b"%d" % i)]) for i, v in enumerate(values)],
                        timestamp_ms=timestamp_ms, **kw)


def txn_batch(pid: int, epoch: int, *values: bytes, sequence: int = 0) -> bytes:
    from odradek.protocol.records import TRANSACTIONAL_BIT

    return batch(*values, producer_id=pid, producer_epoch=epoch, base_sequence=sequence, attributes=TRANSACTIONAL_BIT)


def ms(value: datetime.datetime | None) -> int:
    return datetime_to_ms(value)


def kafka_uuid(value: uuid.UUID) -> str:
    """Kafka's Uuid.toString: URL-safe base64 of the 16 bytes, unpadded."""
    return base64.urlsafe_b64encode(value.bytes).decode().rstrip("=")


# -- the broker --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def table(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Table]:
    port, sasl_port = free_port(), free_port()
    env = {
        "ODRADEK_LISTENERS": f"PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}",
        "ODRADEK_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
        "ODRADEK_SASL_ENABLED_MECHANISMS": "SCRAM-SHA-256,SCRAM-SHA-512",
        "ODRADEK_CONNECTION_FAILED_AUTHENTICATION_DELAY_MS": "0",
        "ODRADEK_AUTHORIZER_CLASS_NAME": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "ODRADEK_SUPER_USERS": f"User:ANONYMOUS;User:{SCRAM_USER}",
        "ODRADEK_AUTO_CREATE_TOPICS_ENABLE": "false",
        "ODRADEK_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "ODRADEK_GROUP_MIN_SESSION_TIMEOUT_MS": "500",
        "ODRADEK_OFFSETS_TOPIC_NUM_PARTITIONS": "3",
        "ODRADEK_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "3",
        "ODRADEK_SHARE_COORDINATOR_STATE_TOPIC_NUM_PARTITIONS": "3",
    }
    data_dir = tmp_path_factory.mktemp("version-table") / "data"
    b: Any
    if request.config.getoption("--kafka"):  # the same cases against Apache Kafka (conftest: pytest --kafka)
        b = start_kafka_table(data_dir, port, sasl_port, env)
    else:
        b = BrokerProcess(data_dir, port=port, env=env).start()
        wait_for_port(sasl_port, proc=b.proc)
    t = Table(b, sasl_port, Wire(b, port), kafka=bool(request.config.getoption("--kafka")))
    try:
        versions = t.call(18, 3, SOFTWARE)
        assert versions.error_code == E.none
        t.advertised = {k.api_key: (k.min_version, k.max_version) for k in versions.api_keys}
        meta = t.call(3, 1, topics=None)
        (node,) = meta.brokers
        assert (node.host, node.port) == ("127.0.0.1", port)
        t.node_id = node.node_id
        t.cluster_id = t.call(3, 2, topics=[]).cluster_id
        for mechanism in (1, 2):
            upsert_scram_user(t, SCRAM_USER, SCRAM_PASSWORD, mechanism)
            t.eventually(lambda m=mechanism: logs_in(t, SCRAM_USER, SCRAM_PASSWORD, MECHANISMS[m]), bool)
        yield t
    finally:
        t.wire.close()
        if b.proc is not None and b.proc.poll() is None:
            b.stop()


def start_kafka_table(data_dir: Path, port: int, sasl_port: int, env: dict[str, str]) -> Any:
    """Apache Kafka 4.3.1 configured as the table's odradek: the same settings, the two listeners beside
    its controller's, SCRAM on the SASL one."""
    from conftest import kafka_properties, wait_for_coordinators

    from odradek.testing.kafka_reference import KafkaReference

    kafka = KafkaReference(data_dir, port=port)
    controller = f"127.0.0.1:{kafka.controller_port}"
    listeners = f"PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port},CONTROLLER://{controller}"
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    kafka.overrides = {
        **kafka_properties({k: v for k, v in env.items() if k != "ODRADEK_LISTENERS"}),
        "listeners": listeners, "advertised.listeners": listeners,
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config": scram,
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": scram,
        # InitProducerId v6 (KIP-939) is still "unstable" in Kafka 4.3.1: advertised only so, and then
        # every version kio has is checked against Kafka
        "unstable.api.versions.enable": "true",
    }
    kafka.start()
    wait_for_coordinators(kafka.bootstrap)
    return kafka


def salted(password: str, salt: bytes, mechanism: int = 1) -> bytes:
    algorithm = "sha256" if mechanism == 1 else "sha512"
    return hashlib.pbkdf2_hmac(algorithm, password.encode(), salt, SCRAM_ITERATIONS)


def upsert_scram_user(t: Table, user: str, password: str, mechanism: int = 1) -> Any:
    """AlterUserScramCredentials v0 (1 = SCRAM-SHA-256, 2 = SCRAM-SHA-512), as Kafka's admin client sends it."""
    salt = os.urandom(16)
    body = t.call(51, 0, deletions=[], upsertions=[
        {"name": user, "mechanism": mechanism, "iterations": SCRAM_ITERATIONS, "salt": salt,
         "salted_password": salted(password, salt, mechanism)}])
    return body


def sasl_wire(t: Table) -> Wire:
    return Wire(t.broker, t.sasl_port)


MECHANISMS = {1: "SCRAM-SHA-256", 2: "SCRAM-SHA-512"}


def logs_in(t: Table, user: str, password: str, mechanism: str = "SCRAM-SHA-256") -> bool:
    """Whether a SCRAM login as `user` succeeds, on a connection of its own (credentials reach a Kafka
    broker from its controller a moment after AlterUserScramCredentials answers)."""
    w = sasl_wire(t)
    try:
        return bool(scram_login(w, user, password, mechanism=mechanism).error_code == E.none)
    except BrokerClosed:
        return False
    finally:
        w.close()


def scram_login(w: Wire, user: str, password: str, authenticate_version: int = 2,
                handshake_version: int = 1, mechanism: str = "SCRAM-SHA-256") -> Any:
    """SaslHandshake then the SCRAM exchange in SaslAuthenticate requests; the last answer."""
    shake = w.call(17, handshake_version, mechanism=mechanism)
    assert shake.error_code == E.none, shake
    client = ScramClient([mechanism], user, password)
    first = w.call(36, authenticate_version, auth_bytes=client.get_client_first().encode())
    if first.error_code != E.none:
        return first
    client.set_server_first(first.auth_bytes.decode())
    final = w.call(36, authenticate_version, auth_bytes=client.get_client_final().encode())
    if final.error_code == E.none:
        client.set_server_final(final.auth_bytes.decode())  # the broker proved it knows the key
    return final


# -- the cases: api key -> check(table, version) ------------------------------------------------

Case = Callable[[Table, int], None]
CASES: dict[int, Case] = {}


def case(api_key: int) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        CASES[api_key] = fn
        return fn

    return register


def by_topic(version: int, since: int, name: str, topic_id: uuid.UUID, name_field: str = "name") -> dict[str, Any]:
    """The topic key of a request entry: its id from version `since` on, its name before."""
    return {"topic_id": topic_id} if version >= since else {name_field: name}


@case(0)
def produce(t: Table, v: int) -> None:
    topic, topic_id, p = t.partition()
    t.produce(topic, p, batch(b"before"))
    sent = batch(b"one", b"two", timestamp_ms=T0)
    body = t.call(0, v, acks=-1, timeout=datetime.timedelta(seconds=10), transactional_id=None, topic_data=[
        {**by_topic(v, 13, topic, topic_id), "partition_data": [{"index": p, "records": Records(sent)}]}])
    (answer,) = body.responses
    assert (answer.topic_id if v >= 13 else answer.name) == (topic_id if v >= 13 else topic)
    (part,) = answer.partition_responses
    assert (part.index, part.error_code, part.base_offset) == (p, E.none, 1), part
    assert ms(part.log_append_time) in (-1, 0)  # CreateTime topic: no log-append time
    if v >= 5:
        assert part.log_start_offset == 0
    if v >= 8:
        assert part.record_errors == () and part.error_message is None
    got = [(r.offset, r.key, r.value, r.timestamp, r.headers) for r in t.records(topic, p, 1)]
    assert got == [(1, b"k0", b"one", T0, (("h", b"0"),)), (2, b"k1", b"two", T0, (("h", b"1"),))]
    # acks=0: stored, and no answer at all (the next answer on the connection is the next request's)
    t.wire.send(0, v, acks=0, timeout=datetime.timedelta(seconds=10), transactional_id=None, topic_data=[
        {**by_topic(v, 13, topic, topic_id), "partition_data": [{"index": p, "records": Records(batch(b"unacked"))}]}])
    t.eventually(lambda: [r.value for r in t.records(topic, p, 3)], lambda values: values == [b"unacked"])
    # a topic that does not exist (by name, or from v13 by an id no topic has)
    missing = {"topic_id": uuid.uuid4()} if v >= 13 else {"name": UNKNOWN_TOPIC}
    body = t.call(0, v, acks=-1, timeout=datetime.timedelta(seconds=10), transactional_id=None, topic_data=[
        {**missing, "partition_data": [{"index": 0, "records": Records(batch(b"lost"))}]}])
    part = body.responses[0].partition_responses[0]
    assert part.error_code == (E.unknown_topic_id if v >= 13 else E.unknown_topic_or_partition), part
    assert part.base_offset == -1
    # a record without a key to a compacted topic: refused, and from v8 named (KIP-467)
    compacted, compacted_id = t.compacted()
    keyless = encode_batch([(b"key", b"kept", ()), (None, b"keyless", ())])
    body = t.call(0, v, acks=-1, timeout=datetime.timedelta(seconds=10), transactional_id=None, topic_data=[
        {**by_topic(v, 13, compacted, compacted_id), "partition_data": [{"index": 0, "records": Records(keyless)}]}])
    part = body.responses[0].partition_responses[0]
    assert (part.error_code, part.base_offset) == (E.invalid_record, -1), part
    if v >= 8:
        assert [e.batch_index for e in part.record_errors] == [1], part
        assert part.record_errors[0].batch_index_error_message and part.error_message, part
    assert t.list_offset(compacted, 0, -1).offset == 0  # nothing of the batch was stored


@case(1)
def fetch(t: Table, v: int) -> None:
    topic, topic_id, p = t.partition()
    t.produce(topic, p, batch(b"a", b"b", timestamp_ms=T0))
    t.produce(topic, p, batch(b"c", timestamp_ms=T0 + 1))

    def request(entry: dict[str, Any], offset: int, leader_epoch: int = -1) -> Any:
        return t.call(1, v, replica_id=-1, max_wait=datetime.timedelta(milliseconds=50), min_bytes=1,
                      max_bytes=1 << 20, isolation_level=0, session_id=0, session_epoch=-1,
                      topics=[{**entry, "partitions": [{"partition": p, "fetch_offset": offset,
                                                        "current_leader_epoch": leader_epoch,
                                                        "partition_max_bytes": 1 << 20, "log_start_offset": -1}]}],
                      forgotten_topics_data=[], rack_id="")

    body = request(by_topic(v, 13, topic, topic_id, "topic"), 1)
    if v >= 7:
        assert body.error_code == E.none and body.session_id == 0  # no session was asked for
    (answer,) = body.responses
    assert (answer.topic_id if v >= 13 else answer.topic) == (topic_id if v >= 13 else topic)
    (part,) = answer.partitions
    assert (part.partition_index, part.error_code, part.high_watermark, part.last_stable_offset) == (p, E.none, 3, 3)
    if v >= 5:
        assert part.log_start_offset == 0
    if v >= 11:
        assert part.preferred_read_replica == -1
    got = [(r.offset, r.value) for b in iter_batches(bytes(part.records)) for r in b.records]
    # whole batches come back: the one holding offset 1 starts at 0
    assert got == [(0, b"a"), (1, b"b"), (2, b"c")], got
    # past the end: OFFSET_OUT_OF_RANGE
    part = request(by_topic(v, 13, topic, topic_id, "topic"), 10).responses[0].partitions[0]
    assert part.error_code == E.offset_out_of_range, part
    if v >= 9:  # KIP-320: a leader epoch newer than the leader's is UNKNOWN_LEADER_EPOCH
        epoch = t.leader_epoch(topic, p)
        part = request(by_topic(v, 13, topic, topic_id, "topic"), 0, epoch).responses[0].partitions[0]
        assert part.error_code == E.none, part
        part = request(by_topic(v, 13, topic, topic_id, "topic"), 0, epoch + 1).responses[0].partitions[0]
        assert part.error_code == E.unknown_leader_epoch, part
    # a topic that does not exist
    missing = {"topic_id": uuid.uuid4()} if v >= 13 else {"topic": UNKNOWN_TOPIC}
    part = request(missing, 0).responses[0].partitions[0]
    assert part.error_code == (E.unknown_topic_id if v >= 13 else E.unknown_topic_or_partition), part
    if v >= 7:
        # KIP-227: an incremental fetch in a session the broker does not have
        lost = t.call(1, v, replica_id=-1, max_wait=datetime.timedelta(milliseconds=10), min_bytes=0,
                      max_bytes=1 << 20, isolation_level=0, session_id=123456, session_epoch=5, topics=[],
                      forgotten_topics_data=[], rack_id="")
        assert (lost.error_code, lost.responses) == (E.fetch_session_id_not_found, ()), (
            f"Fetch v{v}: an incremental fetch (session_epoch > 0) in a session the broker never created must be "
            "FETCH_SESSION_ID_NOT_FOUND (Kafka's FetchManager); odradek answered it as a full fetch with "
            f"{lost.error_code.name}, which a client takes for 'nothing changed' and keeps waiting")


@case(2)
def list_offsets(t: Table, v: int) -> None:
    topic, _, p = t.partition()
    for ts in (T0 + 1000, T0 + 3000, T0 + 2000):  # offsets 0, 1, 2; the greatest timestamp at offset 1
        t.produce(topic, p, batch(b"x", timestamp_ms=ts))

    def lookup(timestamp: int, isolation_level: int = 0) -> tuple[int, int]:
        body = t.call(2, v, replica_id=-1, isolation_level=isolation_level,
                      timeout=datetime.timedelta(seconds=5),
                      topics=[{"name": topic, "partitions": [
                          {"partition_index": p, "timestamp": timestamp, "current_leader_epoch": -1,
                           "max_num_offsets": 1}]}])
        (answer,) = body.topics
        (part,) = answer.partitions
        assert (answer.name, part.partition_index, part.error_code) == (topic, p, E.none), part
        if v == 0:  # a list of offsets (at most max_num_offsets), no timestamp
            (offset,) = part.old_style_offsets
            return offset, -1
        return part.offset, part.timestamp

    assert lookup(-2) == (0, -1)  # earliest
    assert lookup(-1) == (3, -1)  # latest
    if v == 0:  # v0 looks up by segment, not by record (Kafka before KIP-79)
        return
    assert lookup(T0 + 2500) == (1, T0 + 3000)  # the first record at or after the time
    assert lookup(T0 + 9000) == (-1, -1)  # none so late
    if v >= 7:
        assert lookup(-3) == (1, T0 + 3000)  # KIP-734: the record of the greatest timestamp
    if v >= 8:
        assert lookup(-4) == (0, -1)  # KIP-405 earliest local: all of the log is local
    if v >= 9:
        assert lookup(-5) == (-1, -1)  # KIP-1005 latest tiered: nothing is tiered
    if v >= 11:
        assert lookup(-6) == (-1, -1)  # KIP-1023 earliest pending upload: no remote storage
    body = t.call(2, v, replica_id=-1, topics=[{"name": UNKNOWN_TOPIC, "partitions": [
        {"partition_index": 0, "timestamp": -1}]}])
    assert body.topics[0].partitions[0].error_code == E.unknown_topic_or_partition
    if v >= 2:  # read_committed: the latest offset is the last stable one, before an open transaction
        txn = t.name(f"list-offsets-v{v}")
        pid, epoch = t.init_producer(txn)
        t.add_partitions(txn, pid, epoch, topic, p)
        t.produce(topic, p, txn_batch(pid, epoch, b"open"), transactional_id=txn)
        assert lookup(-1) == (4, -1)
        assert lookup(-1, isolation_level=1) == (3, -1)
        t.end_txn(txn, pid, epoch, commit=False)
        t.wait_stable(topic, p, 5)


@case(3)
def metadata(t: Table, v: int) -> None:
    topic, topic_id, _ = t.partition()
    request: dict[str, Any] = {"topics": [{"name": topic}, {"name": UNKNOWN_TOPIC}],
                               "allow_auto_topic_creation": False,
                               "include_cluster_authorized_operations": True,
                               "include_topic_authorized_operations": True}
    body = t.call(3, v, request)
    assert [(b.node_id, b.host, b.port) for b in body.brokers] == [(t.node_id, "127.0.0.1", t.broker.port)]
    if v >= 1:
        assert body.controller_id == t.node_id
    if v >= 2:
        assert body.cluster_id == t.cluster_id
    if v >= 13:
        assert body.error_code == E.none
    found = {x.name: x for x in body.topics}
    assert found[UNKNOWN_TOPIC].error_code == E.unknown_topic_or_partition
    mine = found[topic]
    assert mine.error_code == E.none
    assert sorted(x.partition_index for x in mine.partitions) == list(range(PARTITIONS))
    for part in mine.partitions:
        assert (part.error_code, part.leader_id, part.replica_nodes, part.isr_nodes) == (
            E.none, t.node_id, (t.node_id,), (t.node_id,))
        if v >= 7:
            assert part.leader_epoch >= 0
    if v >= 1:
        assert mine.is_internal is False
    if v >= 8:
        for bit in (READ, WRITE, DESCRIBE, DELETE, ALTER):  # a super user may do everything
            assert mine.topic_authorized_operations & (1 << bit), bin(mine.topic_authorized_operations)
    if 8 <= v <= 10:
        assert body.cluster_authorized_operations & (1 << DESCRIBE)
    if v >= 10:
        assert mine.topic_id == topic_id
    if v >= 1:  # null: every topic
        body = t.call(3, v, request, topics=None)
        assert topic in {x.name for x in body.topics}
    if v >= 12:  # by topic id
        body = t.call(3, v, request, topics=[{"name": None, "topic_id": topic_id}])
        assert [(x.name, x.topic_id, x.error_code) for x in body.topics] == [(topic, topic_id, E.none)]
        body = t.call(3, v, request, topics=[{"name": None, "topic_id": uuid.uuid4()}])
        assert body.topics[0].error_code == E.unknown_topic_id


@case(8)
def offset_commit(t: Table, v: int) -> None:
    topic, topic_id, p = t.partition()
    group = t.name(f"commit-v{v}")

    def commit(generation: int, member: str, offset: int, entry: dict[str, Any] | None = None) -> Any:
        body = t.call(8, v, group_id=group, generation_id_or_member_epoch=generation, member_id=member,
                      group_instance_id=None, retention_time=datetime.timedelta(milliseconds=-1),
                      topics=[{**(entry or by_topic(v, 10, topic, topic_id)), "partitions": [
                          {"partition_index": p, "committed_offset": offset, "committed_leader_epoch": 0,
                           "committed_metadata": f"meta-v{v}"}]}])
        (answer,) = body.topics
        if v >= 10:
            assert answer.topic_id == (entry or {}).get("topic_id", topic_id)
        else:
            assert answer.name == topic
        (part,) = answer.partitions
        assert part.partition_index == p
        return part.error_code

    # a simple commit (no member): what Kafka's admin client and standalone consumers send
    assert commit(-1, "", 42) == E.none
    got = t.committed(group, topic, p)
    assert (got.committed_offset, got.metadata) == (42, f"meta-v{v}")
    if v == 0:  # v0 has no generation nor member
        return
    # a member of a live generation, then a stale generation
    member, generation = t.join_sync(group, topic)
    assert commit(generation, member, 43) == E.none
    assert t.committed(group, topic, p).committed_offset == 43
    assert commit(generation + 1, member, 44) == E.illegal_generation
    assert commit(generation, "someone-else", 44) == E.unknown_member_id
    assert t.committed(group, topic, p).committed_offset == 43
    if v >= 10:
        assert commit(-1, "", 45, {"topic_id": uuid.uuid4()}) == E.unknown_topic_id


@case(9)
def offset_fetch(t: Table, v: int) -> None:
    topic, topic_id, p = t.partition()
    group = t.name(f"fetch-v{v}")
    t.commit(group, topic, {p: 7}, metadata="seven")
    entry = {**by_topic(v, 10, topic, topic_id), "partition_indexes": [p, p + 1]}

    def fetch(topics: list[dict[str, Any]] | None) -> tuple[Any, list[Any]]:
        if v >= 8:
            body = t.call(9, v, require_stable=True, groups=[
                {"group_id": group, "member_id": None, "member_epoch": -1, "topics": topics}])
            (answer,) = body.groups
            assert (answer.group_id, answer.error_code) == (group, E.none)
            return answer, list(answer.topics)
        body = t.call(9, v, group_id=group, require_stable=True, topics=topics)
        if v >= 2:
            assert body.error_code == E.none
        return body, list(body.topics)

    _, topics = fetch([entry])
    (answer,) = topics
    assert (answer.topic_id if v >= 10 else answer.name) == (topic_id if v >= 10 else topic)
    parts = {x.partition_index: x for x in answer.partitions}
    assert (parts[p].error_code, parts[p].committed_offset, parts[p].metadata) == (E.none, 7, "seven")
    assert (parts[p + 1].error_code, parts[p + 1].committed_offset) == (E.none, -1)  # nothing committed
    if v >= 5:
        assert (parts[p].committed_leader_epoch, parts[p + 1].committed_leader_epoch) == (0, -1)
    if v >= 2:  # null: everything the group committed
        _, topics = fetch(None)
        assert [(x.partition_index, x.committed_offset) for x in topics[0].partitions] == [(p, 7)]
    if v >= 10:
        _, topics = fetch([{"topic_id": uuid.uuid4(), "partition_indexes": [0]}])
        assert topics[0].partitions[0].error_code == E.unknown_topic_id


@case(10)
def find_coordinator(t: Table, v: int) -> None:
    group, txn = t.name("coordinated"), t.name("coordinated-txn")
    here = (t.node_id, "127.0.0.1", t.broker.port)
    if v >= 4:
        body = t.call(10, v, key_type=0, coordinator_keys=[group, group + "-2"])
        assert [(c.key, c.error_code, (c.node_id, c.host, c.port)) for c in body.coordinators] == [
            (group, E.none, here), (group + "-2", E.none, here)]
        body = t.call(10, v, key_type=1, coordinator_keys=[txn])
        assert [(c.key, c.error_code, (c.node_id, c.host, c.port)) for c in body.coordinators] == [
            (txn, E.none, here)]
        if v >= 6:  # KIP-932's share key type: the __share_group_state partition of group:topicId:partition,
            # the topic id as Kafka's Uuid.toString writes it (SharePartitionKey)
            share = f"{group}:{kafka_uuid(uuid.uuid4())}:0"
            # (a fresh Kafka creates __share_group_state on the first ask: COORDINATOR_NOT_AVAILABLE until then)
            body = t.eventually(lambda: t.call(10, v, key_type=2, coordinator_keys=[share, "no-colons"]),
                                lambda x: x.coordinators[0].error_code not in RETRIABLE, timeout=30)
            assert [(c.key, c.error_code, c.node_id) for c in body.coordinators] == [
                (share, E.none, t.node_id), ("no-colons", E.invalid_request, -1)]
            malformed = [f"{group}:{uuid.uuid4()}:0", f"{group}:{kafka_uuid(uuid.uuid4())}:x"]  # not Kafka's forms
            body = t.call(10, v, key_type=2, coordinator_keys=malformed)
            assert [(c.key, c.error_code) for c in body.coordinators] == [(k, E.invalid_request) for k in malformed]
        return
    body = t.call(10, v, key=group, key_type=0)
    assert (body.error_code, (body.node_id, body.host, body.port)) == (E.none, here)
    if v >= 1:
        body = t.call(10, v, key=txn, key_type=1)
        assert (body.error_code, (body.node_id, body.host, body.port)) == (E.none, here)


def join_request(t: Table, v: int, group: str, topic: str, member: str = "") -> dict[str, Any]:
    return {"group_id": group, "session_timeout": GROUP_SESSION_MS, "rebalance_timeout": 5000,
            "member_id": member, "group_instance_id": None, "protocol_type": "consumer", "reason": f"v{v} case",
            "protocols": [{"name": "range", "metadata": consumer_subscription([topic])},
                          {"name": "roundrobin", "metadata": consumer_subscription([topic], 1)}]}


@case(11)
def join_group(t: Table, v: int) -> None:
    topic, _, _ = t.partition()
    group = t.name(f"join-v{v}")
    body = t.call(11, v, join_request(t, v, group, topic))
    if v >= 4:  # KIP-394: a new member gets its id first
        assert (body.error_code, body.generation_id) == (E.member_id_required, -1), body
        assert body.member_id.startswith(CLIENT_ID + "-")
        body = t.call(11, v, join_request(t, v, group, topic, body.member_id))
    assert body.error_code == E.none, body
    assert body.generation_id == 1 and body.leader == body.member_id and body.protocol_name == "range"
    assert [(m.member_id, m.metadata) for m in body.members] == [(body.member_id, consumer_subscription([topic]))]
    if v >= 5:
        assert body.members[0].group_instance_id is None
    if v >= 7:
        assert body.protocol_type == "consumer"
    if v >= 9:
        assert body.skip_assignment is False
    assert t.group_state(group).group_state == "CompletingRebalance"
    # a session timeout below group.min.session.timeout.ms
    short = t.call(11, v, join_request(t, v, t.name("impatient"), topic) | {"session_timeout": 100})
    assert short.error_code == E.invalid_session_timeout, short
    # a protocol the group's members do not share
    other = t.call(11, v, join_request(t, v, group, topic) | {
        "protocol_type": "connect", "protocols": [{"name": "sticky", "metadata": b""}]})
    assert other.error_code == E.inconsistent_group_protocol, other


@case(12)
def heartbeat(t: Table, v: int) -> None:
    group = t.name(f"heartbeat-v{v}")
    member, generation = t.join_sync(group)

    def beat(gen: int, member_id: str) -> Any:
        return t.call(12, v, group_id=group, generation_id=gen, member_id=member_id, group_instance_id=None).error_code

    assert beat(generation, member) == E.none
    assert beat(generation + 1, member) == E.illegal_generation
    assert beat(generation, "nobody") == E.unknown_member_id
    # a second member joins: the first learns of the rebalance through its heartbeat
    other = Wire(t.broker, t.broker.port)
    try:
        args = {"group_id": group, "session_timeout": GROUP_SESSION_MS, "rebalance_timeout": 5000,
                "group_instance_id": None, "protocol_type": "consumer",
                "protocols": [{"name": "range", "metadata": consumer_subscription(["t"])}]}
        first = other.call(11, 5, args, member_id="")
        assert first.error_code == E.member_id_required
        other.send(11, 5, args, member_id=first.member_id)  # parked until the rebalance completes
        deadline = time.monotonic() + 5
        while (error := beat(generation, member)) == E.none:
            assert time.monotonic() < deadline, "the heartbeat never told of the rebalance"
            time.sleep(0.02)
        assert error == E.rebalance_in_progress
    finally:
        other.close()
    # a group that does not exist: Kafka's coordinator answers as for a member it does not know
    assert t.call(12, v, group_id=t.name("no-group"), generation_id=1, member_id="nobody").error_code == (
        E.unknown_member_id)


@case(13)
def leave_group(t: Table, v: int) -> None:
    group = t.name(f"leave-v{v}")
    member, _ = t.join_sync(group)
    if v >= 3:
        body = t.call(13, v, group_id=group, members=[
            {"member_id": member, "group_instance_id": None, "reason": "done"},
            {"member_id": "nobody", "group_instance_id": None}])
        assert body.error_code == E.none
        assert [(m.member_id, m.error_code) for m in body.members] == [
            (member, E.none), ("nobody", E.unknown_member_id)]
    else:
        assert t.call(13, v, group_id=group, member_id=member).error_code == E.none
        assert t.call(13, v, group_id=group, member_id=member).error_code == E.unknown_member_id
    described = t.group_state(group)
    assert (described.group_state, described.members) == ("Empty", ())


@case(14)
def sync_group(t: Table, v: int) -> None:
    topic, _, _ = t.partition()
    group = t.name(f"sync-v{v}")
    member, generation = t.join(group, topic)
    assignment = consumer_assignment({topic: [0, 1]})

    def sync(gen: int, protocol_name: str = "range") -> Any:
        return t.call(14, v, group_id=group, generation_id=gen, member_id=member, group_instance_id=None,
                      protocol_type="consumer", protocol_name=protocol_name,
                      assignments=[{"member_id": member, "assignment": assignment}])

    assert sync(generation + 1).error_code == E.illegal_generation
    body = sync(generation)
    assert (body.error_code, body.assignment) == (E.none, assignment)
    if v >= 5:
        assert (body.protocol_type, body.protocol_name) == ("consumer", "range")
        assert sync(generation, protocol_name="roundrobin").error_code == E.inconsistent_group_protocol
    assert t.group_state(group).group_state == "Stable"


@case(15)
def describe_groups(t: Table, v: int) -> None:
    topic, _, _ = t.partition()
    group, missing = t.name(f"describe-v{v}"), t.name("never-joined")
    assignment = consumer_assignment({topic: [3]})
    member, _ = t.join_sync(group, topic, assignment)
    body = t.call(15, v, groups=[group, missing], include_authorized_operations=True)
    found = {g.group_id: g for g in body.groups}
    g = found[group]
    assert (g.error_code, g.group_state, g.protocol_type, g.protocol_data) == (E.none, "Stable", "consumer", "range")
    (m,) = g.members
    assert (m.member_id, m.client_id, m.client_host) == (member, CLIENT_ID, "/127.0.0.1")
    assert (m.member_metadata, m.member_assignment) == (consumer_subscription([topic]), assignment)
    if v >= 3:
        for bit in (READ, DESCRIBE, DELETE):
            assert g.authorized_operations & (1 << bit), bin(g.authorized_operations)
    if v >= 4:
        assert m.group_instance_id is None
    gone = found[missing]
    assert (gone.group_state, gone.members) == ("Dead", ())
    # KIP-1043: from v6 a group that does not exist is GROUP_ID_NOT_FOUND
    assert gone.error_code == (E.group_id_not_found if v >= 6 else E.none), gone


@case(16)
def list_groups(t: Table, v: int) -> None:
    stable, empty = t.name(f"listed-v{v}"), t.name(f"listed-empty-v{v}")
    t.join_sync(stable)
    topic, _, p = t.partition()
    t.commit(empty, topic, {p: 1})  # offsets only: an Empty group

    def listed(**filters: Any) -> dict[str, Any]:
        body = t.call(16, v, **filters)
        assert body.error_code == E.none
        return {g.group_id: g for g in body.groups}

    groups = listed()
    assert groups[stable].protocol_type == "consumer"
    assert groups[empty].protocol_type == ""  # a group of offsets only has no protocol type
    if v >= 4:
        assert (groups[stable].group_state, groups[empty].group_state) == ("Stable", "Empty")
        only_stable = listed(states_filter=["Stable"])
        assert stable in only_stable and empty not in only_stable
    if v >= 5:
        assert groups[stable].group_type == "classic"
        assert stable in listed(types_filter=["classic"])
        assert stable not in listed(types_filter=["consumer"])


# -- KIP-848 consumer groups ----------------------------------------------------------------


def consumer_join(t: Table, group: str, topic: str, v: int = 1) -> Any:
    """A KIP-848 member joining with epoch 0, subscribed to `topic`: from v1 with the client's own
    member id (KIP-1082), at v0 with none (the broker makes one)."""
    return t.call(68, v, group_id=group, member_id=str(uuid.uuid4()) if v >= 1 else "", member_epoch=0,
                  rebalance_timeout=30000, subscribed_topic_names=[topic], topic_partitions=[])


def consumer_heartbeat(t: Table, v: int, group: str, member: str, epoch: int,
                       owned: list[tuple[uuid.UUID, list[int]]] | None = None) -> Any:
    return t.call(68, v, group_id=group, member_id=member, member_epoch=epoch, topic_partitions=None if owned is None
                  else [{"topic_id": topic_id, "partitions": partitions} for topic_id, partitions in owned])


def every_partition(assignment: Any) -> list[tuple[uuid.UUID, list[int]]]:
    return [(tp.topic_id, sorted(tp.partitions)) for tp in assignment.topic_partitions]


@case(68)
def consumer_group_heartbeat(t: Table, v: int) -> None:
    topic, topic_id, _ = t.partition()
    group = t.name(f"kip848-v{v}")
    joined = consumer_join(t, group, topic, v)
    assert joined.error_code == E.none, joined
    member, epoch = joined.member_id, joined.member_epoch
    # a member id (its own from v1), an epoch past 0 (Kafka's first is 2), a heartbeat interval, and the
    # sole member's assignment: every partition of the subscribed topic
    assert member and epoch >= 1 and joined.heartbeat_interval.total_seconds() > 0, joined
    assert every_partition(joined.assignment) == [(topic_id, list(range(PARTITIONS)))], joined
    # it owns what it was given: nothing changes, no assignment is sent again
    again = consumer_heartbeat(t, v, group, member, epoch, [(topic_id, list(range(PARTITIONS)))])
    assert (again.error_code, again.member_id, again.member_epoch, again.assignment) == (E.none, member, epoch, None)
    # an epoch the coordinator never gave: the member must give up its partitions and rejoin
    assert consumer_heartbeat(t, v, group, member, epoch + 5).error_code == E.fenced_member_epoch
    assert consumer_heartbeat(t, v, group, "stranger", epoch).error_code == E.unknown_member_id
    # a group that does not exist is created only by a join (epoch 0)
    assert consumer_heartbeat(t, v, t.name("kip848-none"), member, 1).error_code == E.group_id_not_found
    assert consumer_heartbeat(t, v, t.name("kip848-none"), member, -1).error_code == E.group_id_not_found  # a leave
    if v >= 1:  # KIP-1082: the client makes its member id
        empty = t.call(68, v, group_id=group, member_id="", member_epoch=0, rebalance_timeout=30000,
                       subscribed_topic_names=[topic], topic_partitions=[])
        assert empty.error_code == E.invalid_request, empty
    left = consumer_heartbeat(t, v, group, member, -1)
    assert (left.error_code, left.member_id, left.member_epoch) == (E.none, member, -1), left
    assert consumer_heartbeat(t, v, group, member, epoch).error_code == E.unknown_member_id  # gone


@case(69)
def consumer_group_describe(t: Table, v: int) -> None:
    topic, topic_id, _ = t.partition()
    group, missing, classic = t.name(f"kip848-described-v{v}"), t.name("never-joined"), t.name("kip848-classic")
    joined = consumer_join(t, group, topic, t.top(68))
    epoch = joined.member_epoch
    t.join_sync(classic, topic)
    body = t.call(69, v, group_ids=[group, missing, classic], include_authorized_operations=True)
    found = {g.group_id: g for g in body.groups}
    g = found[group]
    assert (g.error_code, g.group_state, g.group_epoch, g.assignment_epoch, g.assignor_name) == (
        E.none, "Stable", epoch, epoch, "uniform"), g
    assert g.authorized_operations & (1 << READ | 1 << DESCRIBE | 1 << DELETE) == (1 << READ | 1 << DESCRIBE | 1 << DELETE)
    (m,) = g.members
    assert (m.member_id, m.member_epoch, m.client_id, m.client_host, m.instance_id, m.rack_id) == (
        joined.member_id, epoch, CLIENT_ID, "/127.0.0.1", None, None), m
    assert tuple(m.subscribed_topic_names) == (topic,)
    for assignment in (m.assignment, m.target_assignment):  # reconciled: what it has is what it should have
        assert [(tp.topic_id, tp.topic_name, sorted(tp.partitions)) for tp in assignment.topic_partitions] == [
            (topic_id, topic, list(range(PARTITIONS)))]
    if v >= 1:
        assert m.member_type == 1  # a consumer-protocol member (0: a classic member of a consumer group)
    assert found[missing].error_code == E.group_id_not_found
    assert found[classic].error_code == E.group_id_not_found  # a classic group is not a consumer group
    consumer_heartbeat(t, t.top(68), group, joined.member_id, -1)
    (g,) = t.call(69, v, group_ids=[group], include_authorized_operations=False).groups
    assert (g.error_code, g.group_state, g.members) == (E.none, "Empty", ())
    assert g.group_epoch > epoch  # the member's leaving is a new group epoch


# -- KIP-932 share groups -------------------------------------------------------------------


def share_heartbeat(t: Table, group: str, member: str, epoch: int, topics: list[str] | None = None,
                    v: int = 1) -> Any:
    return t.call(76, v, group_id=group, member_id=member, member_epoch=epoch, rack_id=None,
                  subscribed_topic_names=topics)


def share_join(t: Table, group: str, topic: str, v: int = 1) -> tuple[str, int, Any]:
    """A share group member subscribed to `topic`, heartbeating until it is assigned the topic's partitions
    (Kafka's group coordinator first initializes their share state, a moment after the join): (member id,
    epoch, the join's answer)."""
    member = str(uuid.uuid4())
    joined = body = share_heartbeat(t, group, member, 0, [topic], v)
    assert (body.error_code, body.member_id) == (E.none, member), body
    deadline = time.monotonic() + 10
    while body.assignment is None or not body.assignment.topic_partitions:
        assert time.monotonic() < deadline, f"{member} of {group} never assigned: {body}"
        time.sleep(0.05)
        body = share_heartbeat(t, group, member, body.member_epoch, None, v)
        assert body.error_code == E.none, body
    return member, body.member_epoch, (joined, body)


def share_earliest(t: Table, group: str) -> None:
    """share.auto.offset.reset=earliest on the group (IncrementalAlterConfigs, GROUP resource)."""
    body = t.call(44, 1, validate_only=False, resources=[{"resource_type": 32, "resource_name": group, "configs": [
        {"name": "share.auto.offset.reset", "config_operation": 0, "value": "earliest"}]}])
    assert body.responses[0].error_code == E.none, body


def share_fetch_call(t: Table, v: int, group: str, member: str, epoch: int, topic_id: uuid.UUID, p: int,
                     acks: list[tuple[int, int, list[int]]] | None = None, max_records: int = 500,
                     **fields: Any) -> Any:
    return t.call(78, v, fields, group_id=group, member_id=member, share_session_epoch=epoch,
                  max_wait=datetime.timedelta(milliseconds=200), min_bytes=1, max_bytes=1 << 20,
                  max_records=max_records, batch_size=max_records, topics=[{"topic_id": topic_id, "partitions": [
                      {"partition_index": p, "acknowledgement_batches": [
                          {"first_offset": f, "last_offset": last, "acknowledge_types": types}
                          for f, last, types in acks or []]}]}], forgotten_topics_data=[])


def acquired(body: Any) -> list[tuple[int, int, int]]:
    assert body.error_code == E.none, body
    return [(a.first_offset, a.last_offset, a.delivery_count)
            for topic in body.responses for part in topic.partitions for a in part.acquired_records]


def share_acquire(t: Table, v: int, group: str, member: str, topic_id: uuid.UUID, p: int,
                  **fields: Any) -> tuple[Any, int]:
    """ShareFetch from session epoch 0 (which opens the share session), each next one the next epoch, until
    records are acquired (Kafka's share partition reads its state on the first fetch and may answer it
    empty): (the answer, the session's next epoch)."""
    deadline = time.monotonic() + 10
    for epoch in itertools.count():
        body = share_fetch_call(t, v, group, member, epoch, topic_id, p, **fields)
        if acquired(body):
            return body, epoch + 1
        assert time.monotonic() < deadline, f"nothing acquired: {body}"
    raise AssertionError  # unreachable


def share_ack(t: Table, v: int, group: str, member: str, epoch: int, topic_id: uuid.UUID, p: int,
              first: int, last: int, types: list[int], **fields: Any) -> Any:
    """ShareAcknowledge of one batch; the partition's answer."""
    body = t.call(79, v, fields, group_id=group, member_id=member, share_session_epoch=epoch, topics=[
        {"topic_id": topic_id, "partitions": [{"partition_index": p, "acknowledgement_batches": [
            {"first_offset": first, "last_offset": last, "acknowledge_types": types}]}]}])
    assert body.error_code == E.none, body
    return body.responses[0].partitions[0]


ACCEPT, RELEASE, REJECT, RENEW = 1, 2, 3, 4  # Kafka's AcknowledgeType codes (RENEW: KIP-1222)


def share_offsets(t: Table, group: str, topic: str, p: int, v: int = 1) -> Any:
    """DescribeShareGroupOffsets of one partition: the group's answer."""
    (described,) = t.call(90, v, groups=[{"group_id": group, "topics": [{"topic_name": topic, "partitions": [p]}]}]).groups
    return described


@case(76)
def share_group_heartbeat(t: Table, v: int) -> None:
    topic, topic_id, _ = t.partition()
    group = t.name(f"share-hb-v{v}")
    member, epoch, (joined, assigned) = share_join(t, group, topic, v)
    assert joined.member_epoch >= 1 and joined.heartbeat_interval.total_seconds() > 0, joined
    assert epoch >= joined.member_epoch
    # a sole member gets every partition (Kafka's first answer may hold none yet: their share state is
    # initialized first, and the assignment comes with a later heartbeat)
    assert every_partition(assigned.assignment) == [(topic_id, list(range(PARTITIONS)))], assigned
    body = share_heartbeat(t, group, member, epoch, None, v)
    assert (body.error_code, body.member_epoch, body.assignment) == (E.none, epoch, None)  # nothing changed
    assert share_heartbeat(t, group, member, epoch + 5, None, v).error_code == E.fenced_member_epoch
    assert share_heartbeat(t, group, "stranger", epoch, None, v).error_code == E.unknown_member_id
    # a group that does not exist is created only by a join (epoch 0)
    assert share_heartbeat(t, t.name("share-hb-none"), member, 1, None, v).error_code == E.group_id_not_found
    assert share_heartbeat(t, t.name("share-hb-none"), member, -1, None, v).error_code == E.group_id_not_found
    assert share_heartbeat(t, group, "", 0, [topic], v).error_code == E.invalid_request  # the client makes its id
    classic = t.name("share-hb-classic")
    t.join_sync(classic, topic)
    assert share_heartbeat(t, classic, str(uuid.uuid4()), 0, [topic], v).error_code == E.group_id_not_found
    body = share_heartbeat(t, group, member, -1, None, v)
    assert (body.error_code, body.member_id, body.member_epoch) == (E.none, member, -1)
    assert share_heartbeat(t, group, member, epoch, None, v).error_code == E.unknown_member_id  # gone


@case(77)
def share_group_describe(t: Table, v: int) -> None:
    topic, topic_id, _ = t.partition()
    group, missing, classic = t.name(f"share-describe-v{v}"), t.name("share-never"), t.name("share-classic")
    member, epoch, _ = share_join(t, group, topic)
    t.join_sync(classic, topic)
    body = t.call(77, v, group_ids=[group, missing, classic], include_authorized_operations=True)
    found = {g.group_id: g for g in body.groups}  # (Kafka answers in its coordinators' order)
    g = found[group]
    assert (g.error_code, g.group_state, g.group_epoch, g.assignment_epoch, g.assignor_name) == (
        E.none, "Stable", epoch, epoch, "simple"), g
    assert g.authorized_operations & (1 << READ | 1 << DESCRIBE | 1 << DELETE) == (1 << READ | 1 << DESCRIBE | 1 << DELETE)
    (m,) = g.members
    assert (m.member_id, m.member_epoch, m.client_id, m.client_host, m.rack_id, tuple(m.subscribed_topic_names)) == (
        member, epoch, CLIENT_ID, "/127.0.0.1", None, (topic,)), m
    assert [(a.topic_id, a.topic_name, sorted(a.partitions)) for a in m.assignment.topic_partitions] == [
        (topic_id, topic, list(range(PARTITIONS)))]
    assert found[missing].error_code == E.group_id_not_found
    assert found[classic].error_code == E.group_id_not_found  # not a share group
    share_heartbeat(t, group, member, -1)
    (g,) = t.call(77, v, group_ids=[group], include_authorized_operations=False).groups
    assert (g.error_code, g.group_state, g.members) == (E.none, "Empty", ())
    assert g.group_epoch > epoch


@case(78)
def share_fetch(t: Table, v: int) -> None:
    topic, topic_id, p = t.partition()
    group = t.name(f"share-fetch-v{v}")
    share_earliest(t, group)
    base = t.produce(topic, p, batch(b"a", b"b", b"c"))
    member, _, _ = share_join(t, group, topic)
    if v >= 2:  # the record_limit acquire mode: no more than max_records, though the batch holds three
        body, epoch = share_acquire(t, v, group, member, topic_id, p, max_records=1, share_acquire_mode=1)
        assert acquired(body) == [(base, base, 1)]
        rest = share_fetch_call(t, v, group, member, epoch, topic_id, p, max_records=2, share_acquire_mode=1)
        assert acquired(rest) == [(base + 1, base + 2, 1)]
        epoch += 1
    else:
        body, epoch = share_acquire(t, v, group, member, topic_id, p)
        # first delivery: all three acquired by this member, delivered once
        assert acquired(body) == [(base, base + 2, 1)]
    (part,) = body.responses[0].partitions  # the records themselves come with them
    assert part.error_code == E.none
    assert [r.value for b in iter_batches(bytes(part.records)) for r in b.records] == [b"a", b"b", b"c"]
    # a second member gets nothing of what the first holds
    other, _, _ = share_join(t, group, topic)
    assert acquired(share_fetch_call(t, v, group, other, 0, topic_id, p)) == []
    # ACCEPT the first, RELEASE the other two: they come back, delivered a second time
    body = share_fetch_call(t, v, group, member, epoch, topic_id, p, [(base, base + 2, [ACCEPT, RELEASE, RELEASE])])
    assert acquired(body) == [(base + 1, base + 2, 2)]
    assert body.responses[0].partitions[0].acknowledge_error_code == E.none
    assert share_fetch_call(t, v, group, member, epoch + 5, topic_id, p).error_code == E.invalid_share_session_epoch
    body = share_fetch_call(t, v, group, "not-a-session", 3, topic_id, p)
    assert body.error_code == E.share_session_not_found


@case(79)
def share_acknowledge(t: Table, v: int) -> None:
    topic, topic_id, p = t.partition()
    group = t.name(f"share-ack-v{v}")
    share_earliest(t, group)
    base = t.produce(topic, p, batch(b"a", b"b", b"c"))
    member, _, _ = share_join(t, group, topic)
    body, epoch = share_acquire(t, 1, group, member, topic_id, p)
    assert acquired(body) == [(base, base + 2, 1)]

    def ack(first: int, last: int, types: list[int], **fields: Any) -> E:
        nonlocal epoch
        part = share_ack(t, v, group, member, epoch, topic_id, p, first, last, types, **fields)
        epoch += 1
        return part.error_code  # type: ignore[no-any-return]

    if v >= 2:  # KIP-1222's RENEW: the member keeps its records for another lock duration, then acknowledges them
        assert ack(base, base + 2, [RENEW]) == E.invalid_request  # a RENEW in a request not flagged is_renew_ack
        assert ack(base, base + 2, [RENEW], is_renew_ack=True) == E.none
    assert ack(base + 1, base + 1, [ACCEPT]) == E.none
    assert ack(base + 1, base + 1, [ACCEPT]) == E.invalid_record_state  # acknowledged already
    assert ack(base, base, [ACCEPT]) == E.none
    assert ack(base + 2, base + 2, [REJECT]) == E.none  # rejected: never delivered again
    assert share_offsets(t, group, topic, p).topics[0].partitions[0].lag == 0
    assert t.call(79, v, group_id=group, member_id=member, share_session_epoch=0, topics=[]).error_code == (
        E.invalid_share_session_epoch)  # a session opens with ShareFetch only


@case(90)
def describe_share_group_offsets(t: Table, v: int) -> None:
    topic, topic_id, p = t.partition()
    group = t.name(f"share-offsets-v{v}")
    share_earliest(t, group)
    base = t.produce(topic, p, batch(b"a", b"b", b"c"))
    member, _, _ = share_join(t, group, topic)
    _, epoch = share_acquire(t, 1, group, member, topic_id, p)
    # the first ACCEPTed (the start offset moves past it), the other two RELEASEd (delivered again later)
    assert share_ack(t, 1, group, member, epoch, topic_id, p, base, base, [ACCEPT]).error_code == E.none
    assert share_ack(t, 1, group, member, epoch + 1, topic_id, p, base + 1, base + 2, [RELEASE]).error_code == E.none
    none = t.name("share-none")
    body = t.call(90, v, groups=[{"group_id": group, "topics": [{"topic_name": topic, "partitions": [p]}]},
                                 {"group_id": none, "topics": [{"topic_name": topic, "partitions": [p]}]}])
    found = {g.group_id: g for g in body.groups}
    g = found[group]
    assert (g.error_code, [(x.topic_name, x.topic_id) for x in g.topics]) == (E.none, [(topic, topic_id)])
    (part,) = g.topics[0].partitions
    assert (part.error_code, part.partition_index, part.start_offset) == (E.none, p, base + 1)
    if v >= 1:
        assert part.lag == 2  # two records not yet consumed
    # a group never heard of has no offsets: -1 for each partition asked about, no error (Kafka's answer)
    nothing = found[none]
    assert nothing.error_code == E.none, nothing
    assert [(x.partition_index, x.start_offset) for x in nothing.topics[0].partitions] == [(p, -1)]
    (nothing,) = t.call(90, v, groups=[{"group_id": none, "topics": None}]).groups
    assert (nothing.error_code, nothing.topics) == (E.none, ())
    # a topic that does not exist: -1 too, no error; Kafka answers the unknown topic last (a partition
    # beyond the topic's is left out: Kafka 4.3.1 never answers it when it also lacks a state of the group)
    (unknown,) = t.call(90, v, groups=[{"group_id": group, "topics": [
        {"topic_name": UNKNOWN_TOPIC, "partitions": [0]}, {"topic_name": topic, "partitions": [p]}]}]).groups
    assert [(x.topic_name, [(y.partition_index, y.start_offset, y.error_code) for y in x.partitions])
            for x in unknown.topics] == [(topic, [(p, base + 1, E.none)]), (UNKNOWN_TOPIC, [(0, -1, E.none)])]
    # every topic of the group: null topics
    (every,) = t.call(90, v, groups=[{"group_id": group, "topics": None}]).groups
    assert [(x.topic_name, [y.partition_index for y in x.partitions if y.start_offset >= 0]) for x in every.topics] \
        == [(topic, [p])]


@case(91)
def alter_share_group_offsets(t: Table, v: int) -> None:
    topic, topic_id, p = t.partition()
    group, classic = t.name(f"share-alter-v{v}"), t.name("share-alter-classic")
    t.produce(topic, p, batch(b"a", b"b", b"c"))
    member, _, _ = share_join(t, group, topic)

    def alter(offset: int, name: str = topic, g: str = group) -> Any:
        return t.call(91, v, group_id=g, topics=[{"topic_name": name, "partitions": [
            {"partition_index": p, "start_offset": offset}]}])

    assert alter(1).error_code == E.non_empty_group  # offsets move only in an empty group
    share_heartbeat(t, group, member, -1)
    body = alter(1)
    assert (body.error_code, [(r.topic_name, r.topic_id, [(x.partition_index, x.error_code) for x in r.partitions])
                              for r in body.responses]) == (E.none, [(topic, topic_id, [(p, E.none)])])
    assert share_offsets(t, group, topic, p).topics[0].partitions[0].start_offset == 1
    body = alter(0, UNKNOWN_TOPIC)
    assert [(x.partition_index, x.error_code) for x in body.responses[0].partitions] == [
        (p, E.unknown_topic_or_partition)]
    t.join_sync(classic, topic)
    assert alter(0, topic, classic).error_code == E.group_id_not_found  # not a share group
    # a member joining now gets the records from offset 1 on
    member, _, _ = share_join(t, group, topic)
    body, _ = share_acquire(t, 1, group, member, topic_id, p)
    assert acquired(body) == [(1, 2, 1)]


@case(92)
def delete_share_group_offsets(t: Table, v: int) -> None:
    topic, topic_id, p = t.partition()
    group = t.name(f"share-delete-v{v}")
    t.call(91, 0, group_id=group, topics=[{"topic_name": topic, "partitions": [{"partition_index": p, "start_offset": 0}]}])
    body = t.call(92, v, group_id=group, topics=[{"topic_name": topic}, {"topic_name": UNKNOWN_TOPIC}])
    assert body.error_code == E.none, body
    assert [(r.topic_name, r.error_code) for r in body.responses] == [
        (topic, E.none), (UNKNOWN_TOPIC, E.unknown_topic_or_partition)]
    assert body.responses[0].topic_id == topic_id
    described = t.call(90, 1, groups=[{"group_id": group, "topics": None}])
    assert list(described.groups[0].topics) == []
    assert t.call(92, v, group_id=t.name("share-none"), topics=[{"topic_name": topic}]).error_code == E.group_id_not_found
    member, _, _ = share_join(t, group, topic)
    assert t.call(92, v, group_id=group, topics=[{"topic_name": topic}]).error_code == E.non_empty_group
    share_heartbeat(t, group, member, -1)


# the share coordinator's inter-broker RPCs: CLUSTER_ACTION on the cluster (the table's super users have it)


def share_state_rpc(t: Table, w: Wire | None, api_key: int, v: int, group: str, topic_id: uuid.UUID,
                    partition: dict[str, Any]) -> Any:
    """One share coordinator RPC about one share partition: the partition's result. Asked again while the
    share coordinator is not ready, after a FindCoordinator of the share key (which makes a fresh Kafka
    create __share_group_state), as Kafka's persister does."""
    def ask() -> Any:
        body = (w or t.wire).call(api_key, v, group_id=group, topics=[{"topic_id": topic_id, "partitions": [partition]}])
        result = body.results[0].partitions[0]
        if result.error_code in RETRIABLE:
            t.call(10, 6, key_type=2, coordinator_keys=[f"{group}:{kafka_uuid(topic_id)}:{partition['partition']}"])
        return result

    return t.eventually(ask, lambda r: r.error_code not in RETRIABLE, timeout=30)


def share_state_write(t: Table, v: int, group: str, topic_id: uuid.UUID, p: int, state_epoch: int,
                      start: int, w: Wire | None = None, leader_epoch: int = 0) -> Any:
    partition = {"partition": p, "state_epoch": state_epoch, "leader_epoch": leader_epoch, "start_offset": start,
                 "state_batches": [{"first_offset": start, "last_offset": start + 1, "delivery_state": 0,
                                    "delivery_count": 1}]}
    if v >= 1:
        partition["delivery_complete_count"] = 0
    return share_state_rpc(t, w, 85, v, group, topic_id, partition).error_code


def share_state_read(t: Table, group: str, topic_id: uuid.UUID, p: int, v: int = 0, w: Wire | None = None,
                     leader_epoch: int = 0) -> Any:
    return share_state_rpc(t, w, 84, v, group, topic_id, {"partition": p, "leader_epoch": leader_epoch})


def share_state_initialized(t: Table, topic_id: uuid.UUID, p: int, state_epoch: int = 1, start: int = 0) -> str:
    """A group whose state of the partition InitializeShareGroupState made (no member, no leader read it)."""
    group = t.name("share-initialized")
    assert share_state_rpc(t, None, 83, 0, group, topic_id, {
        "partition": p, "state_epoch": state_epoch, "start_offset": start}).error_code == E.none
    return group


def share_state_of(t: Table, topic: str) -> tuple[str, uuid.UUID, int, int]:
    """A share group whose state of one partition of `topic` the group coordinator has initialized (a member
    was assigned it), the member gone: (group, topic id, partition, state epoch)."""
    topic_id = t.topic_id(topic)
    group = t.name("share-state")
    member, _, _ = share_join(t, group, topic)
    share_heartbeat(t, group, member, -1)
    state = share_state_read(t, group, topic_id, 0)
    assert (state.error_code, state.start_offset, state.state_batches) == (E.none, -1, ()), state
    return group, topic_id, 0, state.state_epoch


def not_super_user(t: Table) -> Wire:
    """A connection logged in as a SCRAM user who is no super user and has no ACL."""
    user, password = t.name("plain-user"), "plain-secret-5c2a"
    upsert_scram_user(t, user, password)
    t.eventually(lambda: logs_in(t, user, password), bool)
    w = sasl_wire(t)
    assert scram_login(w, user, password).error_code == E.none
    return w


def share_state_topic(t: Table) -> str:
    name = t.name("share-state-topic")
    t.create_topic(name, 1)
    return name


@case(84)
def read_share_group_state(t: Table, v: int) -> None:
    _, topic_id, p = t.partition()
    # a share partition whose state was never initialized (InitializeShareGroupState) is no read's
    assert share_state_read(t, t.name("share-uninitialized"), topic_id, p, v).error_code == E.invalid_request
    group, topic_id, p, state_epoch = share_state_of(t, share_state_topic(t))
    assert share_state_write(t, 1, group, topic_id, p, state_epoch, 7) == E.none
    got = share_state_read(t, group, topic_id, p, v)
    assert (got.error_code, got.state_epoch, got.start_offset) == (E.none, state_epoch, 7)
    assert [(b.first_offset, b.last_offset, b.delivery_state, b.delivery_count) for b in got.state_batches] == [
        (7, 8, 0, 1)]
    w = not_super_user(t)
    try:
        assert share_state_read(t, group, topic_id, p, v, w).error_code == E.cluster_authorization_failed
    finally:
        w.close()
    # a share partition leader's epoch: a newer one is kept, an older one fenced, -1 checks nothing
    fenced = share_state_initialized(t, topic_id, p)
    assert share_state_rpc(t, None, 84, v, fenced, topic_id, {"partition": p, "leader_epoch": 4}).error_code == E.none
    assert share_state_rpc(t, None, 84, v, fenced, topic_id, {"partition": p, "leader_epoch": 2}).error_code == (
        E.fenced_leader_epoch)
    assert share_state_rpc(t, None, 84, v, fenced, topic_id, {"partition": p, "leader_epoch": -1}).error_code == E.none


@case(85)
def write_share_group_state(t: Table, v: int) -> None:
    _, topic_id, p = t.partition()
    assert share_state_write(t, v, t.name("share-uninitialized"), topic_id, p, 0, 5) == E.invalid_request
    group, topic_id, p, state_epoch = share_state_of(t, share_state_topic(t))
    # the state epoch the group coordinator initialized the state with fences an older writer already
    assert share_state_write(t, v, group, topic_id, p, state_epoch - 1, 5) == E.fenced_state_epoch
    assert share_state_write(t, v, group, topic_id, p, state_epoch, 5) == E.none
    assert share_state_read(t, group, topic_id, p).start_offset == 5
    assert share_state_write(t, v, group, topic_id, p, state_epoch - 1, 9) == E.fenced_state_epoch  # an older one
    assert share_state_read(t, group, topic_id, p).start_offset == 5
    w = not_super_user(t)
    try:
        assert share_state_write(t, v, group, topic_id, p, state_epoch, 9, w) == E.cluster_authorization_failed
    finally:
        w.close()
    assert share_state_read(t, group, topic_id, p).start_offset == 5
    # a write of an older share partition leader than a read saw is FENCED_LEADER_EPOCH
    fenced = share_state_initialized(t, topic_id, p)
    assert share_state_read(t, fenced, topic_id, p, leader_epoch=3).error_code == E.none
    assert share_state_write(t, v, fenced, topic_id, p, 1, 5, leader_epoch=2) == E.fenced_leader_epoch
    assert share_state_write(t, v, fenced, topic_id, p, 1, 5, leader_epoch=3) == E.none


@case(86)
def delete_share_group_state(t: Table, v: int) -> None:
    group, topic_id, p, state_epoch = share_state_of(t, share_state_topic(t))
    assert share_state_write(t, 1, group, topic_id, p, state_epoch, 3) == E.none

    def delete(w: Wire) -> E:
        return share_state_rpc(t, w, 86, v, group, topic_id, {"partition": p}).error_code  # type: ignore[no-any-return]

    w = not_super_user(t)
    try:
        assert delete(w) == E.cluster_authorization_failed
    finally:
        w.close()
    assert share_state_read(t, group, topic_id, p).start_offset == 3
    assert delete(t.wire) == E.none
    assert share_state_read(t, group, topic_id, p).error_code == E.invalid_request  # no state any more
    assert delete(t.wire) == E.none  # nothing to delete is no error
    unknown = share_state_rpc(t, None, 86, v, group, uuid.uuid4(), {"partition": p})
    assert unknown.error_code == E.unknown_topic_or_partition  # a topic the metadata lacks


@case(83)
def initialize_share_group_state(t: Table, v: int) -> None:
    _, topic_id, p = t.partition()
    group = t.name(f"share-init-v{v}")

    def initialize(state_epoch: int, start: int, w: Wire | None = None) -> E:
        return share_state_rpc(t, w, 83, v, group, topic_id, {  # type: ignore[no-any-return]
            "partition": p, "state_epoch": state_epoch, "start_offset": start}).error_code

    assert initialize(1, 5) == E.none
    got = share_state_read(t, group, topic_id, p)
    assert (got.error_code, got.state_epoch, got.start_offset, got.state_batches) == (E.none, 1, 5, ())
    assert share_state_write(t, 1, group, topic_id, p, 1, 7) == E.none
    assert initialize(2, 3) == E.none  # a newer state epoch starts the partition's state over
    got = share_state_read(t, group, topic_id, p)
    assert (got.state_epoch, got.start_offset, got.state_batches) == (2, 3, ())
    assert initialize(1, 4) == E.fenced_state_epoch  # older than the state epoch kept
    assert share_state_read(t, group, topic_id, p).start_offset == 3
    for other_topic, other_p in ((uuid.uuid4(), p), (topic_id, PARTITIONS)):  # not in the metadata
        assert share_state_rpc(t, None, 83, v, group, other_topic, {
            "partition": other_p, "state_epoch": 5, "start_offset": 0}).error_code == E.unknown_topic_or_partition
    w = not_super_user(t)
    try:
        assert initialize(3, 0, w) == E.cluster_authorization_failed
    finally:
        w.close()


@case(87)
def read_share_group_state_summary(t: Table, v: int) -> None:
    group, topic_id, p, state_epoch = share_state_of(t, share_state_topic(t))

    def summary(g: str = group, w: Wire | None = None) -> Any:
        return share_state_rpc(t, w, 87, v, g, topic_id, {"partition": p, "leader_epoch": 0})

    assert share_state_write(t, 1, group, topic_id, p, state_epoch, 7) == E.none
    got = summary()
    assert (got.error_code, got.state_epoch, got.start_offset) == (E.none, state_epoch, 7)
    if v >= 1:
        assert got.delivery_complete_count == 0
    nothing = summary(t.name("share-uninitialized"))
    assert (nothing.error_code, nothing.state_epoch, nothing.leader_epoch, nothing.start_offset) == (E.none, 0, 0, -1)
    if v >= 1:
        assert nothing.delivery_complete_count == -1
    # the leader epoch of the latest record: a read's newer one, an initialization's 0; no summary is fenced
    fresh = share_state_initialized(t, topic_id, p, 3, 5)
    assert share_state_read(t, fresh, topic_id, p, leader_epoch=4).error_code == E.none
    got = summary(fresh)
    assert (got.error_code, got.state_epoch, got.leader_epoch, got.start_offset) == (E.none, 3, 4, 5)
    assert share_state_rpc(t, None, 83, 0, fresh, topic_id, {"partition": p, "state_epoch": 3, "start_offset": 8}
                           ).error_code == E.none
    got = summary(fresh)
    assert (got.error_code, got.state_epoch, got.leader_epoch, got.start_offset) == (E.none, 3, 0, 8)
    if v >= 1:
        assert got.delivery_complete_count == 0
    absent = share_state_rpc(t, None, 87, v, group, uuid.uuid4(), {"partition": p, "leader_epoch": 0})
    assert absent.error_code == E.unknown_topic_or_partition
    w = not_super_user(t)
    try:
        assert summary(group, w).error_code == E.cluster_authorization_failed
    finally:
        w.close()


@case(17)
def sasl_handshake(t: Table, v: int) -> None:
    # on a listener without SASL: Kafka's KafkaApis answers ILLEGAL_SASL_STATE
    assert t.call(17, v, mechanism="SCRAM-SHA-256").error_code == E.illegal_sasl_state
    w = sasl_wire(t)
    try:
        body = w.call(17, v, mechanism="GSSAPI")
        assert body.error_code == E.unsupported_sasl_mechanism, body
        assert set(body.mechanisms) == {"SCRAM-SHA-256", "SCRAM-SHA-512"}
        w.close()
        body = w.call(17, v, mechanism="SCRAM-SHA-512")
        assert (body.error_code, set(body.mechanisms)) == (E.none, {"SCRAM-SHA-256", "SCRAM-SHA-512"}), body
        sock = w.connect()
        client = ScramClient(["SCRAM-SHA-512"], SCRAM_USER, SCRAM_PASSWORD)
        if v == 0:
            # v0: the SASL tokens follow as raw size-prefixed frames, not SaslAuthenticate requests
            def exchange(token: bytes) -> bytes:
                sock.sendall(struct.pack(">i", len(token)) + token)
                (size,) = struct.unpack(">i", recv_exact(sock, 4))
                return recv_exact(sock, size)

            client.set_server_first(exchange(client.get_client_first().encode()).decode())
            client.set_server_final(exchange(client.get_client_final().encode()).decode())
            # a wrong password: no error code to send raw, the connection closes
            bad = socket.create_connection(("127.0.0.1", t.sasl_port), timeout=10)
            try:
                wrong = ScramClient(["SCRAM-SHA-512"], SCRAM_USER, "not-the-password")
                bad.sendall(encode_request(17, 0, 1, build(request_type(17, 0), mechanism="SCRAM-SHA-512")))
                (size,) = struct.unpack(">i", recv_exact(bad, 4))
                recv_exact(bad, size)
                first = wrong.get_client_first().encode()
                bad.sendall(struct.pack(">i", len(first)) + first)
                (size,) = struct.unpack(">i", recv_exact(bad, 4))
                wrong.set_server_first(recv_exact(bad, size).decode())
                final = wrong.get_client_final().encode()
                bad.sendall(struct.pack(">i", len(final)) + final)
                assert bad.recv(100) == b""
            finally:
                bad.close()
        else:
            first = w.call(36, 1, auth_bytes=client.get_client_first().encode())
            client.set_server_first(first.auth_bytes.decode())
            final = w.call(36, 1, auth_bytes=client.get_client_final().encode())
            assert final.error_code == E.none, final
            client.set_server_final(final.auth_bytes.decode())
        # logged in: a request past the login is served
        assert w.call(3, 9, topics=[], allow_auto_topic_creation=False).brokers
    finally:
        w.close()


@case(18)
def api_versions(t: Table, v: int) -> None:
    body = t.call(18, v, SOFTWARE)
    assert body.error_code == E.none
    assert {k.api_key: (k.min_version, k.max_version) for k in body.api_keys} == t.routes()
    if v >= 3:
        supported = {f.name: (f.min_version, f.max_version) for f in body.supported_features}
        finalized = {f.name: (f.min_version_level, f.max_version_level) for f in body.finalized_features}
        if v < 4:  # KAFKA-17492: before v4 a supported feature whose minimum is 0 is left out
            assert all(lo > 0 for lo, _ in supported.values()), supported
        else:
            assert {f.name for f in FEATURES} <= set(supported), supported
        for name, (lo, hi) in finalized.items():  # one level each, never 0, within what is supported
            assert lo == hi > 0 and (name not in supported or supported[name][0] <= hi <= supported[name][1])
        if not t.kafka:  # odradek's levels are server/features.py's
            assert supported == {f.name: (f.min_version, f.max_version) for f in FEATURES
                                 if v >= 4 or f.min_version > 0}, supported
            assert finalized == {f.name: (f.max_version, f.max_version) for f in FEATURES
                                 if f.max_version > 0}, finalized
        if finalized:
            assert body.finalized_features_epoch >= 0
        # KIP-511: a client software name or version Kafka's pattern refuses is INVALID_REQUEST
        for bad in ({"client_software_name": "bad name!"}, {"client_software_version": ""}):
            body = t.call(18, v, SOFTWARE, **bad)
            assert (body.error_code, body.api_keys) == (E.invalid_request, ()), bad


@case(19)
def create_topics(t: Table, v: int) -> None:
    name, dry = t.name(f"created-v{v}"), t.name(f"validated-v{v}")

    def create(topic: str, validate_only: bool = False, partitions: int = 3) -> Any:
        body = t.call(19, v, timeout=datetime.timedelta(seconds=10), validate_only=validate_only, topics=[
            {"name": topic, "num_partitions": partitions, "replication_factor": 1, "assignments": [],
             "configs": [{"name": "retention.ms", "value": "123456"}]}])
        (answer,) = body.topics
        assert answer.name == topic
        return answer

    answer = create(name)
    assert answer.error_code == E.none, answer
    if v >= 5:
        assert (answer.num_partitions, answer.replication_factor) == (3, 1)
        configs = {c.name: c.value for c in answer.configs}
        assert configs["retention.ms"] == "123456"
    if v >= 7:
        assert answer.topic_id == t.topic_id(name)
    assert t.eventually(lambda: t.partitions(name), lambda n: n is not None) == 3
    assert create(name).error_code == E.topic_already_exists
    assert create(dry, validate_only=True).error_code == E.none
    assert t.metadata(dry).topics[0].error_code == E.unknown_topic_or_partition
    assert create(t.name("bad name!")).error_code == E.invalid_topic_exception
    assert create(t.name("no-partitions"), partitions=0).error_code == E.invalid_partitions


@case(20)
def delete_topics(t: Table, v: int) -> None:
    name = t.name(f"deleted-v{v}")
    topic_id = t.create_topic(name)

    def delete(topic: str | None, tid: uuid.UUID | None = None) -> Any:
        if v >= 6:
            body = t.call(20, v, timeout=datetime.timedelta(seconds=10),
                          topics=[{"name": None if tid else topic, "topic_id": tid}])
        else:
            body = t.call(20, v, timeout=datetime.timedelta(seconds=10), topic_names=[topic])
        (answer,) = body.responses
        return answer

    answer = delete(name, topic_id if v >= 6 else None)
    assert (answer.name, answer.error_code) == (name, E.none), answer
    if v >= 6:
        assert answer.topic_id == topic_id
    t.eventually(lambda: t.partitions(name), lambda n: n is None)
    assert delete(UNKNOWN_TOPIC).error_code == E.unknown_topic_or_partition
    if v >= 6:
        assert delete(None, uuid.uuid4()).error_code == E.unknown_topic_id


@case(21)
def delete_records(t: Table, v: int) -> None:
    topic, _, p = t.partition()
    for value in (b"0", b"1", b"2", b"3"):  # a batch each: a fetch returns whole batches
        t.produce(topic, p, batch(value))

    def delete(offset: int, partition: int = p) -> Any:
        body = t.call(21, v, timeout=datetime.timedelta(seconds=10), topics=[
            {"name": topic, "partitions": [{"partition_index": partition, "offset": offset}]}])
        (part,) = body.topics[0].partitions
        return part

    part = delete(2)
    assert (part.partition_index, part.error_code, part.low_watermark) == (p, E.none, 2)
    assert t.list_offset(topic, p, -2).offset == 2
    assert [r.offset for r in t.records(topic, p, 2)] == [2, 3]
    assert delete(9).error_code == E.offset_out_of_range
    part = delete(-1)  # -1: up to the high watermark
    assert (part.error_code, part.low_watermark) == (E.none, 4)
    assert delete(0, PARTITIONS).error_code == E.unknown_topic_or_partition


@case(22)
def init_producer_id(t: Table, v: int) -> None:
    def init(txn: str | None, pid: int = -1, epoch: int = -1, timeout_ms: int = TXN_TIMEOUT_MS) -> Any:
        return t.call(22, v, transactional_id=txn, transaction_timeout=datetime.timedelta(milliseconds=timeout_ms),
                      producer_id=pid, producer_epoch=epoch, enable2_pc=False, keep_prepared_txn=False)

    first, second = init(None), init(None)
    for body in (first, second):
        assert (body.error_code, body.producer_epoch) == (E.none, 0), body
        assert body.producer_id >= 0
    assert first.producer_id != second.producer_id  # idempotent producers each get their own id
    txn = t.name(f"init-v{v}")
    one = init(txn)
    assert one.error_code == E.none and one.producer_id >= 0
    again = init(txn)  # the same transactional id: same producer id, the epoch bumped (fencing)
    assert (again.error_code, again.producer_id, again.producer_epoch) == (E.none, one.producer_id,
                                                                            one.producer_epoch + 1)
    if v >= 3:  # KIP-360: a producer resuming with its current id and epoch
        resumed = init(txn, again.producer_id, again.producer_epoch)
        assert (resumed.error_code, resumed.producer_id, resumed.producer_epoch) == (
            E.none, one.producer_id, again.producer_epoch + 1)
        # the same request again: a retry whose answer was lost, answered with the same epoch
        retried = init(txn, again.producer_id, again.producer_epoch)
        assert (retried.error_code, retried.producer_epoch) == (E.none, resumed.producer_epoch)
        # an older epoch: a zombie, fenced (PRODUCER_FENCED from v4, KIP-588)
        assert init(txn, one.producer_id, one.producer_epoch).error_code == (
            E.producer_fenced if v >= 4 else E.invalid_producer_epoch)
    if v >= 6:
        assert (again.ongoing_txn_producer_id, again.ongoing_txn_producer_epoch) == (-1, -1)
        # KIP-939's two-phase commit, with transaction.two.phase.commit.enable off (the default)
        body = t.call(22, v, transactional_id=txn, transaction_timeout=datetime.timedelta(milliseconds=TXN_TIMEOUT_MS),
                      producer_id=-1, producer_epoch=-1, enable2_pc=True, keep_prepared_txn=False)
        assert body.error_code == E.transactional_id_authorization_failed, body
    assert init(t.name("too-long"), timeout_ms=24 * 3600 * 1000).error_code == E.invalid_transaction_timeout


@case(23)
def offset_for_leader_epoch(t: Table, v: int) -> None:
    topic, _, p = t.partition()
    t.produce(topic, p, batch(b"a", b"b"))
    epoch = t.leader_epoch(topic, p)

    def ask(leader_epoch: int, current: int = -1, name: str = topic) -> Any:
        body = t.call(23, v, replica_id=-1, topics=[{"topic": name, "partitions": [
            {"partition": p, "current_leader_epoch": current, "leader_epoch": leader_epoch}]}])
        (answer,) = body.topics
        assert answer.topic == name
        return answer.partitions[0]

    part = ask(epoch)
    assert (part.error_code, part.leader_epoch, part.end_offset) == (E.none, epoch, 2), part
    assert ask(epoch, current=epoch).error_code == E.none
    assert ask(epoch, current=epoch + 1).error_code == E.unknown_leader_epoch
    assert ask(epoch, name=UNKNOWN_TOPIC).error_code == E.unknown_topic_or_partition


@case(24)
def add_partitions_to_txn(t: Table, v: int) -> None:
    topic, _, p = t.partition()
    txn = t.name(f"add-partitions-v{v}")
    pid, epoch = t.init_producer(txn)
    if v >= 4:  # the broker-to-coordinator form: several transactions, verify_only
        def add(verify_only: bool) -> Any:
            body = t.call(24, v, transactions=[{"transactional_id": txn, "producer_id": pid, "producer_epoch": epoch,
                                                "verify_only": verify_only,
                                                "topics": [{"name": topic, "partitions": [p]}]}])
            assert body.error_code == E.none
            (result,) = body.results_by_transaction
            assert result.transactional_id == txn
            return {x.partition_error_code for r in result.topic_results for x in r.results_by_partition}

        assert add(verify_only=True) != {E.none}  # not in the transaction yet
        assert add(verify_only=False) == {E.none}
        assert add(verify_only=True) == {E.none}
    else:
        def add_v3(producer_epoch: int) -> set[E]:
            body = t.call(24, v, v3_and_below_transactional_id=txn, v3_and_below_producer_id=pid,
                          v3_and_below_producer_epoch=producer_epoch,
                          v3_and_below_topics=[{"name": topic, "partitions": [p]}])
            (answer,) = body.results_by_topic_v3_and_below
            assert answer.name == topic
            return {x.partition_error_code for x in answer.results_by_partition}

        assert add_v3(epoch + 1) == {E.producer_fenced if v >= 2 else E.invalid_producer_epoch}
        assert add_v3(epoch) == {E.none}
    state = t.txn_state(txn)
    assert state.transaction_state == "Ongoing"
    assert [(x.topic, x.partitions) for x in state.topics] == [(topic, (p,))]
    t.end_txn(txn, pid, epoch, commit=False)


@case(25)
def add_offsets_to_txn(t: Table, v: int) -> None:
    txn, group = t.name(f"add-offsets-v{v}"), t.name(f"txn-group-v{v}")
    pid, epoch = t.init_producer(txn)
    body = t.call(25, v, transactional_id=txn, producer_id=pid, producer_epoch=epoch + 1, group_id=group)
    assert body.error_code == (E.producer_fenced if v >= 2 else E.invalid_producer_epoch), body
    body = t.call(25, v, transactional_id=txn, producer_id=pid, producer_epoch=epoch, group_id=group)
    assert body.error_code == E.none, body
    state = t.txn_state(txn)
    assert state.transaction_state == "Ongoing"
    assert [x.topic for x in state.topics] == ["__consumer_offsets"]  # the group's offsets partition joined
    t.end_txn(txn, pid, epoch, commit=False)


@case(26)
def end_txn(t: Table, v: int) -> None:
    topic, _, p = t.partition()
    txn = t.name(f"end-v{v}")
    pid, epoch = t.init_producer(txn, version=t.top(22))
    if v >= 5:  # KIP-890 part 2: Produce v12+ adds the partition itself
        assert t.supports(0, 12), "EndTxn v5 (transactions v2) is advertised without Produce v12"
        t.produce(topic, p, txn_batch(pid, epoch, b"committed"), transactional_id=txn, version=12)
    else:
        t.add_partitions(txn, pid, epoch, topic, p)
        t.produce(topic, p, txn_batch(pid, epoch, b"committed"), transactional_id=txn)
    body = t.call(26, v, transactional_id=txn, producer_id=pid, producer_epoch=epoch, committed=True)
    assert body.error_code == E.none, body
    if v >= 5:  # the epoch is bumped at the end of every transaction
        assert (body.producer_id, body.producer_epoch) == (pid, epoch + 1)
    t.wait_txn_state(txn, "CompleteCommit")
    t.wait_stable(topic, p, 2)  # the record and the commit marker
    assert [r.value for r in t.records(topic, p)] == [b"committed"]
    assert t.fetch(topic, p, isolation_level=1).aborted_transactions in ((), None)
    # a commit of a transaction that never began
    idle = t.name(f"end-idle-v{v}")
    idle_pid, idle_epoch = t.init_producer(idle, version=t.top(22))
    body = t.call(26, v, transactional_id=idle, producer_id=idle_pid, producer_epoch=idle_epoch, committed=True)
    assert body.error_code == E.invalid_txn_state, body


@case(27)
def write_txn_markers(t: Table, v: int) -> None:
    topic, _, p = t.partition()
    txn = t.name(f"markers-v{v}")
    pid, epoch = t.init_producer(txn)
    t.add_partitions(txn, pid, epoch, topic, p)
    t.produce(topic, p, txn_batch(pid, epoch, b"aborted"), transactional_id=txn)
    assert t.fetch(topic, p, isolation_level=1).last_stable_offset == 0  # held back by the open transaction
    body = t.call(27, v, markers=[{"producer_id": pid, "producer_epoch": epoch, "transaction_result": False,
                                   "coordinator_epoch": 0, "transaction_version": 1,
                                   "topics": [{"name": topic, "partition_indexes": [p]}]}])
    (marker,) = body.markers
    assert marker.producer_id == pid
    assert [(x.name, [(y.partition_index, y.error_code) for y in x.partitions]) for x in marker.topics] == [
        (topic, [(p, E.none)])]
    part = t.fetch(topic, p, isolation_level=1)
    assert (part.high_watermark, part.last_stable_offset) == (2, 2)  # the record and the abort marker
    assert [(a.producer_id, a.first_offset) for a in part.aborted_transactions] == [(pid, 0)]


@case(28)
def txn_offset_commit(t: Table, v: int) -> None:
    topic, _, p = t.partition()
    txn, group = t.name(f"txn-commit-v{v}"), t.name(f"txn-commit-group-v{v}")
    pid, epoch = t.init_producer(txn)
    body = t.call(25, 3, transactional_id=txn, producer_id=pid, producer_epoch=epoch, group_id=group)
    assert body.error_code == E.none, body
    body = t.call(28, v, transactional_id=txn, group_id=group, producer_id=pid, producer_epoch=epoch,
                  generation_id=-1, member_id="", group_instance_id=None,
                  topics=[{"name": topic, "partitions": [{"partition_index": p, "committed_offset": 11,
                                                          "committed_leader_epoch": -1,
                                                          "committed_metadata": "in-txn"}]}])
    assert [(x.name, [(y.partition_index, y.error_code) for y in x.partitions]) for x in body.topics] == [
        (topic, [(p, E.none)])]
    pending = t.call(9, 7, group_id=group, require_stable=True, topics=[{"name": topic, "partition_indexes": [p]}])
    assert pending.topics[0].partitions[0].error_code == E.unstable_offset_commit  # KIP-447
    assert t.committed(group, topic, p).committed_offset == -1
    t.end_txn(txn, pid, epoch, commit=True)
    t.wait_txn_state(txn, "CompleteCommit")
    got = t.committed(group, topic, p)
    assert (got.committed_offset, got.metadata) == (11, "in-txn")


@case(29)
def describe_acls(t: Table, v: int) -> None:
    acl_roundtrip(t, describe_version=v)


@case(30)
def create_acls(t: Table, v: int) -> None:
    acl_roundtrip(t, create_version=v)


@case(31)
def delete_acls(t: Table, v: int) -> None:
    acl_roundtrip(t, delete_version=v)


def acl_roundtrip(t: Table, create_version: int = 3, describe_version: int = 3, delete_version: int = 3) -> None:
    """CreateAcls, DescribeAcls and DeleteAcls of one ACL (TOPIC=2, LITERAL=3, READ, ALLOW=3)."""
    resource, principal = t.name("acl-topic"), f"User:{t.name('acl-user')}"
    acl = {"resource_type": 2, "resource_name": resource, "resource_pattern_type": 3, "principal": principal,
           "host": "*", "operation": READ, "permission_type": 3}
    body = t.call(30, create_version, creations=[acl])
    assert [(r.error_code, r.error_message or None) for r in body.results] == [(E.none, None)], body
    filters = {"resource_type_filter": 2, "resource_name_filter": resource, "pattern_type_filter": 3,
               "principal_filter": None, "host_filter": None, "operation": 1, "permission_type": 1}  # ANY, ANY

    def described() -> list[tuple[Any, ...]]:
        body = t.call(29, describe_version, filters)
        assert body.error_code == E.none, body
        return [(r.resource_type, r.resource_name, r.pattern_type, a.principal, a.host, a.operation,
                 a.permission_type) for r in body.resources for a in r.acls]

    # (Kafka's broker learns of ACLs from its controller a moment after CreateAcls and DeleteAcls answer)
    t.eventually(described, lambda got: got == [(2, resource, 3, principal, "*", READ, 3)])
    body = t.call(31, delete_version, filters=[filters])
    (result,) = body.filter_results
    assert result.error_code == E.none
    assert [(m.error_code, m.resource_name, m.principal, m.operation) for m in result.matching_acls] == [
        (E.none, resource, principal, READ)]
    t.eventually(described, lambda got: got == [])


@case(32)
def describe_configs(t: Table, v: int) -> None:
    name = t.name(f"configs-v{v}")
    t.create_topic(name, configs={"retention.ms": "86400000"})
    body = t.call(32, v, include_synonyms=True, include_documentation=True, resources=[
        {"resource_type": 2, "resource_name": name, "configuration_keys": ["retention.ms", "cleanup.policy"]},
        {"resource_type": 2, "resource_name": UNKNOWN_TOPIC, "configuration_keys": None}])
    found, missing = body.results
    assert (found.error_code, found.resource_type, found.resource_name) == (E.none, 2, name)
    configs = {c.name: c for c in found.configs}
    assert set(configs) == {"retention.ms", "cleanup.policy"}
    retention, policy = configs["retention.ms"], configs["cleanup.policy"]
    assert (retention.value, retention.config_source, retention.read_only) == ("86400000", DYNAMIC_TOPIC_CONFIG,
                                                                                False)
    assert (policy.value, policy.config_source) == ("delete", DEFAULT_CONFIG)
    assert retention.synonyms[0].name == "retention.ms" and retention.synonyms[0].value == "86400000"
    if v >= 3:
        assert retention.config_type == 5  # LONG
        assert retention.documentation and policy.documentation
        body = t.call(32, v, include_synonyms=False, include_documentation=False, resources=[
            {"resource_type": 2, "resource_name": name, "configuration_keys": ["retention.ms"]}])
        assert body.results[0].configs[0].documentation is None  # only when asked for
    assert missing.error_code == E.unknown_topic_or_partition


def topic_configs(t: Table, name: str, *keys: str) -> dict[str, tuple[str | None, int]]:
    body = t.call(32, 4, include_synonyms=False, include_documentation=False, resources=[
        {"resource_type": 2, "resource_name": name, "configuration_keys": list(keys)}])
    return {c.name: (c.value, c.config_source) for c in body.results[0].configs}


@case(33)
def alter_configs(t: Table, v: int) -> None:
    name = t.name(f"alter-v{v}")
    t.create_topic(name, configs={"cleanup.policy": "compact"})

    def alter(configs: dict[str, str], validate_only: bool = False, topic: str = name) -> Any:
        body = t.call(33, v, validate_only=validate_only, resources=[
            {"resource_type": 2, "resource_name": topic,
             "configs": [{"name": k, "value": val} for k, val in configs.items()]}])
        (answer,) = body.responses
        assert (answer.resource_type, answer.resource_name) == (2, topic)
        return answer

    assert alter({"retention.ms": "1234"}, validate_only=True).error_code == E.none
    assert topic_configs(t, name, "retention.ms")["retention.ms"][1] == DEFAULT_CONFIG
    assert alter({"retention.ms": "1234"}).error_code == E.none
    # AlterConfigs replaces the whole set: cleanup.policy is back to its default
    wanted = {"retention.ms": ("1234", DYNAMIC_TOPIC_CONFIG), "cleanup.policy": ("delete", DEFAULT_CONFIG)}
    t.eventually(lambda: topic_configs(t, name, "retention.ms", "cleanup.policy"), lambda got: got == wanted)
    assert alter({"retention.ms": "soon"}).error_code == E.invalid_config
    assert alter({"retention.ms": "1"}, topic=UNKNOWN_TOPIC).error_code == E.unknown_topic_or_partition


@case(37)
def create_partitions(t: Table, v: int) -> None:
    name = t.name(f"grown-v{v}")
    t.create_topic(name, 1)

    def grow(count: int, validate_only: bool = False) -> Any:
        body = t.call(37, v, timeout=datetime.timedelta(seconds=10), validate_only=validate_only,
                      topics=[{"name": name, "count": count, "assignments": None}])
        (answer,) = body.results
        assert answer.name == name
        return answer.error_code

    assert grow(5, validate_only=True) == E.none
    assert t.partitions(name) == 1
    assert grow(3) == E.none
    t.eventually(lambda: t.partitions(name), lambda n: n == 3)
    assert grow(2) == E.invalid_partitions


@case(42)
def delete_groups(t: Table, v: int) -> None:
    topic, _, p = t.partition()
    empty, live, missing = t.name(f"del-v{v}"), t.name(f"del-live-v{v}"), t.name("del-missing")
    t.commit(empty, topic, {p: 5})
    t.join_sync(live)
    body = t.call(42, v, groups_names=[empty, live, missing])
    assert {r.group_id: r.error_code for r in body.results} == {
        empty: E.none, live: E.non_empty_group, missing: E.group_id_not_found}
    assert t.committed(empty, topic, p).committed_offset == -1


@case(44)
def incremental_alter_configs(t: Table, v: int) -> None:
    name = t.name(f"incremental-v{v}")
    t.create_topic(name, configs={"cleanup.policy": "compact"})

    def alter(*ops: tuple[str, int, str | None]) -> Any:
        body = t.call(44, v, validate_only=False, resources=[
            {"resource_type": 2, "resource_name": name,
             "configs": [{"name": k, "config_operation": op, "value": val} for k, op, val in ops]}])
        (answer,) = body.responses
        assert (answer.resource_type, answer.resource_name) == (2, name)
        return answer.error_code

    def shows(wanted: dict[str, tuple[str | None, int]]) -> None:
        t.eventually(lambda: topic_configs(t, name, *wanted), lambda got: got == wanted)

    assert alter(("retention.ms", 0, "4321")) == E.none  # SET leaves the other configs alone
    shows({"retention.ms": ("4321", DYNAMIC_TOPIC_CONFIG), "cleanup.policy": ("compact", DYNAMIC_TOPIC_CONFIG)})
    assert alter(("cleanup.policy", 2, "delete")) == E.none  # APPEND to a list
    shows({"cleanup.policy": ("compact,delete", DYNAMIC_TOPIC_CONFIG)})
    assert alter(("retention.ms", 1, None)) == E.none  # DELETE
    shows({"retention.ms": ("604800000", DEFAULT_CONFIG)})


@case(47)
def offset_delete(t: Table, v: int) -> None:
    topic, _, p = t.partition()
    group = t.name(f"offset-delete-v{v}")
    t.commit(group, topic, {p: 9, p + 1: 10})
    body = t.call(47, v, group_id=group, topics=[{"name": topic, "partitions": [{"partition_index": p}]}])
    assert body.error_code == E.none
    assert [(x.name, [(y.partition_index, y.error_code) for y in x.partitions]) for x in body.topics] == [
        (topic, [(p, E.none)])]
    assert t.committed(group, topic, p).committed_offset == -1
    assert t.committed(group, topic, p + 1).committed_offset == 10
    body = t.call(47, v, group_id=t.name("no-group"), topics=[{"name": topic, "partitions": [{"partition_index": p}]}])
    assert body.error_code == E.group_id_not_found


@case(36)
def sasl_authenticate(t: Table, v: int) -> None:
    w = sasl_wire(t)
    try:
        final = scram_login(w, SCRAM_USER, SCRAM_PASSWORD, authenticate_version=v)
        assert (final.error_code, final.error_message or None) == (E.none, None), final
        if v >= 1:
            assert final.session_lifetime == datetime.timedelta(0)  # connections.max.reauth.ms unset
        assert w.call(3, 9, topics=[], allow_auto_topic_creation=False).brokers  # served once logged in
        w.close()
        failed = scram_login(w, SCRAM_USER, "not-the-password", authenticate_version=v)
        assert failed.error_code == E.sasl_authentication_failed, failed
        assert failed.error_message and "not-the-password" not in failed.error_message
    finally:
        w.close()


@case(50)
def describe_user_scram_credentials(t: Table, v: int) -> None:
    user = t.name("described-user")
    assert upsert_scram_user(t, user, "pw-1", mechanism=2).results[0].error_code == E.none
    body = t.eventually(lambda: t.call(50, v, users=[{"name": user}, {"name": t.name("nobody")}]),
                        lambda b: any(r.user == user and r.error_code == E.none for r in b.results))
    assert body.error_code == E.none
    found = {r.user: r for r in body.results}
    assert found[user].error_code == E.none
    assert [(c.mechanism, c.iterations) for c in found[user].credential_infos] == [(2, SCRAM_ITERATIONS)]
    (other,) = (r for r in body.results if r.user != user)
    assert other.error_code == E.resource_not_found
    every = t.call(50, v, users=None)  # null: every user
    assert {user, SCRAM_USER} <= {r.user for r in every.results}


@case(51)
def alter_user_scram_credentials(t: Table, v: int) -> None:
    user, password = t.name("altered-user"), "pw-altered-7c"
    salt = os.urandom(16)
    body = t.call(51, v, deletions=[], upsertions=[
        {"name": user, "mechanism": 1, "iterations": SCRAM_ITERATIONS, "salt": salt,
         "salted_password": salted(password, salt)}])
    assert [(r.user, r.error_code) for r in body.results] == [(user, E.none)]
    t.eventually(lambda: logs_in(t, user, password), bool)  # the new user logs in
    body = t.call(51, v, deletions=[{"name": user, "mechanism": 1}], upsertions=[])
    assert [(r.user, r.error_code) for r in body.results] == [(user, E.none)]
    t.eventually(lambda: logs_in(t, user, password), lambda ok: not ok)  # and no more
    body = t.call(51, v, deletions=[{"name": user, "mechanism": 1}], upsertions=[])
    assert [(r.user, r.error_code) for r in body.results] == [(user, E.resource_not_found)]
    body = t.call(51, v, deletions=[], upsertions=[
        {"name": user, "mechanism": 1, "iterations": 1, "salt": salt, "salted_password": salted(password, salt)}])
    assert [(r.user, r.error_code) for r in body.results] == [(user, E.unacceptable_credential)]


@case(60)
def describe_cluster(t: Table, v: int) -> None:
    body = t.call(60, v, include_cluster_authorized_operations=True, endpoint_type=1, include_fenced_brokers=True)
    assert (body.error_code, body.cluster_id, body.controller_id) == (E.none, t.cluster_id, t.node_id)
    assert [(b.broker_id, b.host, b.port) for b in body.brokers] == [(t.node_id, "127.0.0.1", t.broker.port)]
    assert body.cluster_authorized_operations & (1 << DESCRIBE) and body.cluster_authorized_operations & (1 << ALTER)
    if v >= 1:
        assert body.endpoint_type == 1
        # a broker does not answer for the controllers' endpoints (KIP-919), nor for an unknown type
        assert t.call(60, v, endpoint_type=2).error_code == E.mismatched_endpoint_type
        assert t.call(60, v, endpoint_type=9).error_code == E.unsupported_endpoint_type
    if v >= 2:
        assert [b.is_fenced for b in body.brokers] == [False]


@case(61)
def describe_producers(t: Table, v: int) -> None:
    topic, _, p = t.partition()
    pid, epoch = t.init_producer()
    t.produce(topic, p, batch(b"a", b"b", b"c", producer_id=pid, producer_epoch=epoch, base_sequence=0,
                              timestamp_ms=T0))
    body = t.call(61, v, topics=[{"name": topic, "partition_indexes": [p]},
                                 {"name": UNKNOWN_TOPIC, "partition_indexes": [0]}])
    found, missing = body.topics
    (part,) = found.partitions
    assert (found.name, part.partition_index, part.error_code) == (topic, p, E.none)
    assert [(x.producer_id, x.producer_epoch, x.last_sequence, x.last_timestamp, x.current_txn_start_offset)
            for x in part.active_producers] == [(pid, epoch, 2, T0, -1)]
    assert missing.partitions[0].error_code == E.unknown_topic_or_partition


@case(65)
def describe_transactions(t: Table, v: int) -> None:
    topic, _, p = t.partition()
    txn = t.name(f"described-txn-v{v}")
    pid, epoch = t.init_producer(txn)
    t.add_partitions(txn, pid, epoch, topic, p)
    missing = t.name("no-txn")
    body = t.call(65, v, transactional_ids=[txn, missing])
    found = {s.transactional_id: s for s in body.transaction_states}
    s = found[txn]
    assert (s.error_code, s.transaction_state, s.producer_id, s.producer_epoch) == (E.none, "Ongoing", pid, epoch)
    assert s.transaction_timeout == datetime.timedelta(milliseconds=TXN_TIMEOUT_MS)
    assert abs(ms(s.transaction_start_time) - time.time() * 1000) < 60_000
    assert [(x.topic, x.partitions) for x in s.topics] == [(topic, (p,))]
    assert found[missing].error_code == E.transactional_id_not_found
    t.end_txn(txn, pid, epoch, commit=False)


@case(66)
def list_transactions(t: Table, v: int) -> None:
    topic, _, p = t.partition()
    prefix = t.name(f"listed-v{v}")
    idle, busy = f"{prefix}-idle", f"{prefix}-busy"
    idle_pid, _ = t.init_producer(idle)
    busy_pid, busy_epoch = t.init_producer(busy)
    t.add_partitions(busy, busy_pid, busy_epoch, topic, p)

    def listed(**filters: Any) -> dict[str, tuple[int, str]]:
        body = t.call(66, v, **{"state_filters": [], "producer_id_filters": [], "duration_filter": -1, **filters})
        assert body.error_code == E.none, body
        return {s.transactional_id: (s.producer_id, s.transaction_state) for s in body.transaction_states
                if s.transactional_id.startswith(prefix)}

    assert listed() == {idle: (idle_pid, "Empty"), busy: (busy_pid, "Ongoing")}
    assert listed(state_filters=["Ongoing"]) == {busy: (busy_pid, "Ongoing")}
    assert listed(producer_id_filters=[idle_pid]) == {idle: (idle_pid, "Empty")}
    body = t.call(66, v, state_filters=["Sleeping"], producer_id_filters=[])
    assert body.unknown_state_filters == ("Sleeping",)
    if v >= 1:
        # only transactions running longer than the duration; Kafka's Empty ones have no start (-1)
        # and so pass any duration
        assert listed(duration_filter=3_600_000) == {idle: (idle_pid, "Empty")}
    if v >= 2:  # KIP-1152: a regular expression on the transactional id
        assert listed(transactional_id_pattern=f"^{prefix}-i.*") == {idle: (idle_pid, "Empty")}
    t.end_txn(busy, busy_pid, busy_epoch, commit=False)


@case(35)
def describe_log_dirs(t: Table, v: int) -> None:
    topic, _, p = t.partition()
    t.produce(topic, p, batch(b"x" * 100))
    body = t.call(35, v, topics=[{"topic": topic, "partitions": [p]}, {"topic": UNKNOWN_TOPIC, "partitions": [0]}])
    if v >= 3:
        assert body.error_code == E.none
    (result,) = body.results  # the broker's one log dir
    assert result.error_code == E.none and result.log_dir.startswith("/"), result
    assert [(x.name, [(y.partition_index, y.offset_lag, y.is_future_key) for y in x.partitions])
            for x in result.topics] == [(topic, [(p, 0, False)])]  # an unknown topic is left out
    assert result.topics[0].partitions[0].partition_size >= 100
    if v >= 4:
        assert 0 <= result.usable_bytes <= result.total_bytes and result.total_bytes > 0
    if v >= 5:
        assert result.is_cordoned is False
    every = t.call(35, v, topics=None).results[0]  # null: every partition
    assert (topic, p) in {(x.name, y.partition_index) for x in every.topics for y in x.partitions}


@case(43)
def elect_leaders(t: Table, v: int) -> None:
    topic, _, p = t.partition()

    def elect(election_type: int) -> dict[tuple[str, int], E]:
        body = t.call(43, v, election_type=election_type, timeout=datetime.timedelta(seconds=10), topic_partitions=[
            {"topic": topic, "partitions": [p]}, {"topic": UNKNOWN_TOPIC, "partitions": [0]}])
        if v >= 1:
            assert body.error_code == E.none
        return {(r.topic, x.partition_id): x.error_code for r in body.replica_election_results
                for x in r.partition_result}

    # the preferred replica leads already: nothing to elect
    assert elect(0) == {(topic, p): E.election_not_needed, (UNKNOWN_TOPIC, 0): E.unknown_topic_or_partition}
    if v >= 1:  # unclean: the leader is alive
        assert elect(1) == {(topic, p): E.election_not_needed, (UNKNOWN_TOPIC, 0): E.unknown_topic_or_partition}


@case(45)
def alter_partition_reassignments(t: Table, v: int) -> None:
    topic, _, p = t.partition()

    def alter(replicas: list[int] | None, name: str = topic) -> E:
        body = t.call(45, v, timeout=datetime.timedelta(seconds=10), allow_replication_factor_change=True,
                      topics=[{"name": name, "partitions": [{"partition_index": p, "replicas": replicas}]}])
        assert body.error_code == E.none, body
        if v >= 1:
            assert body.allow_replication_factor_change is True
        (answer,) = body.responses
        (part,) = answer.partitions
        assert (answer.name, part.partition_index) == (name, p)
        return part.error_code  # type: ignore[no-any-return]

    assert alter([t.node_id]) == E.none  # the replicas it has: done at once
    assert alter(None) == E.no_reassignment_in_progress  # cancelling what is not going on
    assert alter([t.node_id, 999]) == E.invalid_replica_assignment  # no broker 999
    assert alter([t.node_id], UNKNOWN_TOPIC) == E.unknown_topic_or_partition
    listed = t.call(46, 0, timeout=datetime.timedelta(seconds=10), topics=None)
    assert topic not in {x.name for x in listed.topics}


@case(46)
def list_partition_reassignments(t: Table, v: int) -> None:
    topic, _, p = t.partition()
    body = t.call(46, v, timeout=datetime.timedelta(seconds=10), topics=None)
    assert body.error_code == E.none
    assert topic not in {x.name for x in body.topics}  # nothing is moving
    body = t.call(46, v, timeout=datetime.timedelta(seconds=10), topics=[
        {"name": topic, "partition_indexes": [p]}, {"name": UNKNOWN_TOPIC, "partition_indexes": [0]}])
    assert (body.error_code, body.topics) == (E.none, ())


@case(75)
def describe_topic_partitions(t: Table, v: int) -> None:
    name = t.name(f"paged-v{v}")
    topic_id = t.create_topic(name, 5)

    def describe(limit: int, cursor: dict[str, Any] | None = None) -> Any:
        return t.call(75, v, topics=[{"name": name}, {"name": UNKNOWN_TOPIC}], response_partition_limit=limit,
                      cursor=cursor)

    body = describe(2000)
    found = {x.name: x for x in body.topics}
    mine = found[name]
    assert (mine.error_code, mine.topic_id, mine.is_internal) == (E.none, topic_id, False)
    assert [(x.partition_index, x.error_code, x.leader_id, x.replica_nodes, x.isr_nodes)
            for x in mine.partitions] == [(i, E.none, t.node_id, (t.node_id,), (t.node_id,)) for i in range(5)]
    assert mine.topic_authorized_operations & (1 << DESCRIBE)
    assert found[UNKNOWN_TOPIC].error_code == E.unknown_topic_or_partition
    assert body.next_cursor is None
    # paging: two partitions at a time, the cursor naming where the next page starts
    seen: list[int] = []
    cursor = {"topic_name": name, "partition_index": 0}
    for _ in range(5):
        page = t.call(75, v, topics=[{"name": name}], response_partition_limit=2, cursor=cursor)
        seen += [x.partition_index for x in page.topics[0].partitions]
        if page.next_cursor is None:
            break
        assert page.next_cursor.topic_name == name
        cursor = {"topic_name": name, "partition_index": page.next_cursor.partition_index}
    assert seen == [0, 1, 2, 3, 4]


# -- the table ---------------------------------------------------------------------------------


def table_entries() -> list[tuple[int, int]]:
    """(api key, version) for every version kio has of every API routed or with a case, plus the
    routed versions kio has no schema for (Kafka's pre-2.1 versions odradek keeps for old clients)."""
    entries = set()
    for key in set(ROUTES) | set(CASES):
        entries |= {(key, version) for version in kio_versions(key)}
        route = ROUTES.get(key)
        if route is not None:
            entries |= {(key, version) for version in range(route.min_version, route.max_version + 1)}
    return sorted(entries)


TABLE = table_entries()


def refused(t: Table, api_key: int, version: int) -> None:
    """The refusal of a version not served. Kafka's: ApiVersions answers v0 with UNSUPPORTED_VERSION
    and its own range, the version to retry with (KIP-511); any other API's connection is closed without an answer. Produce
    v0-2 (message formats v0/v1) are answered with UNSUPPORTED_VERSION for every partition instead
    (issue 21: "answered with UNSUPPORTED_VERSION, never a crash"; Kafka 4 closes the connection)."""
    topic, _, p = t.partition()
    if encodable(api_key, version):
        body = build(request_type(api_key, version), topic_data=[
            {"name": topic, "partition_data": [{"index": p, "records": Records(batch(b"old"))}]}], acks=-1,
            timeout=datetime.timedelta(seconds=5))
    else:  # a version no schema knows: the header says it, the body is the nearest version's
        known = kio_versions(api_key)
        body = build(request_type(api_key, min(known, key=lambda k: abs(k - version))))
    with socket.create_connection(("127.0.0.1", t.broker.port), timeout=10) as s:
        s.sendall(encode_request(api_key, version, 77, body, client_id=CLIENT_ID))
        s.settimeout(10)
        if api_key == 18:
            (size,) = struct.unpack(">i", recv_exact(s, 4))
            correlation_id, answer = decode_response(recv_exact(s, size), 18, 0)
            assert (correlation_id, answer.error_code) == (77, E.unsupported_version)
            assert {k.api_key: (k.min_version, k.max_version) for k in answer.api_keys} == {
                18: t.routes()[18]}
        elif (api_key, version) in legacy.REFUSED:
            (size,) = struct.unpack(">i", recv_exact(s, 4))
            correlation_id, answer = decode_response(recv_exact(s, size), api_key, version)
            assert correlation_id == 77
            assert [(x.name, [(y.index, y.error_code, y.base_offset) for y in x.partition_responses])
                    for x in answer.responses] == [(topic, [(p, E.unsupported_version, -1)])]
            assert t.list_offset(topic, p, -1).offset == 0  # nothing was written
        else:
            try:
                answer_bytes = s.recv(100)
            except ConnectionResetError:
                answer_bytes = b""
            assert answer_bytes == b"", (
                f"{api_name(api_key)} v{version} is not advertised, yet the broker answered it; "
                "Kafka closes the connection")
    assert t.call(18, 3, SOFTWARE).error_code == E.none


@pytest.mark.kafka_behaviour
@pytest.mark.parametrize(("api_key", "version"), TABLE, ids=[f"{api_name(k)}-v{v}" for k, v in TABLE])
def test_version(table: Table, api_key: int, version: int) -> None:
    """An advertised version is served with its semantics; a version kio has that is not advertised
    is refused as Kafka refuses it."""
    if not table.supports(api_key, version) or (api_key, version) in legacy.REFUSED:
        # (Produce v0-2 only parse, to be refused: Kafka 4 even advertises them, KAFKA-18659)
        refused(table, api_key, version)
        return
    check = CASES.get(api_key)
    assert check is not None, (
        f"{api_name(api_key)} (api key {api_key}) is advertised but the version table has no case for it: "
        "add one to tests/test_api_version_table.py")
    assert encodable(api_key, version), (
        f"{api_name(api_key)} v{version} is advertised but neither kio nor protocol/legacy.py has its schema")
    check(table, version)


def test_api_versions_advertises_exactly_the_routes(table: Table) -> None:
    for version in range(max(kio_versions(18)) + 1):
        body = table.call(18, version, SOFTWARE)
        assert body.error_code == E.none
        assert {k.api_key: (k.min_version, k.max_version) for k in body.api_keys} == {
            k: (r.min_version, r.max_version) for k, r in ROUTES.items()}, version
    assert table.advertised == {k: (r.min_version, r.max_version) for k, r in ROUTES.items()}


def test_every_advertised_api_has_a_case() -> None:
    missing = sorted(set(ROUTES) - set(CASES))
    assert not missing, "advertised without a case in the version table: " + ", ".join(
        f"{api_name(k)} (api key {k})" for k in missing)


def test_every_advertised_version_has_a_schema_or_a_codec() -> None:
    lacking = [f"{api_name(k)} v{v}" for k, r in sorted(ROUTES.items())
               for v in range(r.min_version, r.max_version + 1) if not encodable(k, v)]
    assert not lacking, "advertised, but neither kio nor the table can encode them: " + ", ".join(lacking)


EDGES = [(k, v) for k, r in sorted(ROUTES.items()) for v in (r.min_version - 1, r.max_version + 1)]


@pytest.mark.parametrize(("api_key", "version"), EDGES, ids=[f"{api_name(k)}-v{v}" for k, v in EDGES])
def test_versions_just_outside_the_range_are_refused(table: Table, api_key: int, version: int) -> None:
    refused(table, api_key, version)


def test_table_covers_every_kio_version_of_every_route() -> None:
    for key in ROUTES:
        for version in kio_versions(key):
            assert (key, version) in TABLE
