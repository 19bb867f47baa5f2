"""Bad input gets Kafka's answer, a log line, and no crash; nothing is lost."""

from __future__ import annotations

import datetime
import socket
import struct

import pytest
from confluent_kafka import Producer
from conftest import BrokerProcess, recv_exact, unique
from kio.schema.errors import ErrorCode
from kio.static.primitive import Records
from test_clients import consume_ck, create_topic, produce_ck

from odradek.protocol.build import build
from odradek.protocol.framing import decode_response, encode_request, request_type


def roundtrip(bootstrap: str, api_key: int, version: int, body: object, *, raw: bytes | None = None,
              timeout: float = 10) -> object:
    host, port = bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(raw if raw is not None else encode_request(api_key, version, 7, body))
        size = struct.unpack(">i", recv_exact(s, 4))[0]
        frame = recv_exact(s, size)
    return decode_response(frame, api_key, version)[1]


def valid_batch() -> bytes:
    from odradek.protocol.records import encode_batch

    return encode_batch([(b"k", b"v", ())], base_offset=0, timestamp_ms=1_700_000_000_000)


def produce_raw(bootstrap: str, topic: str, records: bytes) -> object:
    cls = request_type(0, 9)
    body = build(cls, acks=1, timeout=datetime.timedelta(seconds=5),
                 topic_data=[{"name": topic, "partition_data": [{"index": 0, "records": Records(records)}]}])
    return roundtrip(bootstrap, 0, 9, body)


def assert_alive(broker: BrokerProcess) -> None:
    topic = unique("alive")
    produce_ck(broker.bootstrap, topic, [{"value": b"still here"}])
    assert consume_ck(broker.bootstrap, topic, 1)[0].value() == b"still here"


@pytest.mark.kafka_behaviour
def test_flipped_byte_is_corrupt_message_and_nothing_is_written(broker: BrokerProcess) -> None:
    topic = unique("crc")
    create_topic(broker.bootstrap, topic)
    good = produce_raw(broker.bootstrap, topic, valid_batch())
    assert good.responses[0].partition_responses[0].error_code == ErrorCode.none  # type: ignore[attr-defined]
    bad = bytearray(valid_batch())
    bad[-3] ^= 0xFF
    resp = produce_raw(broker.bootstrap, topic, bytes(bad))
    part = resp.responses[0].partition_responses[0]  # type: ignore[attr-defined]
    assert part.error_code == ErrorCode.corrupt_message
    # the corrupt batch was not appended: the next good one gets offset 1
    again = produce_raw(broker.bootstrap, topic, valid_batch())
    assert again.responses[0].partition_responses[0].base_offset == 1  # type: ignore[attr-defined]


def lying_count(batch: bytes, count: int) -> bytes:
    """The batch with another record count (and last offset delta), its CRC made right again."""
    import crc32c

    lie = bytearray(batch)
    struct.pack_into(">i", lie, 23, count - 1)
    struct.pack_into(">i", lie, 57, count)
    struct.pack_into(">I", lie, 17, crc32c.crc32c(bytes(lie[21:])))
    return bytes(lie)


@pytest.mark.kafka_behaviour
def test_a_batch_lying_about_its_record_count_is_refused_and_takes_no_offsets(broker: BrokerProcess) -> None:
    """One record claiming to be 1,000 (or 2**31 - 1) took that many offsets before, and the Java
    consumer, which reads exactly the claimed count, failed on the batch."""
    from odradek.protocol.records import encode_batch

    topic = unique("count")
    create_topic(broker.bootstrap, topic)
    two = encode_batch([(b"k", b"v", ())] * 2, timestamp_ms=1_700_000_000_000)
    codes = [produce_raw(broker.bootstrap, topic, lie).responses[0].partition_responses[0].error_code  # type: ignore[attr-defined]
             for lie in (lying_count(valid_batch(), 1000), lying_count(valid_batch(), 2**31 - 1), lying_count(two, 1))]
    assert codes == [ErrorCode.invalid_record] * 3  # Kafka's InvalidRecordException from its record iterator
    again = produce_raw(broker.bootstrap, topic, valid_batch())
    assert again.responses[0].partition_responses[0].base_offset == 0  # type: ignore[attr-defined]


@pytest.mark.kafka_behaviour
def test_truncated_batch_is_invalid_record(broker: BrokerProcess) -> None:
    # Kafka's ProduceRequest.validateRecords: no whole batch in the partition's records
    topic = unique("trunc")
    create_topic(broker.bootstrap, topic)
    resp = produce_raw(broker.bootstrap, topic, valid_batch()[:-5])
    assert resp.responses[0].partition_responses[0].error_code == ErrorCode.invalid_record  # type: ignore[attr-defined]


@pytest.mark.kafka_behaviour
def test_message_larger_than_max_message_bytes_is_rejected(broker: BrokerProcess) -> None:
    topic = unique("big")
    create_topic(broker.bootstrap, topic, config={"max.message.bytes": "2000"})
    p = Producer({"bootstrap.servers": broker.bootstrap, "message.max.bytes": 100000, "retries": 0})
    errors = []
    p.produce(topic, value=b"x" * 5000, on_delivery=lambda err, msg: errors.append(err))
    p.flush(15)
    assert errors and errors[0] is not None and errors[0].name() == "MSG_SIZE_TOO_LARGE"
    assert_alive(broker)


@pytest.mark.kafka_behaviour
def test_unknown_topic_with_auto_create_off(broker_factory) -> None:  # type: ignore[no-untyped-def]
    b = broker_factory(env={"ODRADEK_AUTO_CREATE_TOPICS_ENABLE": "false"})
    resp = produce_raw(b.bootstrap, "nope", valid_batch())
    assert resp.responses[0].partition_responses[0].error_code == ErrorCode.unknown_topic_or_partition  # type: ignore[attr-defined]
    meta = roundtrip(b.bootstrap, 3, 9, build(request_type(3, 9), topics=[{"name": "nope"}],
                                               allow_auto_topic_creation=True))
    assert meta.topics[0].error_code == ErrorCode.unknown_topic_or_partition  # type: ignore[attr-defined]


@pytest.mark.kafka_behaviour
def test_invalid_topic_name_in_metadata(broker: BrokerProcess) -> None:
    meta = roundtrip(broker.bootstrap, 3, 9, build(request_type(3, 9), topics=[{"name": "bad name!"}],
                                                    allow_auto_topic_creation=True))
    assert meta.topics[0].error_code == ErrorCode.invalid_topic_exception  # type: ignore[attr-defined]


@pytest.mark.kafka_behaviour
def test_unknown_api_versions_version_gets_v0_unsupported_version(broker: BrokerProcess) -> None:
    # ApiVersions v99 with an empty body: the broker answers v0 with UNSUPPORTED_VERSION (KIP-511).
    # A client newer than the broker sends request header v2 (ApiVersions v3+): its tag section too.
    frame = struct.pack(">hhih", 18, 99, 7, 1) + b"x" + b"\0"
    resp = roundtrip(broker.bootstrap, 18, 0, None, raw=struct.pack(">i", len(frame)) + frame)
    assert resp.error_code == ErrorCode.unsupported_version  # type: ignore[attr-defined]
    keys = {k.api_key: (k.min_version, k.max_version) for k in resp.api_keys}  # type: ignore[attr-defined]
    assert keys == {18: (0, 4)}  # only its own range: the version to retry with


@pytest.mark.parametrize(
    "raw",
    [
        struct.pack(">i", 0x7FFFFFFF) + b"\0" * 16,  # absurd length prefix
        struct.pack(">i", 12) + struct.pack(">hhi", 999, 0, 1) + b"\0\0\0\0",  # unknown API key
        struct.pack(">i", 12) + struct.pack(">hhi", 0, 77, 1) + b"\0\0\0\0",  # unsupported Produce version
        struct.pack(">i", 10) + struct.pack(">hhi", 3, 9, 1) + b"\xff\xff",  # truncated Metadata
        struct.pack(">i", 3) + b"abc",  # shorter than a header
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 32,  # a TLS ClientHello
    ],
    ids=["huge-length", "unknown-api", "unsupported-version", "truncated", "tiny", "tls-hello"],
)
@pytest.mark.kafka_behaviour
def test_garbage_frames_close_the_connection_and_the_broker_keeps_serving(broker: BrokerProcess, raw: bytes) -> None:
    host, port = broker.bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(raw)
        s.settimeout(5)
        assert s.recv(100) == b""  # closed without an answer
    assert_alive(broker)


@pytest.mark.kafka_behaviour
def test_offset_delete_with_a_partition_listed_twice_deletes_it_once(broker: BrokerProcess) -> None:
    # Found by bench/atheris_fuzz.py: the second copy raised KeyError inside the coordinator.
    topic, group = unique("od"), unique("g")
    create_topic(broker.bootstrap, topic)
    commit = build(request_type(8, 2), group_id=group, generation_id_or_member_epoch=-1, member_id="",
                   retention_time_ms=-1, topics=[{"name": topic, "partitions": [
                       {"partition_index": 0, "committed_offset": 5, "committed_metadata": ""}]}])
    assert roundtrip(broker.bootstrap, 8, 2, commit).topics[0].partitions[0].error_code == 0  # type: ignore[attr-defined]
    delete = build(request_type(47, 0), group_id=group, topics=[
        {"name": topic, "partitions": [{"partition_index": 0}, {"partition_index": 0}]}])
    resp = roundtrip(broker.bootstrap, 47, 0, delete)
    assert resp.error_code == 0  # type: ignore[attr-defined]
    assert [p.error_code for p in resp.topics[0].partitions] == [0, 0]  # type: ignore[attr-defined]
    assert_alive(broker)


def test_offset_for_leader_epoch_on_a_memory_broker() -> None:
    # Found by bench/atheris_fuzz.py: memory logs had no end_offset_for_epoch.
    from odradek.testing import Broker

    with Broker(storage="memory") as b:
        b.create_topic("ofle")
        body = build(request_type(23, 4), replica_id=-1, topics=[{"topic": "ofle", "partitions": [
            {"partition": 0, "current_leader_epoch": -1, "leader_epoch": 0}]}])
        resp = roundtrip(b.bootstrap_servers, 23, 4, body)
        part = resp.topics[0].partitions[0]  # type: ignore[attr-defined]
        assert (part.error_code, part.leader_epoch, part.end_offset) == (0, 0, 0)
