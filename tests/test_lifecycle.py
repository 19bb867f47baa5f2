"""The log lifecycle through real clients: retention, DeleteRecords, compaction (and a kill -9
in the middle of it), offsets_for_times over many segments, topic config validation and
sources, and the idempotent producer's dedup (a duplicating proxy, and across a restart)."""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Any

import pytest
from confluent_kafka import (
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)
from conftest import BrokerProcess, free_port, recv_exact, unique

from odradek.protocol.build import build
from odradek.protocol.framing import decode_response, encode_request, request_type, response_type
from odradek.protocol.records import encode_batch

FAST = {"ODRADEK_LOG_RETENTION_CHECK_INTERVAL_MS": "100", "ODRADEK_LOG_CLEANER_BACKOFF_MS": "100"}


def create_topic(bootstrap: str, name: str, config: dict[str, str] | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, 1, 1, config=config or {})], operation_timeout=10)[name].result(10)


def produce_rounds(bootstrap: str, topic: str, rounds: list[list[dict[str, Any]]], **conf: Any) -> None:
    """Each round is flushed on its own, so it becomes at least one batch (one segment when small)."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, **conf})
    errors: list[Any] = []
    for messages in rounds:
        for m in messages:
            p.produce(topic, on_delivery=lambda err, _msg: err and errors.append(err), **m)
        assert p.flush(15) == 0
    assert not errors, errors


def watermarks(bootstrap: str, topic: str) -> tuple[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("g")})
    try:
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return int(low), int(high)
    finally:
        c.close()


def read_topic(bootstrap: str, topic: str, start: int = -2, **conf: Any) -> list[Any]:
    """Every record from `start` (default: earliest) up to the high watermark."""
    _, high = watermarks(bootstrap, topic)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("g"), "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "enable.partition.eof": True, **conf})
    c.assign([TopicPartition(topic, 0, start)])
    out: list[Any] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    if msg.offset() >= high:
                        return out
                    continue
                raise KafkaException(msg.error())
            out.append(msg)
            if msg.offset() >= high - 1:
                return out
    finally:
        c.close()
    raise AssertionError(f"read {len(out)} records of {topic} before the deadline")


def wait_until(check: Any, timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def error_name(future: Any) -> tuple[str, str]:
    with pytest.raises(KafkaException) as info:
        future.result(10)
    err = info.value.args[0]
    return err.name(), err.str()


# -- retention ------------------------------------------------------------------


def test_retention_ms_deletes_old_segments_and_consumers_reset(broker_factory: Any) -> None:
    b = broker_factory(env=FAST)
    topic = unique("ret")
    create_topic(b.bootstrap, topic, {"segment.bytes": "100", "retention.ms": "600000"})
    old = int(time.time() * 1000) - 3_600_000
    produce_rounds(b.bootstrap, topic, [[{"value": b"old-%d" % i, "timestamp": old + i}] for i in range(6)])
    produce_rounds(b.bootstrap, topic, [[{"value": b"new"}]])
    # retention may run between the sixth old batch and "new"; then segment 5 (active at that pass) goes at the next pass
    low, high = wait_until(lambda: (w := watermarks(b.bootstrap, topic))[0] >= 6 and w, what="retention")
    assert (low, high) == (6, 7)
    assert [m.value() for m in read_topic(b.bootstrap, topic, start=0)] == [b"new"]  # auto.offset.reset=earliest
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": unique("g"), "auto.offset.reset": "error"})
    c.assign([TopicPartition(topic, 0, 2)])
    try:
        msg = wait_until(lambda: c.poll(0.2), what="an offset out of range error")
        assert msg.error() is not None and msg.error().code() == KafkaError._AUTO_OFFSET_RESET
        assert "out of range" in msg.error().str().lower()
    finally:
        c.close()


def test_retention_bytes_keeps_the_newest_segments(broker_factory: Any) -> None:
    b = broker_factory(env=FAST)
    topic = unique("retb")
    create_topic(b.bootstrap, topic, {"segment.bytes": "100", "retention.bytes": "250"})
    produce_rounds(b.bootstrap, topic, [[{"value": b"x" * 40}] for _ in range(10)])
    low, high = wait_until(lambda: (w := watermarks(b.bootstrap, topic))[0] >= 7 and w, what="size retention")
    assert high == 10
    assert len(read_topic(b.bootstrap, topic)) == high - low


# -- DeleteRecords --------------------------------------------------------------


def test_delete_records_moves_the_low_watermark_durably(broker_factory: Any) -> None:
    b = broker_factory()
    topic = unique("del")
    create_topic(b.bootstrap, topic, {"segment.bytes": "200"})
    produce_rounds(b.bootstrap, topic, [[{"value": b"%d" % i} for i in range(10)]])
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    tp = TopicPartition(topic, 0, 4)
    result = admin.delete_records([tp])[tp].result(10)
    assert result.low_watermark == 4
    beyond = TopicPartition(topic, 0, 11)
    assert error_name(admin.delete_records([beyond])[beyond])[0] == "OFFSET_OUT_OF_RANGE"
    assert [m.offset() for m in read_topic(b.bootstrap, topic)] == list(range(4, 10))
    b.kill()
    b.start()
    assert watermarks(b.bootstrap, topic) == (4, 10)


# -- compaction -----------------------------------------------------------------


def latest(rows: list[Any]) -> dict[bytes, bytes | None]:
    return {m.key(): m.value() for m in rows}


def test_compaction_keeps_the_latest_value_per_key_and_drops_tombstones(broker_factory: Any) -> None:
    b = broker_factory(env=FAST)
    topic = unique("compact")
    create_topic(b.bootstrap, topic, {"cleanup.policy": "compact", "segment.bytes": "2000",
                                      "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "0"})
    rounds = [[{"key": b"k%d" % k, "value": b"v%d-%d" % (k, r)} for k in range(20)] for r in range(10)]
    rounds.append([{"key": b"k%d" % k, "value": None} for k in range(5)])
    rounds += [[{"key": b"tail", "value": b"%d" % i}] for i in range(30)]
    produce_rounds(b.bootstrap, topic, rounds, **{"compression.type": "lz4"})
    expected = {b"k%d" % k: b"v%d-9" % k for k in range(5, 20)} | {b"tail": b"29"}

    def compacted() -> list[Any] | None:
        rows = read_topic(b.bootstrap, topic)
        keys = [m.key() for m in rows if m.key() != b"tail"]
        return rows if len(keys) == len(set(keys)) == 15 else None

    rows = wait_until(compacted, what="the cleaner")
    assert latest(rows) == expected
    assert rows[-1].offset() == 10 * 20 + 5 + 29  # offsets kept
    assert watermarks(b.bootstrap, topic)[1] == 10 * 20 + 5 + 30


def test_kill_during_compaction_loses_and_duplicates_nothing(broker_factory: Any) -> None:
    b = broker_factory(env=FAST)
    topic = unique("compact-kill")
    create_topic(b.bootstrap, topic, {"cleanup.policy": "compact", "segment.bytes": "65536",
                                      "min.compaction.lag.ms": "3600000"})
    keys = 1000
    rounds = [[{"key": b"key-%d" % k, "value": b"value-%d-%d" % (k, r) + b"." * 40} for k in range(keys)]
              for r in range(40)]
    produce_rounds(b.bootstrap, topic, rounds)
    expected = latest(read_topic(b.bootstrap, topic))
    assert len(expected) == keys
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    res = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry("min.compaction.lag.ms", "0", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result(10)
    part = b.data_dir / f"{topic}-0"
    deadline = time.monotonic() + 30
    while not (list(part.glob("*.cleaned")) or list(part.glob("*.swap"))):
        assert time.monotonic() < deadline, "the cleaner never started"
        time.sleep(0.001)
    b.kill()
    b.env["ODRADEK_LOG_CLEANER_ENABLE"] = "false"
    b.start()
    rows = read_topic(b.bootstrap, topic)
    offsets = [m.offset() for m in rows]
    assert offsets == sorted(set(offsets))
    assert latest(rows) == expected
    b.stop()
    b.env["ODRADEK_LOG_CLEANER_ENABLE"] = "true"
    b.start()

    def cleaned() -> list[Any] | None:
        rows = read_topic(b.bootstrap, topic)
        return rows if len(rows) < 40 * keys // 2 else None

    assert latest(wait_until(cleaned, what="a full clean after the restart")) == expected


# -- time index -----------------------------------------------------------------


def test_offsets_for_times_across_many_segments(broker_factory: Any) -> None:
    b = broker_factory()
    topic = unique("times")
    create_topic(b.bootstrap, topic, {"segment.bytes": "150"})
    base = int(time.time() * 1000) - 100_000
    produce_rounds(b.bootstrap, topic, [[{"value": b"m%d" % i, "timestamp": base + i * 1000}] for i in range(30)])
    assert len(list((b.data_dir / f"{topic}-0").glob("*.timeindex"))) >= 10
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": unique("g")})
    try:
        for i in (0, 1, 7, 15, 28):
            found = c.offsets_for_times([TopicPartition(topic, 0, base + i * 1000 - 500)], timeout=10)
            assert found[0].offset == i
            exact = c.offsets_for_times([TopicPartition(topic, 0, base + i * 1000)], timeout=10)
            assert exact[0].offset == i
        after = c.offsets_for_times([TopicPartition(topic, 0, base + 60_000)], timeout=10)
        assert after[0].offset in (-1, 30)  # no such record: the end
    finally:
        c.close()


def test_log_append_time_topic_stamps_broker_time(broker: BrokerProcess) -> None:
    topic = unique("lat")
    create_topic(broker.bootstrap, topic, {"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    produce_rounds(broker.bootstrap, topic, [[{"value": b"a", "timestamp": 1000}, {"value": b"b", "timestamp": 2000}]])
    after = int(time.time() * 1000)
    rows = read_topic(broker.bootstrap, topic)
    for m in rows:
        kind, ts = m.timestamp()
        assert kind == TIMESTAMP_LOG_APPEND_TIME and before - 5 <= ts <= after + 5
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("g")})
    try:
        found = c.offsets_for_times([TopicPartition(topic, 0, before - 5)], timeout=10)
        assert found[0].offset == 0
    finally:
        c.close()


# -- configs --------------------------------------------------------------------


def test_invalid_topic_configs_are_refused_with_a_message(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for config, word in [({"retention.ms": "soon"}, "retention.ms"), ({"cleanup.policy": "shred"}, "cleanup.policy"),
                         ({"min.cleanable.dirty.ratio": "2"}, "min.cleanable.dirty.ratio"),
                         ({"no.such.config": "1"}, "no.such.config")]:
        name = unique("badconf")
        fut = admin.create_topics([NewTopic(name, 1, 1, config=config)])[name]
        code, message = error_name(fut)
        assert code == "INVALID_CONFIG" and word in message
    name = unique("conf")
    create_topic(broker.bootstrap, name)
    res = ConfigResource("topic", name, set_config={"max.compaction.lag.ms": "0"})
    code, message = error_name(admin.alter_configs([res])[res])
    assert code == "INVALID_CONFIG" and "max.compaction.lag.ms" in message
    inc = ConfigResource("topic", name, incremental_configs=[
        ConfigEntry("delete.retention.ms", "-5", incremental_operation=AlterConfigOpType.SET)])
    code, message = error_name(admin.incremental_alter_configs([inc])[inc])
    assert code == "INVALID_CONFIG" and "delete.retention.ms" in message


def test_describe_configs_shows_topic_default_and_static_broker_sources(broker_factory: Any) -> None:
    b = broker_factory(env={"ODRADEK_LOG_RETENTION_BYTES": "123456789"})
    topic = unique("src")
    create_topic(b.bootstrap, topic, {"cleanup.policy": "compact,delete"})
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    res = ConfigResource("topic", topic)
    configs = admin.describe_configs([res])[res].result(10)
    assert configs["cleanup.policy"].value == "compact,delete"
    assert configs["cleanup.policy"].source == 1  # DYNAMIC_TOPIC_CONFIG
    assert configs["retention.bytes"].value == "123456789"
    assert configs["retention.bytes"].source == 4  # STATIC_BROKER_CONFIG
    assert configs["min.compaction.lag.ms"].value == "0"
    assert configs["min.compaction.lag.ms"].source == 5  # DEFAULT_CONFIG
    broker_res = ConfigResource("broker", "0")
    broker_configs = admin.describe_configs([broker_res])[broker_res].result(10)
    assert broker_configs["log.retention.bytes"].value == "123456789"
    assert broker_configs["log.retention.bytes"].source == 4


# -- idempotent producer --------------------------------------------------------


def _recv_frame(sock: socket.socket) -> bytes:
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    return recv_exact(sock, size)


class DuplicatingProxy:
    """A TCP proxy on 127.0.0.1 that sends every Produce request twice to the broker and
    hides the extra response, as a network retry would."""

    def __init__(self, port: int, target: int) -> None:
        self.target = target
        self.duplicated = 0
        self.listener = socket.create_server(("127.0.0.1", port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            drop: set[int] = set()
            threading.Thread(target=self._up, args=(client, upstream, drop), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client, drop), daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket, drop: set[int]) -> None:
        try:
            while True:
                frame = _recv_frame(client)
                api_key, _version, correlation_id = struct.unpack_from(">hhi", frame)
                wire = struct.pack(">i", len(frame)) + frame
                if api_key == 0:
                    drop.add(correlation_id)
                    upstream.sendall(wire)
                    self.duplicated += 1
                upstream.sendall(wire)
        except (ConnectionError, OSError):
            upstream.close()

    def _down(self, upstream: socket.socket, client: socket.socket, drop: set[int]) -> None:
        try:
            while True:
                frame = _recv_frame(upstream)
                (correlation_id,) = struct.unpack_from(">i", frame)
                if correlation_id in drop:
                    drop.discard(correlation_id)
                    continue
                client.sendall(struct.pack(">i", len(frame)) + frame)
        except (ConnectionError, OSError):
            client.close()

    def close(self) -> None:
        self.listener.close()


def test_idempotent_producer_through_a_duplicating_proxy_writes_each_record_once(broker_factory: Any) -> None:
    proxy_port = free_port()
    b = broker_factory("--advertise", f"127.0.0.1:{proxy_port}")
    proxy = DuplicatingProxy(proxy_port, b.port)
    try:
        topic = unique("idem")
        create_topic(f"127.0.0.1:{proxy_port}", topic)
        rounds = [[{"key": b"k", "value": b"%d-%d" % (r, i)} for i in range(20)] for r in range(5)]
        produce_rounds(f"127.0.0.1:{proxy_port}", topic, rounds, **{"enable.idempotence": True})
        assert proxy.duplicated >= 5
        rows = read_topic(f"127.0.0.1:{proxy_port}", topic)
        assert [m.value() for m in rows] == [m["value"] for r in rounds for m in r]
        assert [m.offset() for m in rows] == list(range(100))
    finally:
        proxy.close()


def _call(port: int, api_key: int, version: int, values: dict[str, Any]) -> Any:
    body = build(request_type(api_key, version), values)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(encode_request(api_key, version, 7, body))
        _, response = decode_response(_recv_frame(s), api_key, version)
    assert isinstance(response, response_type(api_key, version))
    return response


def _produce_raw(port: int, topic: str, batch: bytes) -> tuple[int, int]:
    response = _call(port, 0, 8, {"transactional_id": None, "acks": -1, "timeout": 5000, "topic_data": [
        {"name": topic, "partition_data": [{"index": 0, "records": batch}]}]})
    part = response.responses[0].partition_responses[0]
    return int(part.error_code), int(part.base_offset)


def test_dedup_survives_a_broker_restart(broker_factory: Any) -> None:
    b = broker_factory()
    topic = unique("idem-restart")
    create_topic(b.bootstrap, topic)
    init = _call(b.port, 22, 1, {"transactional_id": None, "transaction_timeout": 60000})
    pid, epoch = int(init.producer_id), int(init.producer_epoch)
    batches = [encode_batch([(b"k", b"v%d" % i, ())], producer_id=pid, producer_epoch=epoch, base_sequence=i)
               for i in range(3)]
    assert [_produce_raw(b.port, topic, x) for x in batches] == [(0, 0), (0, 1), (0, 2)]
    b.kill()
    b.start()
    assert _produce_raw(b.port, topic, batches[2]) == (0, 2)  # a retry: the original offset, nothing new
    assert _produce_raw(b.port, topic, batches[1]) == (0, 1)
    assert watermarks(b.bootstrap, topic) == (0, 3)
    nxt = encode_batch([(b"k", b"v3", ())], producer_id=pid, producer_epoch=epoch, base_sequence=3)
    assert _produce_raw(b.port, topic, nxt) == (0, 3)
    gap = encode_batch([(b"k", b"v9", ())], producer_id=pid, producer_epoch=epoch, base_sequence=9)
    assert _produce_raw(b.port, topic, gap)[0] == 45  # OUT_OF_ORDER_SEQUENCE_NUMBER
    assert [m.value() for m in read_topic(b.bootstrap, topic)] == [b"v0", b"v1", b"v2", b"v3"]

