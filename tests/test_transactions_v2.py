"""Transactions version 2 (KIP-890 part 2, issue 21): Kafka's Java producer 4.3.1 against odradek.

With `transaction.version` finalized at 2 (ApiVersions), the Java producer sends Produce v12+
without AddPartitionsToTxn (the partition leader adds the partition through the coordinator),
TxnOffsetCommit v5 without AddOffsetsToTxn, and EndTxn v5, whose answer carries the epoch bumped
for the next transaction. The producer is tests/java/TxnV2Producer.java, driven line by line;
read_committed is checked with confluent-kafka (transactions version 1, which keeps working).
"""

from __future__ import annotations

import json
import selectors
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from conftest import BrokerProcess, free_port, module_broker, unique
from kio.schema.errors import ErrorCode as E
from test_clients import create_topic
from test_groups_protocol import call
from test_transactions import read_to_end, txn_producer, values

from odradek.protocol.records import TRANSACTIONAL_BIT, encode_batch

pytest_plugins = ["cluster_fixtures"]

JAVA_DIR = Path(__file__).with_name("java")
JVM_FLAGS = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]  # a short-lived client: a third less CPU to start
METRICS_PORT = free_port()
ENV = {"ODRADEK_GROUP_INITIAL_REBALANCE_DELAY_MS": "0", "ODRADEK_OFFSETS_TOPIC_NUM_PARTITIONS": "3",
       "ODRADEK_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "3",
       "ODRADEK_TRANSACTION_ABORT_TIMED_OUT_TRANSACTION_CLEANUP_INTERVAL_MS": "200"}

# Kafka 4.3.1 serves InitProducerId v6 (KIP-939) only with its unstable versions on (pytest --kafka)
tv2 = module_broker("tv2", {**ENV, "ODRADEK_METRICS_PORT": str(METRICS_PORT),
                            "ODRADEK_UNSTABLE_API_VERSIONS_ENABLE": "true"})


class JavaTxnProducer:
    """One KafkaProducer with a transactional.id in its own JVM; `do` sends a command, returns its answer."""

    def __init__(self, bootstrap: str, transactional_id: str, timeout_ms: int = 60000) -> None:
        self.proc = subprocess.Popen(
            ["java", *JVM_FLAGS, "-cp", str(JAVA_DIR / "lib" / "*"), str(JAVA_DIR / "TxnV2Producer.java"), bootstrap,
             transactional_id, str(timeout_ms)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.selector = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self.selector.register(self.proc.stdout, selectors.EVENT_READ)

    def do(self, command: str, timeout: float = 60) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0 and self.selector.select(left), f"the Java producer did not answer {command!r}"
            line = self.proc.stdout.readline()
            assert line, f"the Java producer exited on {command!r}"
            if line.startswith("{"):
                answer: dict[str, Any] = json.loads(line)
                return answer

    def ok(self, command: str, timeout: float = 60) -> dict[str, Any]:
        answer = self.do(command, timeout)
        assert "error" not in answer, answer
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.do("close", timeout=15)
            except AssertionError:
                pass
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def java_producers() -> Any:
    started: list[JavaTxnProducer] = []

    def make(bootstrap: str, transactional_id: str, timeout_ms: int = 60000) -> JavaTxnProducer:
        started.append(JavaTxnProducer(bootstrap, transactional_id, timeout_ms))
        return started[-1]

    yield make
    for p in started:
        p.close()


def describe(b: Any, tid: str) -> Any:
    state = call(b, 65, 0, transactional_ids=[tid]).transaction_states[0]
    assert state.error_code == E.none
    return state


def requests_served(api: str) -> float:
    """kafka_network_requestmetrics_requests_total for one API (0 when it was never called)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(f'kafka_network_requestmetrics_requests_total{{request="{api}"}}'):
                return float(line.split()[-1])
    return 0.0


def test_java_producer_commits_and_aborts_with_an_epoch_bump_per_transaction(tv2: BrokerProcess,
                                                                             java_producers: Any) -> None:
    topic, tid, group = unique("tv2"), unique("tid"), unique("g")
    create_topic(tv2.bootstrap, topic, partitions=2)
    add_partitions_before = requests_served("AddPartitionsToTxn") + requests_served("AddOffsetsToTxn")
    p = java_producers(tv2.bootstrap, tid)
    p.ok("init")
    assert p.ok("tv2")["tv2"] is True, "the client took transaction.version 2 from ApiVersions"
    first = describe(tv2, tid)
    committed: dict[int, list[bytes]] = {0: [], 1: []}
    everything: dict[int, list[bytes]] = {0: [], 1: []}
    outcomes = ["commit", "abort", "commit", "commit", "abort", "commit"]
    for t, outcome in enumerate(outcomes):
        p.ok("begin")
        for i in range(4):
            part = (t + i) % 2
            value = f"t{t}-{i}"
            p.ok(f"send {topic} {part} {value}")
            everything[part].append(value.encode())
            if outcome == "commit":
                committed[part].append(value.encode())
        if t == len(outcomes) - 1:  # offsets in a transaction: TxnOffsetCommit v5 adds the group's partition
            p.ok(f"offsets {group} {topic} 0 {len(committed[0])}")
        ongoing = describe(tv2, tid)
        assert ongoing.transaction_state == "Ongoing"
        assert {(x.topic, tuple(x.partitions)) for x in ongoing.topics} >= {(topic, (0, 1))}
        p.ok(outcome)
        done = describe(tv2, tid)
        # EndTxn v5: every transaction ends with the epoch bumped, on the same producer id
        assert done.transaction_state == ("CompleteCommit" if outcome == "commit" else "CompleteAbort")
        assert (done.producer_id, done.producer_epoch) == (first.producer_id, first.producer_epoch + t + 1)
    # the producer never sent AddPartitionsToTxn or AddOffsetsToTxn: the partitions joined implicitly
    assert requests_served("AddPartitionsToTxn") + requests_served("AddOffsetsToTxn") == add_partitions_before
    rc = read_to_end(tv2.bootstrap, topic, 2, "read_committed")
    ru = read_to_end(tv2.bootstrap, topic, 2, "read_uncommitted")
    for part in (0, 1):
        assert [v for pp, _, v in rc if pp == part] == committed[part], "exactly the committed records"
        assert [v for pp, _, v in ru if pp == part] == everything[part]
    # the markers carry the bumped epochs; no transaction is left open on either partition
    producers = call(tv2, 61, 0, topics=[{"name": topic, "partition_indexes": [0, 1]}]).topics[0].partitions
    for part in producers:
        (state,) = part.active_producers
        assert state.producer_id == first.producer_id and state.current_txn_start_offset == -1
    assert max(s.producer_epoch for part in producers for s in part.active_producers) == first.producer_epoch + 6
    c = Consumer({"bootstrap.servers": tv2.bootstrap, "group.id": group})
    try:
        assert c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset == len(committed[0])
    finally:
        c.close()


@pytest.mark.kafka_behaviour
def test_a_new_instance_fences_the_old_one_and_aborts_its_transaction(tv2: BrokerProcess,
                                                                      java_producers: Any) -> None:
    topic, tid = unique("fence"), unique("tid")
    create_topic(tv2.bootstrap, topic)
    old = java_producers(tv2.bootstrap, tid)
    new = java_producers(tv2.bootstrap, tid)  # its JVM starts meanwhile
    old.ok("init")
    old.ok("begin")
    old.ok(f"send {topic} 0 zombie")
    new.ok("init")  # fences `old` and aborts its open transaction
    assert describe(tv2, tid).transaction_state in ("Empty", "CompleteAbort")
    refused = old.do(f"send {topic} 0 zombie-late")
    if "error" not in refused:
        refused = old.do("commit")
    assert refused.get("error") in ("ProducerFencedException", "InvalidProducerEpochException"), refused
    new.ok("begin")
    new.ok(f"send {topic} 0 kept")
    new.ok("commit")
    assert values(read_to_end(tv2.bootstrap, topic, 1, "read_committed")) == [b"kept"]


@pytest.mark.kafka_behaviour
def test_a_transaction_past_its_timeout_is_aborted_and_the_producer_goes_on(tv2: BrokerProcess,
                                                                            java_producers: Any) -> None:
    """The coordinator aborts it with the epoch bumped; the producer's next write is refused as an
    abortable error (not fatal, KIP-890), and after abortTransaction it carries on."""
    topic, tid = unique("timeout"), unique("tid")
    create_topic(tv2.bootstrap, topic)
    p = java_producers(tv2.bootstrap, tid, 1000)
    p.ok("init")
    p.ok("begin")
    p.ok(f"send {topic} 0 lost")
    deadline = time.monotonic() + 15
    while describe(tv2, tid).transaction_state != "CompleteAbort":
        assert time.monotonic() < deadline, "the transaction outlived transaction.timeout.ms"
        time.sleep(0.2)
    assert p.do(f"send {topic} 0 late").get("error") == "InvalidProducerEpochException"
    p.ok("abort")
    p.ok("begin")
    p.ok(f"send {topic} 0 kept")
    p.ok("commit")
    assert values(read_to_end(tv2.bootstrap, topic, 1, "read_committed")) == [b"kept"]


def test_coordinator_restart_mid_transaction_resumes(broker_factory: Any, java_producers: Any) -> None:
    b = broker_factory(env=ENV)
    topic, tid = unique("restart"), unique("tid")
    create_topic(b.bootstrap, topic, partitions=2)
    p = java_producers(b.bootstrap, tid)
    p.ok("init")
    p.ok("begin")
    for i in range(3):
        p.ok(f"send {topic} {i % 2} before-{i}")
    before = describe(b, tid)
    assert before.transaction_state == "Ongoing"
    b.restart()  # the coordinator replays __transaction_state: the transaction is still Ongoing
    assert describe(b, tid).transaction_state == "Ongoing"
    for i in range(2):
        p.ok(f"send {topic} {i % 2} after-{i}")
    p.ok("commit")
    done = describe(b, tid)
    assert (done.transaction_state, done.producer_epoch) == ("CompleteCommit", before.producer_epoch + 1)
    p.ok("begin")
    p.ok(f"send {topic} 1 next")
    p.ok("commit")
    assert describe(b, tid).producer_epoch == before.producer_epoch + 2
    assert sorted(values(read_to_end(b.bootstrap, topic, 2, "read_committed"))) == sorted(
        [b"before-0", b"before-1", b"before-2", b"after-0", b"after-1", b"next"])


@pytest.mark.kafka_behaviour
def test_confluent_kafka_keeps_transactions_version_1(tv2: BrokerProcess) -> None:
    """librdkafka knows nothing of version 2: AddPartitionsToTxn, EndTxn v3 without a bump, as before."""
    topic, tid = unique("tv1"), unique("tid")
    create_topic(tv2.bootstrap, topic)
    p = txn_producer(tv2.bootstrap, tid)
    epoch = describe(tv2, tid).producer_epoch
    for commit in (True, False, True):
        p.begin_transaction()
        p.produce(topic, value=b"c" if commit else b"a")
        p.commit_transaction(30) if commit else p.abort_transaction(30)
    assert describe(tv2, tid).producer_epoch == epoch, "version 1 keeps the epoch across transactions"
    assert values(read_to_end(tv2.bootstrap, topic, 1, "read_committed")) == [b"c", b"c"]


# -- the protocol's answers (kio-built requests) ------------------------------------------------


def produce(b: Any, version: int, tid: str, topic: str, partition: int, pid: int, epoch: int, seq: int) -> Any:
    batch = encode_batch([(None, b"v", [])], attributes=TRANSACTIONAL_BIT, producer_id=pid, producer_epoch=epoch,
                         base_sequence=seq)
    deadline = time.monotonic() + 15
    while True:  # a new topic's leader may not be known yet (Kafka's metadata propagation)
        resp = call(b, 0, version, transactional_id=tid, acks=-1, timeout=10000, topic_data=[
            {"name": topic, "partition_data": [{"index": partition, "records": batch}]}])
        error = resp.responses[0].partition_responses[0].error_code
        if error not in (E.not_leader_or_follower, E.unknown_topic_or_partition) or time.monotonic() > deadline:
            return error
        time.sleep(0.1)


def end_txn(b: Any, version: int, **body: Any) -> Any:
    """EndTxn, retried while the previous one's markers are still being written (Kafka answers
    EndTxn before writing them: CONCURRENT_TRANSACTIONS until they are)."""
    deadline = time.monotonic() + 15
    while (resp := call(b, 26, version, **body)).error_code == E.concurrent_transactions:
        assert time.monotonic() < deadline, "the previous transaction never completed"
        time.sleep(0.05)
    return resp


@pytest.mark.kafka_behaviour
def test_transactions_version_2_answers_as_kafka(tv2: BrokerProcess) -> None:
    topic, tid = unique("raw2"), unique("tid")
    create_topic(tv2.bootstrap, topic, partitions=2)
    features = {f.name: f.max_version_level for f in call(tv2, 18, 4, client_software_name="odradek-tests",
                                                              client_software_version="1").finalized_features}
    assert features["transaction.version"] == 2
    # InitProducerId v6: no two-phase commit (KIP-939) without transaction.two.phase.commit.enable
    assert call(tv2, 22, 6, transactional_id=tid, transaction_timeout=60000,
                enable2_pc=True).error_code == E.transactional_id_authorization_failed
    assert call(tv2, 22, 6, transactional_id=tid, transaction_timeout=60000,
                keep_prepared_txn=True).error_code == E.unsupported_version
    assert call(tv2, 22, 6, transactional_id=tid, transaction_timeout=60000,
                producer_id=7).error_code == E.invalid_request, "an id without its epoch"
    deadline = time.monotonic() + 30
    while (init := call(tv2, 22, 6, transactional_id=tid, transaction_timeout=60000)).error_code in (
            E.coordinator_load_in_progress, E.coordinator_not_available, E.not_coordinator):
        assert time.monotonic() < deadline, "no transaction coordinator"  # Kafka creates __transaction_state first
        time.sleep(0.2)
    pid, epoch = init.producer_id, init.producer_epoch
    assert (init.error_code, init.ongoing_txn_producer_id) == (E.none, -1)
    # Produce v12 adds the partition; v11 and v10 only verify (KIP-890 part 1)
    assert produce(tv2, 12, tid, topic, 0, pid, epoch, 0) == E.none
    assert [(t.topic, list(t.partitions)) for t in describe(tv2, tid).topics] == [(topic, [0])]
    assert produce(tv2, 11, tid, topic, 1, pid, epoch, 0) == E.transaction_abortable
    assert produce(tv2, 10, tid, topic, 1, pid, epoch, 0) == E.invalid_txn_state
    # AddPartitionsToTxn v5, as a partition leader sends it: batched, verify_only
    verified = call(tv2, 24, 5, transactions=[{"transactional_id": tid, "producer_id": pid, "producer_epoch": epoch,
                                               "verify_only": True, "topics": [{"name": topic, "partitions": [0, 1]}]}])
    assert verified.error_code == E.none
    codes = {p.partition_index: p.partition_error_code
             for p in verified.results_by_transaction[0].topic_results[0].results_by_partition}
    assert codes == {0: E.none, 1: E.transaction_abortable}
    # EndTxn v5 answers the bumped epoch; a retry with the old epoch gets the same answer
    ended = end_txn(tv2, 5, transactional_id=tid, producer_id=pid, producer_epoch=epoch, committed=True)
    assert (ended.error_code, ended.producer_id, ended.producer_epoch) == (E.none, pid, epoch + 1)
    retried = end_txn(tv2, 5, transactional_id=tid, producer_id=pid, producer_epoch=epoch, committed=True)
    assert (retried.error_code, retried.producer_epoch) == (E.none, epoch + 1)
    assert end_txn(tv2, 5, transactional_id=tid, producer_id=pid, producer_epoch=epoch, committed=False
                ).error_code == E.invalid_txn_state, "a retry must ask for the same outcome"
    assert end_txn(tv2, 5, transactional_id=tid, producer_id=pid, producer_epoch=epoch + 1, committed=True
                ).error_code == E.invalid_txn_state, "nothing to commit"
    # the old epoch is fenced on the partition; an abort without partitions still bumps the epoch
    assert produce(tv2, 12, tid, topic, 0, pid, epoch, 1) == E.invalid_producer_epoch
    aborted = end_txn(tv2, 5, transactional_id=tid, producer_id=pid, producer_epoch=epoch + 1, committed=False)
    assert (aborted.error_code, aborted.producer_epoch) == (E.none, epoch + 2)
    # ListTransactions v2: the transactional id pattern matches whole ids (KIP-1152)
    assert [t.transactional_id for t in call(tv2, 66, 2, transactional_id_pattern=tid[:-2] + ".*"
                                             ).transaction_states] == [tid]
    assert call(tv2, 66, 2, transactional_id_pattern=tid[:-2]).transaction_states == ()
    assert call(tv2, 66, 2, transactional_id_pattern="(").error_code == E.invalid_regular_expression
    # markers (WriteTxnMarkers, as a coordinator sends them): partition 0 holds the commit at epoch + 1;
    # a version 2 marker must bump the epoch, or repeat the one that ended the transaction
    def marker(version: int, marker_epoch: int, **extra: Any) -> Any:
        resp = call(tv2, 27, version, markers=[{
            "producer_id": pid, "producer_epoch": marker_epoch, "coordinator_epoch": 0, "transaction_result": True,
            "topics": [{"name": topic, "partition_indexes": [0]}], **extra}])
        return resp.markers[0].topics[0].partitions[0].error_code

    assert marker(2, epoch + 1, transaction_version=2) == E.none, "a retried marker"
    assert marker(2, epoch, transaction_version=2) == E.invalid_producer_epoch
    assert marker(1, epoch) == E.invalid_producer_epoch, "older than the producer's epoch"


# -- cluster mode ---------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_cluster_partitions_led_elsewhere_join_the_transaction(cluster_factory: Any, java_producers: Any) -> None:
    """The leader of a partition is often not the transaction coordinator: it adds the partition
    with AddPartitionsToTxn v5 to the coordinator's broker, and the markers come back through
    WriteTxnMarkers v2."""
    from test_cluster_txn import txn_coordinator

    cluster = cluster_factory(2, env={"ODRADEK_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "3",
                                      "ODRADEK_OFFSETS_TOPIC_NUM_PARTITIONS": "3"})
    topic, tid, group = unique("ctv2"), unique("tid"), unique("g")
    cluster.create_topic(topic, partitions=4, rf=2)
    p = java_producers(cluster.bootstrap, tid, 30000)
    p.ok("init", timeout=90)
    assert p.ok("tv2")["tv2"] is True
    coordinator = txn_coordinator(cluster, tid)
    leaders = {part.leader for part in cluster.metadata(topic).topics[topic].partitions.values()}
    assert leaders - {coordinator}, "some partition is led by a broker that is not the coordinator"
    committed: list[bytes] = []
    for t, outcome in enumerate(["commit", "abort", "commit"]):
        p.ok("begin")
        for part in range(4):
            p.ok(f"send {topic} {part} t{t}-{part}")
            if outcome == "commit":
                committed.append(f"t{t}-{part}".encode())
        p.ok(f"offsets {group} {topic} 0 {t + 1}")
        p.ok(outcome, timeout=90)
    assert sorted(values(read_to_end(cluster.bootstrap, topic, 4, "read_committed", timeout=60))) == sorted(committed)
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group})
    try:
        assert c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset == 3
    finally:
        c.close()


# -- __transaction_state ---------------------------------------------------------------------------

# TransactionLogValue v1 as Kafka 4.3.1 writes it (TransactionLog.valueToBytes at TV_2): producer 42
# epoch 7 (previous id 41, next id 99), PrepareAbort over bb-1 and bb-4, client transaction version 2
KAFKA_TXN_VALUE_V1 = bytes.fromhex(
    "0001000000000000002a00070000ea600302036262030000000100000004000000018bcfe568000000018bcfe564"
    "1803000800000000000000290108000000000000006302020002")


def test_transaction_log_value_v1_is_read_and_written_as_kafka_does() -> None:
    from odradek.coordinator.txn_records import TxnState, read_txn_value, txn_value

    meta = read_txn_value("tid", KAFKA_TXN_VALUE_V1)
    assert (meta.producer_id, meta.producer_epoch, meta.prev_producer_id, meta.next_producer_id) == (42, 7, 41, 99)
    assert (meta.state, meta.partitions, meta.client_transaction_version) == (
        TxnState.PREPARE_ABORT, {("bb", 1), ("bb", 4)}, 2)
    assert (meta.timeout_ms, meta.start_ms, meta.last_update_ms) == (60000, 1699999999000, 1700000000000)
    assert txn_value(meta, 1) == KAFKA_TXN_VALUE_V1
    assert read_txn_value("tid", txn_value(meta, 0)).partitions == meta.partitions, "v0 is still read"
