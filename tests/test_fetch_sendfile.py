"""Fetch responses of file storage go out as file slices (sendfile); clients see the same records.

The unit half checks LogSegment.read_slice against LogSegment.read for every start,
limit and upper offset; the broker half reads slices back with librdkafka (a flexible
Fetch version) and kafka-python (a non-flexible one), several partitions per response.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from conftest import BrokerProcess, unique
from test_clients import create_topic, produce_ck

from odradek.protocol.records import encode_batch, scan_batches
from odradek.storage.log import LogConfig, PartitionLog
from odradek.storage.open_files import FileSlice


def _log(tmp_path: Path) -> PartitionLog:
    config = LogConfig(segment_bytes=1 << 30, index_interval_bytes=300)
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, config)
    for i in range(60):  # batches of 1 to 7 records, 90 to 800 bytes
        data = encode_batch([(None, b"v%d-%d" % (i, j) + b"x" * (i % 9) * 10, ()) for j in range(1 + i % 7)],
                            timestamp_ms=1_700_000_000_000 + i)
        headers, _ = scan_batches(data)
        plog.append(data, headers, now_ms=1_700_000_000_000)
    return plog


def test_read_slice_returns_what_read_returns(tmp_path: Path) -> None:
    plog = _log(tmp_path)
    seg = plog.segments[0]
    positions = [0]
    while positions[-1] < seg.size:
        h = seg.header_at(positions[-1])
        assert h is not None
        positions.append(positions[-1] + h.size)
    uppers = [None, 1, 37, 100, plog.log_end_offset]
    for pos in positions[:-1]:
        for max_bytes in (0, 1, 61, 500, 1500, 4000, 1 << 20):
            for upper in uppers:
                for min_one in (True, False):
                    want = seg.read(pos, max_bytes, upper, min_one)
                    got = seg.read_slice(pos, max_bytes, upper, min_one, 0)
                    data = got.read() if isinstance(got, FileSlice) else got
                    assert data == want, (pos, max_bytes, upper, min_one)
    plog.close()


def test_a_slice_outlives_its_segment_being_closed(tmp_path: Path) -> None:
    plog = _log(tmp_path)
    seg = plog.segments[0]
    sl = seg.read_slice(0, 1 << 20, None, True, 0)
    assert isinstance(sl, FileSlice)
    want = seg.read(0, 1 << 20, None, True)
    plog.close()  # retention or compaction closing the segment while the response is queued
    os.open(os.devnull, os.O_RDONLY)  # may reuse the segment's descriptor number
    assert sl.read() == want
    sl.close()


def test_large_fetches_over_sendfile_return_every_record_in_order(broker: BrokerProcess) -> None:
    topic = unique("sendfile")
    create_topic(broker.bootstrap, topic, partitions=3)
    values = {p: [b"p%d-%05d-" % (p, i) + os.urandom(300) for i in range(2000)] for p in range(3)}
    for p in range(3):
        produce_ck(broker.bootstrap, topic, [{"value": v, "partition": p} for v in values[p]],
                   **{"batch.size": 100_000})
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("g"), "enable.auto.commit": False,
                  "max.partition.fetch.bytes": 150_000, "fetch.max.bytes": 400_000,
                  "message.max.bytes": 300_000})
    c.assign([TopicPartition(topic, p, 0 if p else 777) for p in range(3)])  # partition 0 from mid-log
    got: dict[int, list[tuple[int, bytes]]] = {0: [], 1: [], 2: []}
    deadline = time.monotonic() + 30
    while sum(map(len, got.values())) < 6000 - 777 and time.monotonic() < deadline:
        for m in c.consume(1000, 0.5):
            assert m.error() is None, m.error()
            got[m.partition()].append((m.offset(), m.value()))
    c.close()
    assert got[0] == list(enumerate(values[0]))[777:]
    assert got[1] == list(enumerate(values[1]))
    assert got[2] == list(enumerate(values[2]))


def test_kafka_python_reads_slices_in_a_non_flexible_fetch(broker: BrokerProcess) -> None:
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    topic = unique("sendfile-kp")
    create_topic(broker.bootstrap, topic, partitions=2)
    values = [b"%05d-" % i + b"y" * 400 for i in range(1500)]
    for p in range(2):
        produce_ck(broker.bootstrap, topic, [{"value": v, "partition": p} for v in values])
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=10000,
                             max_partition_fetch_bytes=200_000, api_version=(2, 0))  # Fetch v7
    consumer.assign([KTP(topic, 0), KTP(topic, 1)])
    got: dict[int, list[tuple[int, bytes]]] = {0: [], 1: []}
    for record in consumer:
        got[record.partition].append((record.offset, record.value))
        if sum(map(len, got.values())) == 3000:
            break
    consumer.close()
    assert got[0] == list(enumerate(values))
    assert got[1] == list(enumerate(values))
