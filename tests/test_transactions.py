"""Exactly-once: transactions, read_committed, fencing, recovery (issue 9).

Real clients (confluent-kafka, aiokafka, kafka-python) against real `odradek serve` processes;
the consume-transform-produce worker (tests/txn_worker.py) and abandoned
producers are processes killed with SIGKILL, and so is the broker.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from conftest import BrokerProcess, module_broker, read_messages, unique
from kio.schema.errors import ErrorCode as E
from test_clients import create_topic
from test_groups_protocol import call

ENV = {"ODRADEK_GROUP_INITIAL_REBALANCE_DELAY_MS": "0", "ODRADEK_GROUP_MIN_SESSION_TIMEOUT_MS": "1000",
       "ODRADEK_OFFSETS_TOPIC_NUM_PARTITIONS": "3", "ODRADEK_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "3",
       "ODRADEK_TRANSACTION_ABORT_TIMED_OUT_TRANSACTION_CLEANUP_INTERVAL_MS": "200"}
WORKER = Path(__file__).with_name("txn_worker.py")


tb = module_broker("tb", ENV)


def txn_producer(bootstrap: str, txn_id: str, **conf: Any) -> Producer:
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id, "linger.ms": 2, **conf})
    p.init_transactions(30)
    return p


def read_to_end(bootstrap: str, topic: str, partitions: int, isolation: str,
                timeout: float = 30) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) of everything a consumer with `isolation` sees, up to the end
    it is allowed to read (the LSO for read_committed)."""
    return [(m.partition(), m.offset(), m.value())
            for m in read_messages(bootstrap, topic, partitions, isolation, timeout)]


def values(records: list[tuple[int, int, bytes]]) -> list[bytes]:
    return [v for _, _, v in records]


def watermark(bootstrap: str, topic: str, partition: int, isolation: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("wm"), "isolation.level": isolation})
    try:
        return int(c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1])
    finally:
        c.close()


# -- commit / abort / read_committed ------------------------------------------------------


@pytest.mark.kafka_behaviour
def test_read_committed_sees_commits_never_aborts_interleaved_across_partitions(tb: BrokerProcess) -> None:
    topic = unique("txn")
    create_topic(tb.bootstrap, topic, partitions=3)
    p = txn_producer(tb.bootstrap, unique("tid"))
    committed: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
    everything: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
    plain = Producer({"bootstrap.servers": tb.bootstrap, "linger.ms": 0})
    for t in range(12):
        commit = t % 3 != 1  # commit, abort, commit, commit, abort, ...
        p.begin_transaction()
        for i in range(20):
            part = (t + i) % 3 if t % 2 else i % 2  # some transactions touch two partitions, some three
            value = b"t%d-%d" % (t, i)
            p.produce(topic, value=value, partition=part)
            everything[part].append(value)
            if commit:
                committed[part].append(value)
        if t == 5:  # a non-transactional write lands between the open transaction's records
            plain.produce(topic, value=b"plain", partition=0)
            plain.flush(10)
        p.flush(10)
        if commit:
            p.commit_transaction(30)
        else:
            p.abort_transaction(30)
    rc = read_to_end(tb.bootstrap, topic, 3, "read_committed")
    ru = read_to_end(tb.bootstrap, topic, 3, "read_uncommitted")
    for part in range(3):
        mine_rc = [v for pp, _, v in rc if pp == part and v != b"plain"]
        mine_ru = [v for pp, _, v in ru if pp == part and v != b"plain"]
        assert mine_rc == committed[part], f"partition {part}: committed records in order, no aborted one"
        assert mine_ru == everything[part], f"partition {part}: read_uncommitted sees aborted records too"
    assert values(rc).count(b"plain") == 1 and values(ru).count(b"plain") == 1
    # offsets still increase monotonically per partition, markers take offsets in between
    for part in range(3):
        offs = [o for pp, o, _ in rc if pp == part]
        assert offs == sorted(offs)


@pytest.mark.kafka_behaviour
def test_open_transaction_holds_back_read_committed_at_the_last_stable_offset(tb: BrokerProcess) -> None:
    topic = unique("lso")
    create_topic(tb.bootstrap, topic)
    plain = Producer({"bootstrap.servers": tb.bootstrap})
    for i in range(5):
        plain.produce(topic, value=b"before%d" % i)
    plain.flush(10)
    p = txn_producer(tb.bootstrap, unique("tid"))
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, value=b"open%d" % i)
    p.flush(10)
    for i in range(3):  # written after the transaction began: above the LSO until it ends
        plain.produce(topic, value=b"after%d" % i)
    plain.flush(10)
    assert watermark(tb.bootstrap, topic, 0, "read_committed") == 5, "ListOffsets(read_committed) answers the LSO"
    assert watermark(tb.bootstrap, topic, 0, "read_uncommitted") == 13
    assert values(read_to_end(tb.bootstrap, topic, 1, "read_committed")) == [b"before%d" % i for i in range(5)]
    p.commit_transaction(30)
    assert watermark(tb.bootstrap, topic, 0, "read_committed") == 14  # + the COMMIT marker
    assert values(read_to_end(tb.bootstrap, topic, 1, "read_committed")) == (
        [b"before%d" % i for i in range(5)] + [b"open%d" % i for i in range(5)] + [b"after%d" % i for i in range(3)])


@pytest.mark.kafka_behaviour
def test_offsets_sent_in_a_transaction_are_visible_only_when_it_commits(tb: BrokerProcess) -> None:
    topic = unique("txoff")
    group = unique("txgroup")
    create_topic(tb.bootstrap, topic)
    p = txn_producer(tb.bootstrap, unique("tid"))
    c = Consumer({"bootstrap.servers": tb.bootstrap, "group.id": group, "enable.auto.commit": False})
    meta = c.consumer_group_metadata()

    def committed() -> int:
        return int(c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset)

    p.begin_transaction()
    p.produce(topic, value=b"x")
    p.send_offsets_to_transaction([TopicPartition(topic, 0, 42)], meta, 30)
    p.abort_transaction(30)
    assert committed() < 0, "an aborted transaction's offsets never become the group's"
    p.begin_transaction()
    p.produce(topic, value=b"y")
    p.send_offsets_to_transaction([TopicPartition(topic, 0, 7)], meta, 30)
    p.flush(10)

    def fetch(require_stable: bool) -> tuple[int, E]:
        resp = call(tb, 9, 7, group_id=group, topics=[{"name": topic, "partition_indexes": [0]}],
                    require_stable=require_stable)
        part = resp.topics[0].partitions[0]
        return part.committed_offset, part.error_code

    assert fetch(False) == (-1, E.none), "offsets of an open transaction are not yet committed"
    assert fetch(True)[1] == E.unstable_offset_commit, "KIP-447: a read_committed consumer waits for the outcome"
    p.commit_transaction(30)
    # Kafka answers EndTxn once PrepareCommit is written; the markers (and so the offsets) follow
    deadline = time.monotonic() + 15
    while fetch(True)[1] == E.unstable_offset_commit and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fetch(True) == (7, E.none)
    assert committed() == 7
    c.close()


def test_committed_and_aborted_state_survive_a_restart(broker_factory: Any) -> None:
    b = broker_factory(env=ENV)
    topic, group, tid = unique("keep"), unique("keepgroup"), unique("tid")
    create_topic(b.bootstrap, topic, partitions=2)
    p = txn_producer(b.bootstrap, tid)
    meta = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group}).consumer_group_metadata()
    for t, commit in enumerate([True, False, True]):
        p.begin_transaction()
        for i in range(10):
            p.produce(topic, value=b"%d-%d" % (t, i), partition=i % 2)
        p.send_offsets_to_transaction([TopicPartition(topic, 0, 100 + t)], meta, 30)
        p.flush(10)
        p.commit_transaction(30) if commit else p.abort_transaction(30)
    before = read_to_end(b.bootstrap, topic, 2, "read_committed")
    assert len(before) == 20
    b.kill()  # no clean shutdown: the aborted-transaction index and producer state come back from disk
    b.start()
    assert sorted(read_to_end(b.bootstrap, topic, 2, "read_committed")) == sorted(before)
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group})
    assert c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset == 102
    c.close()
    again = txn_producer(b.bootstrap, tid)  # the id is known: same producer id, next epoch
    again.begin_transaction()
    again.produce(topic, value=b"after-restart", partition=0)
    again.commit_transaction(30)
    assert values(read_to_end(b.bootstrap, topic, 2, "read_committed")).count(b"after-restart") == 1


# -- fencing, timeouts, crashes ------------------------------------------------------------


@pytest.mark.kafka_behaviour
def test_zombie_producer_is_fenced_and_its_open_transaction_aborted(tb: BrokerProcess) -> None:
    topic, tid = unique("zombie"), unique("tid")
    create_topic(tb.bootstrap, topic, partitions=2)
    first = txn_producer(tb.bootstrap, tid)
    first.begin_transaction()
    for i in range(10):
        first.produce(topic, value=b"zombie%d" % i, partition=i % 2)
    first.flush(10)
    second = txn_producer(tb.bootstrap, tid)  # a new instance: bumps the epoch, aborts the old transaction
    second.begin_transaction()
    second.produce(topic, value=b"live", partition=0)
    second.commit_transaction(30)
    with pytest.raises(KafkaException) as fenced:
        first.produce(topic, value=b"late", partition=1)
        first.commit_transaction(10)
    err = fenced.value.args[0]
    assert err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH) \
        or err.fatal(), err
    assert values(read_to_end(tb.bootstrap, topic, 2, "read_committed")) == [b"live"]


@pytest.mark.kafka_behaviour
def test_transaction_left_open_is_aborted_after_its_timeout(tb: BrokerProcess) -> None:
    topic = unique("timeout")
    create_topic(tb.bootstrap, topic)
    p = txn_producer(tb.bootstrap, unique("tid"), **{"transaction.timeout.ms": 1500})
    p.begin_transaction()
    p.produce(topic, value=b"never")
    p.flush(10)
    assert watermark(tb.bootstrap, topic, 0, "read_committed") == 0
    deadline = time.monotonic() + 15
    while watermark(tb.bootstrap, topic, 0, "read_committed") < 2:  # record + ABORT marker
        assert time.monotonic() < deadline, "the coordinator never aborted the timed-out transaction"
        time.sleep(0.2)
    assert read_to_end(tb.bootstrap, topic, 1, "read_committed") == []
    with pytest.raises(KafkaException):  # the producer was fenced by the abort's epoch bump
        p.commit_transaction(10)


ABANDON = """
import sys
from confluent_kafka import Producer
p = Producer({"bootstrap.servers": sys.argv[1], "transactional.id": sys.argv[2], "transaction.timeout.ms": 2000})
p.init_transactions(30)
p.begin_transaction()
for i in range(10):
    p.produce(sys.argv[3], value=b"abandoned%d" % i)
p.flush(10)
print("open", flush=True)
sys.stdin.read()
"""


def test_broker_sigkill_mid_transaction_never_leaves_read_committed_stuck(broker_factory: Any) -> None:
    b = broker_factory(env=ENV)
    topic = unique("crash")
    create_topic(b.bootstrap, topic)
    # one transaction whose producer survives the broker's crash and commits afterwards
    survivor = txn_producer(b.bootstrap, unique("tid"))
    survivor.begin_transaction()
    for i in range(5):
        survivor.produce(topic, value=b"survivor%d" % i)
    survivor.flush(10)
    # one whose producer dies with the broker (SIGKILL both)
    orphan = subprocess.Popen([sys.executable, "-c", ABANDON, b.bootstrap, unique("tid"), topic],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert orphan.stdout is not None and orphan.stdout.readline().strip() == b"open"
    orphan.send_signal(signal.SIGKILL)
    orphan.wait(10)
    b.kill()
    b.start()
    plain = Producer({"bootstrap.servers": b.bootstrap})
    plain.produce(topic, value=b"later")
    plain.flush(10)
    survivor.commit_transaction(30)  # the coordinator reloaded the Ongoing state and completes it
    deadline = time.monotonic() + 20
    while True:  # the orphan's transaction times out (2 s) and is aborted by the restarted coordinator
        got = values(read_to_end(b.bootstrap, topic, 1, "read_committed"))
        if b"later" in got:
            break
        assert time.monotonic() < deadline, f"read_committed stuck behind the dead transaction: {got}"
        time.sleep(0.3)
    assert sorted(got) == sorted([b"survivor%d" % i for i in range(5)] + [b"later"])


def test_consume_transform_produce_is_exactly_once_under_sigkill(broker_factory: Any) -> None:
    b = broker_factory(env=ENV)
    source, sink, group, tid = unique("in"), unique("out"), unique("eos"), unique("tid")
    create_topic(b.bootstrap, source, partitions=3)
    create_topic(b.bootstrap, sink, partitions=3)
    n = 6000
    feeder = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 5})
    for i in range(n):
        feeder.produce(source, key=b"%d" % i, value=b"rec-%05d" % i, partition=i % 3)
    feeder.flush(30)
    rng = random.Random(9)
    cmd = [sys.executable, str(WORKER), b.bootstrap, source, sink, group, tid, "20"]
    kills = 0
    for _ in range(4):  # start, let it commit a random number of transactions, SIGKILL it mid-stream
        worker = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert worker.stdout is not None
        # counted in its own commits, not in seconds: a fast broker once let it finish in 1.7 s
        for _ in range(rng.randint(3, 40)):
            if not worker.stdout.readline():
                break  # it ended (the final run's assertions say how)
        time.sleep(rng.uniform(0.0, 0.05))  # into the next transaction, at a random step of it
        if worker.poll() is None:
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            kills += 1
        worker.stdout.close()
        assert worker.stderr is not None
        worker.stderr.close()
    worker = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = worker.communicate(timeout=180)
    assert worker.returncode == 0, err.decode(errors="replace")[-2000:]
    assert kills == 4, "the worker must have been killed mid-stream each time"
    out = read_to_end(b.bootstrap, sink, 3, "read_committed")
    counts = Counter(values(out))
    assert len(counts) == n and set(counts.values()) == {1}, (
        f"{len(out)} committed outputs for {n} inputs; duplicates: {[v for v, c in counts.items() if c > 1][:5]}")
    assert set(counts) == {b"REC-%05d" % i for i in range(n)}
    uncommitted = read_to_end(b.bootstrap, sink, 3, "read_uncommitted")
    assert len(uncommitted) >= len(out)  # killed transactions left aborted records the reader skipped


# -- other clients ----------------------------------------------------------------------------


@pytest.mark.kafka_behaviour
def test_aiokafka_transactional_producer(tb: BrokerProcess) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = unique("aio")
    create_topic(tb.bootstrap, topic)

    async def run() -> list[bytes]:
        producer = AIOKafkaProducer(bootstrap_servers=tb.bootstrap, transactional_id=unique("aiotid"))
        await producer.start()
        try:
            async with producer.transaction():
                for i in range(5):
                    await producer.send_and_wait(topic, b"ok%d" % i, partition=0)
            with pytest.raises(RuntimeError):
                async with producer.transaction():
                    await producer.send_and_wait(topic, b"no", partition=0)
                    raise RuntimeError("abort this one")
            async with producer.transaction():
                await producer.send_and_wait(topic, b"ok-last", partition=0)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=tb.bootstrap, isolation_level="read_committed",
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            got: list[bytes] = []
            deadline = time.monotonic() + 20
            while len(got) < 6 and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                got += [m.value for ms in batch.values() for m in ms]
            return got
        finally:
            await consumer.stop()

    assert asyncio.run(run()) == [b"ok%d" % i for i in range(5)] + [b"ok-last"]
    assert b"no" in values(read_to_end(tb.bootstrap, topic, 1, "read_uncommitted"))


@pytest.mark.kafka_behaviour
def test_kafka_python_transactional_producer_and_read_committed_consumer(tb: BrokerProcess) -> None:
    """kafka-python 3's own transactions: commit, abort, offsets in a transaction; its
    read_committed consumer drops the aborted records and the group's offset moves only
    with the commit."""
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KTopicPartition
    from kafka.structs import OffsetAndMetadata

    source, sink, group = unique("kpin"), unique("kpout"), unique("kpg")
    create_topic(tb.bootstrap, source)
    create_topic(tb.bootstrap, sink)
    plain = Producer({"bootstrap.servers": tb.bootstrap})
    for i in range(4):
        plain.produce(source, b"in%d" % i, partition=0)
    assert plain.flush(10) == 0
    consumer = KafkaConsumer(bootstrap_servers=tb.bootstrap, group_id=group, enable_auto_commit=False,
                             auto_offset_reset="earliest", isolation_level="read_committed")
    consumer.assign([KTopicPartition(source, 0)])
    producer = KafkaProducer(bootstrap_servers=tb.bootstrap, transactional_id=unique("kptid"))
    try:
        producer.init_transactions()
        producer.begin_transaction()
        producer.send(sink, b"kept", partition=0)
        producer.send_offsets_to_transaction({KTopicPartition(source, 0): OffsetAndMetadata(2, "", -1)},
                                             consumer.group_metadata())
        producer.commit_transaction()
        producer.begin_transaction()
        producer.send(sink, b"dropped", partition=0)
        producer.flush()  # in the log before the abort (an abort may drop what was never sent)
        producer.send_offsets_to_transaction({KTopicPartition(source, 0): OffsetAndMetadata(4, "", -1)},
                                             consumer.group_metadata())
        producer.abort_transaction()
    finally:
        producer.close()
    # the committed offset is the first transaction's, the aborted one's never became the group's
    assert consumer.committed(KTopicPartition(source, 0)) == 2
    consumer.close()
    reader = KafkaConsumer(bootstrap_servers=tb.bootstrap, enable_auto_commit=False, group_id=None,
                           auto_offset_reset="earliest", isolation_level="read_committed")
    reader.assign([KTopicPartition(sink, 0)])
    got: list[bytes] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(got) < 1:
        for records in reader.poll(timeout_ms=500).values():
            got += [r.value for r in records]
    got += [r.value for rs in reader.poll(timeout_ms=1000).values() for r in rs]  # nothing may follow
    reader.close()
    assert got == [b"kept"]
    assert values(read_to_end(tb.bootstrap, sink, 1, "read_uncommitted")) == [b"kept", b"dropped"]


# -- the protocol's answers ---------------------------------------------------------------------


@pytest.mark.kafka_behaviour
def test_transaction_api_errors_as_kafka_answers_them(tb: BrokerProcess) -> None:
    tid = unique("raw")
    assert call(tb, 22, 4, transactional_id=tid, transaction_timeout=10_000_000).error_code \
        == E.invalid_transaction_timeout
    init = call(tb, 22, 4, transactional_id=tid, transaction_timeout=60_000)
    assert init.error_code == E.none and init.producer_epoch == 0
    pid, epoch = init.producer_id, init.producer_epoch
    assert call(tb, 26, 3, transactional_id=tid, producer_id=pid, producer_epoch=epoch,
                committed=True).error_code == E.invalid_txn_state, "EndTxn without a transaction"
    assert call(tb, 25, 3, transactional_id=tid, producer_id=pid + 1000, producer_epoch=epoch,
                group_id="g").error_code == E.invalid_producer_id_mapping
    topic = unique("rawtopic")
    create_topic(tb.bootstrap, topic)
    added = call(tb, 24, 3, v3_and_below_transactional_id=tid, v3_and_below_producer_id=pid,
                 v3_and_below_producer_epoch=epoch,
                 v3_and_below_topics=[{"name": topic, "partitions": [0]}, {"name": "no-such-topic", "partitions": [0]}])
    codes = {r.name: r.results_by_partition[0].partition_error_code for r in added.results_by_topic_v3_and_below}
    assert codes == {topic: E.operation_not_attempted, "no-such-topic": E.unknown_topic_or_partition}
    added = call(tb, 24, 3, v3_and_below_transactional_id=tid, v3_and_below_producer_id=pid,
                 v3_and_below_producer_epoch=epoch, v3_and_below_topics=[{"name": topic, "partitions": [0]}])
    assert added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code == E.none
    described = call(tb, 65, 0, transactional_ids=[tid, unique("unknown")]).transaction_states
    assert (described[0].error_code, described[0].transaction_state) == (E.none, "Ongoing")
    assert [(t.topic, list(t.partitions)) for t in described[0].topics] == [(topic, [0])]
    assert described[0].producer_id == pid and described[0].transaction_start_time.year >= 2024
    assert described[1].error_code == E.transactional_id_not_found
    again = call(tb, 22, 4, transactional_id=tid, transaction_timeout=60_000)  # fences and aborts
    assert again.error_code == E.concurrent_transactions, "Kafka aborts the open transaction first; clients retry"
    deadline = time.monotonic() + 15
    while again.error_code == E.concurrent_transactions and time.monotonic() < deadline:
        time.sleep(0.05)
        again = call(tb, 22, 4, transactional_id=tid, transaction_timeout=60_000)
    assert (again.error_code, again.producer_id) == (E.none, pid) and again.producer_epoch > epoch
    assert call(tb, 26, 3, transactional_id=tid, producer_id=pid, producer_epoch=epoch,
                committed=True).error_code == E.producer_fenced
    assert call(tb, 26, 1, transactional_id=tid, producer_id=pid, producer_epoch=epoch,
                committed=True).error_code == E.invalid_producer_epoch, "before KIP-588's PRODUCER_FENCED"
    listed = call(tb, 66, 1, state_filters=["Empty", "Bogus"], producer_id_filters=[pid])
    assert [t.transactional_id for t in listed.transaction_states] == [tid]
    assert list(listed.unknown_state_filters) == ["Bogus"]


@pytest.mark.kafka_behaviour
def test_describe_producers_shows_the_open_transaction(tb: BrokerProcess) -> None:
    topic = unique("dp")
    create_topic(tb.bootstrap, topic)
    plain = Producer({"bootstrap.servers": tb.bootstrap})
    plain.produce(topic, value=b"first")
    plain.flush(10)
    p = txn_producer(tb.bootstrap, unique("tid"))
    p.begin_transaction()
    p.produce(topic, value=b"in-txn")
    p.flush(10)
    resp = call(tb, 61, 0, topics=[{"name": topic, "partition_indexes": [0]}])
    producers = resp.topics[0].partitions[0].active_producers
    open_txn = [s for s in producers if s.current_txn_start_offset >= 0]
    assert len(open_txn) == 1 and open_txn[0].current_txn_start_offset == 1
    p.commit_transaction(30)

    def open_transactions() -> int:
        resp = call(tb, 61, 0, topics=[{"name": topic, "partition_indexes": [0]}])
        return sum(s.current_txn_start_offset >= 0 for s in resp.topics[0].partitions[0].active_producers)

    # Kafka answers EndTxn once PrepareCommit is written; the partition's marker follows
    deadline = time.monotonic() + 15
    while open_transactions() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_transactions() == 0
    admin = AdminClient({"bootstrap.servers": tb.bootstrap})
    assert topic in admin.list_topics(timeout=10).topics


def test_restarted_coordinator_completes_a_prepared_commit(broker_factory: Any) -> None:
    """The crash image of a coordinator that died after writing PrepareCommit and before its
    markers: on load it writes the COMMIT markers and read_committed consumers see the records."""
    from odradek.coordinator.records import partition_for
    from odradek.coordinator.store import encode_batch
    from odradek.coordinator.txn_records import TxnMetadata, TxnState, txn_key, txn_value
    from odradek.protocol.records import scan_batches
    from odradek.storage.log import LogConfig, PartitionLog

    b = broker_factory(env=ENV)
    topic, tid = unique("prepared"), unique("tid")
    create_topic(b.bootstrap, topic)
    p = txn_producer(b.bootstrap, tid)
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, value=b"p%d" % i)
    p.flush(10)
    ongoing = call(b, 65, 0, transactional_ids=[tid]).transaction_states[0]
    assert ongoing.transaction_state == "Ongoing"
    b.kill()
    now = int(time.time() * 1000)
    prepared = TxnMetadata(tid, ongoing.producer_id, ongoing.producer_epoch, 60000, TxnState.PREPARE_COMMIT,
                           {(topic, 0)}, now, now - 100)
    part = partition_for(tid, 3)
    plog = PartitionLog.open(Path(b.data_dir) / f"__transaction_state-{part}", "__transaction_state", part,
                             LogConfig(), clean_shutdown=False)
    data = encode_batch([(txn_key(tid), txn_value(prepared))], now)
    plog.append(data, scan_batches(data)[0], now_ms=now)
    plog.close()
    b.start()
    deadline = time.monotonic() + 20
    while values(read_to_end(b.bootstrap, topic, 1, "read_committed")) != [b"p%d" % i for i in range(5)]:
        assert time.monotonic() < deadline, "the prepared commit was never completed"
        time.sleep(0.2)
    assert call(b, 65, 0, transactional_ids=[tid]).transaction_states[0].transaction_state == "CompleteCommit"


def test_embedded_memory_broker_supports_transactions() -> None:
    from odradek.testing import Broker

    with Broker(storage="memory") as broker:
        create_topic(broker.bootstrap_servers, "mem-txn")
        p = txn_producer(broker.bootstrap_servers, "mem-tid")
        for commit in (True, False, True):
            p.begin_transaction()
            p.produce("mem-txn", value=b"c" if commit else b"a")
            p.commit_transaction(30) if commit else p.abort_transaction(30)
        assert values(read_to_end(broker.bootstrap_servers, "mem-txn", 1, "read_committed")) == [b"c", b"c"]
