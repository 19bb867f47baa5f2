"""Many partitions on one broker (issue 20): bounded descriptors, a partition limit that refuses
cleanly, and a Metadata answer spliced from cached topic bytes that clients read as before.

The timings (10,000 partitions, start-up, Metadata in under 50 ms) live in bench/scale_bench.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic  # type: ignore[attr-defined]
from conftest import ROOT, BrokerProcess, wait_for_port

from odradek.config import BrokerConfig
from odradek.protocol.build import build
from odradek.protocol.framing import decode_response, encode_request, request_type
from odradek.protocol.records import decode_batch, encode_batch, scan_batches
from odradek.server.broker import Broker
from odradek.server.dispatcher import Dispatcher
from odradek.server.handlers import ROUTES, metadata
from odradek.storage.log import LogConfig, PartitionLog
from odradek.storage.manager import LogManager
from odradek.storage.open_files import OPEN_SEGMENTS

NOFILE = 256  # the broker's whole open-file limit: the old code held three files a partition


# `python -c LIMITED N args...`: `python -m odradek args...` with RLIMIT_NOFILE N (soft and hard), set
# in the child itself (a preexec_fn is unsafe beside librdkafka's threads)
LIMITED = ("import resource, runpy, sys; n = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); "
           "sys.argv = ['odradek', *sys.argv[2:]]; runpy.run_module('odradek', run_name='__main__', alter_sys=True)")


class LimitedBroker(BrokerProcess):
    """`odradek serve` with RLIMIT_NOFILE lowered to NOFILE before it starts."""

    def start(self) -> LimitedBroker:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop()/kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LIMITED, str(NOFILE), "serve", "--listen", self.bootstrap,
             "--data-dir", str(self.data_dir)],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            cwd=ROOT)
        wait_for_port(self.port, timeout=60, proc=self.proc)
        return self


def open_files(b: BrokerProcess) -> int:
    assert b.proc is not None
    return len(os.listdir(f"/proc/{b.proc.pid}/fd"))


def read_all(bootstrap: str, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], bytes]:
    """The first record of every partition, read from the beginning."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "scale-check", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in partitions])
        got: dict[tuple[str, int], bytes] = {}
        idle = 0
        while len(got) < len(partitions) and idle < 30:
            batch = c.consume(1000, 1.0)
            idle = 0 if batch else idle + 1
            for m in batch:
                if m.error() is None:
                    got.setdefault((str(m.topic()), int(m.partition() or 0)), bytes(m.value() or b""))
        return got
    finally:
        c.close()


def test_two_thousand_partitions_with_256_open_files_are_written_restarted_and_read_back(tmp_path: Path) -> None:
    # With .log, .index and .timeindex open for every partition the broker ran out of descriptors
    # near a third of the limit (6,600 partitions of 20,000 files) and could not start again.
    b = LimitedBroker(tmp_path / "data")
    b.start()
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        topics = [f"many-{i:02d}" for i in range(20)]
        for chunk in (topics[:10], topics[10:]):
            for f in admin.create_topics([NewTopic(t, 100, 1) for t in chunk], request_timeout=60).values():
                f.result(60)
        partitions = [(t, p) for t in topics for p in range(100)]
        producer = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 20})
        for t, p in partitions:
            producer.produce(t, f"{t}/{p}".encode(), partition=p)
        assert producer.flush(60) == 0
        del producer, admin
        assert open_files(b) < NOFILE // 2
        expected = {(t, p): f"{t}/{p}".encode() for t, p in partitions}
        assert read_all(b.bootstrap, partitions) == expected
        assert open_files(b) < NOFILE // 2

        b.stop(timeout=60)
        b.start()  # clean
        assert read_all(b.bootstrap, partitions) == expected
        b.kill()
        b.start()  # after SIGKILL: recovered from the logs
        assert read_all(b.bootstrap, partitions) == expected
        assert open_files(b) < NOFILE // 2
    finally:
        if b.proc is not None and b.proc.poll() is None:
            b.stop(timeout=60)
    logs = b.logs()
    assert "Too many open files" not in logs and "Traceback" not in logs


def test_create_topics_beyond_max_broker_partitions_is_refused_and_creates_nothing(broker_factory: Any) -> None:
    b = broker_factory(env={"ODRADEK_MAX_BROKER_PARTITIONS": "150"})
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic("first", 100, 1)])["first"].result(30)
    futures = admin.create_topics([NewTopic("fits", 40, 1), NewTopic("too-many", 40, 1)], request_timeout=30)
    futures["fits"].result(30)  # each topic is judged on its own, in order, as Kafka does
    with pytest.raises(Exception) as refused:
        futures["too-many"].result(30)
    message = str(refused.value)
    assert "POLICY_VIOLATION" in message and "max.broker.partitions" in message and "150" in message
    with pytest.raises(Exception) as grown:
        admin.create_partitions([NewPartitions("fits", 51)])["fits"].result(30)
    assert "POLICY_VIOLATION" in str(grown.value)
    listed = admin.list_topics(timeout=30).topics
    assert "too-many" not in listed and len(listed["fits"].partitions) == 40
    assert not [d for d in os.listdir(b.data_dir) if d.startswith("too-many")]
    assert {d for d in os.listdir(b.data_dir) if d.startswith("fits-")} <= {f"fits-{i}" for i in range(40)}


def test_all_topics_metadata_from_cached_topic_bytes_is_what_kio_encodes_in_every_version() -> None:
    async def check() -> None:
        broker = Broker(BrokerConfig(storage="memory"))
        broker.open()
        broker.create_topic("three", 3)
        broker.create_topic("wide", 300)  # a topics array whose entries pass 128 bytes
        broker.create_topic("x" * 249, 1)
        dispatcher = Dispatcher(broker, ROUTES)
        for version in range(ROUTES[3].min_version, ROUTES[3].max_version + 1):
            cls = request_type(3, version)
            flags = {f.name: False for f in dataclasses.fields(cls) if f.name.startswith(("allow_", "include_"))}
            frame = encode_request(3, version, 7, cls(topics=None if version else (), **flags))[4:]
            spliced = await dispatcher.dispatch(None, frame)
            again = await dispatcher.dispatch(None, frame)  # from the cache
            broker.create_partitions("three", 4 + version)  # a changed topic is encoded afresh
            grown = await dispatcher.dispatch(None, frame)
            cache = metadata._topic_cache
            metadata._topic_cache = lambda ctx, request: None
            try:
                built = await dispatcher.dispatch(None, frame)
            finally:
                metadata._topic_cache = cache
            assert spliced == again and grown == built, f"Metadata v{version}"
            assert spliced != grown

    asyncio.run(check())


def append(plog: PartitionLog, value: bytes) -> None:
    data = encode_batch([(b"k", value, ())], timestamp_ms=time.time_ns() // 1_000_000)
    plog.append(data, scan_batches(data)[0], now_ms=time.time_ns() // 1_000_000)
    plog.high_watermark = plog.log_end_offset


def values(plog: PartitionLog) -> list[bytes | None]:
    data = plog.read(plog.log_start_offset, 1 << 20)
    out: list[bytes | None] = []
    while data:
        size = 12 + int.from_bytes(data[8:12], "big")
        out += [r.value for r in decode_batch(data[:size]).records]
        data = data[size:]
    return out


def wait_for_file_thread(data_dir: Path) -> None:
    deadline = time.monotonic() + 30
    while any(n.endswith("-delete") for n in os.listdir(data_dir)) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_partition_recreated_right_after_its_deletion_holds_only_its_new_records(tmp_path: Path) -> None:
    # the deleted log's directory is renamed by a background thread; the new log's first write
    # must neither land in the old directory nor be removed with it
    manager = LogManager(tmp_path, default_config=LogConfig())
    manager.open()
    for round_ in range(20):
        old = manager.get_or_create("t", 0, LogConfig())
        append(old, b"old %d" % round_)
        manager.delete_topic("t")
        new = manager.get_or_create("t", 0, LogConfig())
        append(new, b"new %d" % round_)
        if round_ < 19:
            manager.delete_topic("t")
    wait_for_file_thread(tmp_path)
    manager.close()
    reopened = LogManager(tmp_path, default_config=LogConfig())
    reopened.open()
    plog = reopened.get("t", 0)
    assert plog is not None and values(plog) == [b"new 19"]
    reopened.close()


def test_more_logs_than_open_segments_are_written_and_read_through_evictions(tmp_path: Path) -> None:
    capacity = OPEN_SEGMENTS.capacity
    OPEN_SEGMENTS.resize(8)
    try:
        logs = [PartitionLog.create(tmp_path / f"t-{p}", "t", p, LogConfig()) for p in range(50)]
        for round_ in range(3):
            for p, plog in enumerate(logs):
                append(plog, b"%d/%d" % (p, round_))
                assert len(OPEN_SEGMENTS) <= 8
        for p, plog in enumerate(logs):
            assert values(plog) == [b"%d/%d" % (p, r) for r in range(3)]
        assert len(OPEN_SEGMENTS) <= 8 and OPEN_SEGMENTS.evicted > 0
        for plog in logs:
            plog.close()
        reopened = [PartitionLog.open(tmp_path / f"t-{p}", "t", p, LogConfig()) for p in range(50)]
        assert [values(plog) for plog in reopened] == [[b"%d/%d" % (p, r) for r in range(3)] for p in range(50)]
    finally:
        OPEN_SEGMENTS.resize(capacity)


def test_leader_epochs_not_yet_checkpointed_are_recovered_from_the_batches_after_a_crash(tmp_path: Path) -> None:
    plog = PartitionLog.create(tmp_path / "t-0", "t", 0, LogConfig())
    plog.leader_epoch = 3
    append(plog, b"a")
    plog.leader_epoch = 5
    append(plog, b"b")
    # no flush, no close: the leader-epoch-checkpoint was never written
    crashed = PartitionLog.open(tmp_path / "t-0", "t", 0, LogConfig(), recovery_point=0, clean_shutdown=False)
    assert crashed.epochs == [(3, 0), (5, 1)] and crashed.end_offset_for_epoch(3) == (3, 1)
    assert values(crashed) == [b"a", b"b"]


def test_produce_answers_written_directly_are_what_kio_encodes_in_every_version() -> None:
    from odradek.server.handlers import produce

    async def check() -> None:
        broker = Broker(BrokerConfig(storage="memory"))
        broker.open()
        broker.create_topic("one", 3)
        broker.create_topic("two", 1)
        dispatcher = Dispatcher(broker, ROUTES)
        good = encode_batch([(b"k", b"v" * 100, ())], timestamp_ms=time.time_ns() // 1_000_000)
        corrupt = good[:-1] + bytes([good[-1] ^ 1])  # a flipped byte: CORRUPT_MESSAGE with a message
        ids = {name: t.topic_id for name, t in broker.topics().items()}
        for version in range(ROUTES[0].min_version, ROUTES[0].max_version + 1):
            cls = request_type(0, version)
            topic_field = "topic_id" if version >= 13 else "name"

            def topic(name: str, parts: list[tuple[int, bytes]], version: int = version,
                      topic_field: str = topic_field) -> dict[str, Any]:
                key: Any = ids.get(name, uuid.uuid4()) if version >= 13 else name
                return {topic_field: key, "partition_data": [{"index": i, "records": r} for i, r in parts]}

            body = build(cls, transactional_id=None, acks=1, timeout=datetime.timedelta(seconds=5), topic_data=[
                topic("one", [(0, good), (1, corrupt), (7, good)]), topic("two", [(0, good)]),
                topic("missing", [(0, good)])])
            frame = encode_request(0, version, 11, body)[4:]
            direct = await dispatcher.dispatch(None, frame)
            writer = produce.encode_response_body
            produce.encode_response_body = lambda version, responses: None
            try:
                by_kio = await dispatcher.dispatch(None, frame)
            finally:
                produce.encode_response_body = writer
            # the same answer but for the offsets the second append got
            assert direct is not None and by_kio is not None
            first = decode_response(direct[4:], 0, version)[1]
            second = decode_response(by_kio[4:], 0, version)[1]
            assert len(direct) == len(by_kio), f"Produce v{version}"
            for a, b in zip(first.responses, second.responses, strict=True):
                for pa, pb in zip(a.partition_responses, b.partition_responses, strict=True):
                    assert (pa.index, pa.error_code, getattr(pa, "error_message", None)) == (
                        pb.index, pb.error_code, getattr(pb, "error_message", None))
                    assert pb.base_offset == (pa.base_offset + 1 if pa.base_offset >= 0 else -1)

    asyncio.run(check())
