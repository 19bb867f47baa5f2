"""`odradek serve`: configuration, on-disk layout, recovery, fetch semantics."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from conftest import ROOT, BrokerProcess, unique, wait_for_port
from kio.schema.errors import ErrorCode
from test_bad_input import roundtrip
from test_clients import consume_ck, create_topic, produce_ck

from odradek.protocol.build import build
from odradek.protocol.framing import request_type


def partitions_of(bootstrap: str, topic: str) -> int:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return len(md.topics[topic].partitions)


def test_config_file_env_and_flags_use_kafka_names(tmp_path: Path, broker_factory) -> None:  # type: ignore[no-untyped-def]
    props = tmp_path / "server.properties"
    props.write_text("# Kafka's keys\nnum.partitions=3\nlog.segment.bytes=1048576\nauto.create.topics.enable=true\n")
    b = broker_factory("--config", str(props))
    produce_ck(b.bootstrap, "auto3", [{"value": b"x"}])
    assert partitions_of(b.bootstrap, "auto3") == 3, "num.partitions from server.properties"
    b2 = broker_factory("--config", str(props), env={"ODRADEK_NUM_PARTITIONS": "5"})
    produce_ck(b2.bootstrap, "auto5", [{"value": b"x"}])
    assert partitions_of(b2.bootstrap, "auto5") == 5, "ODRADEK_* env beats the file"


def test_bad_configuration_is_one_sentence_not_a_traceback(tmp_path: Path) -> None:
    props = tmp_path / "server.properties"
    props.write_text("num.partitions=many\n")
    for args in (["--config", str(props)], ["--listen", "127.0.0.1:notaport"], ["--config", str(tmp_path / "missing")]):
        out = subprocess.run([sys.executable, "-m", "odradek", "serve", "--data-dir", str(tmp_path / "d"), *args],
                             capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
        assert out.returncode == 2, out.stderr
        assert "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_port_in_use_is_one_sentence(broker: BrokerProcess, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "odradek", "serve", "--listen", broker.bootstrap,
                          "--data-dir", str(tmp_path / "d")], capture_output=True, text=True, timeout=60, cwd=ROOT,
                         check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr and "cannot listen" in out.stderr


def test_segments_roll_in_kafkas_layout_and_missing_indexes_are_rebuilt(broker_factory) -> None:  # type: ignore[no-untyped-def]
    b = broker_factory()
    topic = unique("roll")
    create_topic(b.bootstrap, topic, config={"segment.bytes": "65536"})
    values = [{"value": b"%06d" % i + b"." * 500} for i in range(2000)]
    produce_ck(b.bootstrap, topic, values, **{"batch.num.messages": 50})
    part = Path(b.data_dir) / f"{topic}-0"
    logs = sorted(p.name for p in part.glob("*.log"))
    assert len(logs) > 5 and logs[0] == "00000000000000000000.log"
    assert all(len(n) == len("00000000000000000000.log") for n in logs)
    for n in logs:
        stem = n[:-4]
        assert (part / f"{stem}.index").exists() and (part / f"{stem}.timeindex").exists()
    assert (part / "leader-epoch-checkpoint").exists()
    b.stop()
    for idx in part.glob("*.index"):
        idx.unlink()
    (part / logs[2].replace(".log", ".timeindex")).write_bytes(b"\x01" * 7)  # a broken one
    b.start()
    got = consume_ck(b.bootstrap, topic, 2000)
    assert [m.value()[:6] for m in got] == [b"%06d" % i for i in range(2000)]
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": unique("g")})
    c.assign([TopicPartition(topic, 0, 1234)])
    m = None
    deadline = time.monotonic() + 60
    while m is None and time.monotonic() < deadline:
        m = c.poll(0.5)
    c.close()
    assert m is not None and m.offset() == 1234 and m.value()[:6] == b"001234", "reads from the middle use the index"


def test_torn_tail_after_kill_is_truncated_and_acknowledged_records_kept(broker_factory) -> None:  # type: ignore[no-untyped-def]
    b = broker_factory()
    topic = unique("torn")
    create_topic(b.bootstrap, topic)
    produce_ck(b.bootstrap, topic, [{"value": b"r%d" % i} for i in range(500)])
    b.kill()
    log_file = Path(b.data_dir) / f"{topic}-0" / "00000000000000000000.log"
    good = log_file.stat().st_size
    with open(log_file, "ab") as f:  # half a batch: a write torn by the crash
        f.write(log_file.read_bytes()[:40])
    b.start()
    assert "truncating" in b.logs()
    assert log_file.stat().st_size == good
    got = consume_ck(b.bootstrap, topic, 500)
    assert [m.value() for m in got] == [b"r%d" % i for i in range(500)]
    placed = produce_ck(b.bootstrap, topic, [{"value": b"after"}])
    assert placed == [(0, 500)], "offsets continue where the acknowledged records end"


def test_log_append_time_topic_stamps_broker_time(broker: BrokerProcess) -> None:
    topic = unique("lat")
    create_topic(broker.bootstrap, topic, config={"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    produce_ck(broker.bootstrap, topic, [{"value": b"x", "timestamp": 1_000_000_000_000}])
    (m,) = consume_ck(broker.bootstrap, topic, 1)
    ts_type, ts = m.timestamp()
    assert ts_type == 2 and before - 1000 <= ts <= int(time.time() * 1000) + 1000  # 2 = LOG_APPEND_TIME


def fetch(bootstrap: str, topic: str, offset: int, max_wait_ms: int, min_bytes: int = 1) -> object:
    req = build(request_type(1, 12), replica_id=-1, max_wait=max_wait_ms, min_bytes=min_bytes, max_bytes=1 << 20,
                session_epoch=-1, topics=[{"topic": topic, "partitions": [
                    {"partition": 0, "fetch_offset": offset, "partition_max_bytes": 1 << 20,
                     "current_leader_epoch": -1, "last_fetched_epoch": -1, "log_start_offset": -1}]}])
    # the socket outlasts the long poll: the broker's answer, not the client, ends the wait
    return roundtrip(bootstrap, 1, 12, req, timeout=max_wait_ms / 1000 + 30).responses[0].partitions[0]  # type: ignore[attr-defined]


def test_fetch_long_polls_until_data_arrives(broker: BrokerProcess) -> None:
    topic = unique("poll")
    create_topic(broker.bootstrap, topic)
    started = time.monotonic()
    empty = fetch(broker.bootstrap, topic, 0, 1500)
    assert time.monotonic() - started >= 1.4, "an empty fetch waits max_wait"
    assert empty.records in (b"", None)  # type: ignore[attr-defined]
    timer = threading.Timer(0.5, lambda: produce_ck(broker.bootstrap, topic, [{"value": b"wake"}]))
    timer.start()
    started = time.monotonic()
    got = fetch(broker.bootstrap, topic, 0, 120_000)
    timer.join()
    # well before the 120 s max_wait (a loaded machine may take seconds to produce the record)
    assert time.monotonic() - started < 60, "the append woke the parked fetch"
    assert b"wake" in bytes(got.records)  # type: ignore[attr-defined]


def test_fetch_outside_the_log_is_offset_out_of_range(broker: BrokerProcess) -> None:
    topic = unique("oor")
    create_topic(broker.bootstrap, topic)
    produce_ck(broker.bootstrap, topic, [{"value": b"a"}, {"value": b"b"}])
    assert fetch(broker.bootstrap, topic, 3, 0).error_code == ErrorCode.offset_out_of_range  # type: ignore[attr-defined]
    at_end = fetch(broker.bootstrap, topic, 2, 0)
    assert at_end.error_code == ErrorCode.none and at_end.high_watermark == 2  # type: ignore[attr-defined]


def test_fetch_returns_whole_batches_and_the_first_even_if_larger_than_max_bytes(broker: BrokerProcess) -> None:
    topic = unique("whole")
    create_topic(broker.bootstrap, topic)
    produce_ck(broker.bootstrap, topic, [{"value": b"z" * 5000} for _ in range(3)], **{"batch.num.messages": 1})
    req = build(request_type(1, 12), replica_id=-1, max_wait=0, min_bytes=1, max_bytes=100, session_epoch=-1,
                topics=[{"topic": topic, "partitions": [{"partition": 0, "fetch_offset": 1, "partition_max_bytes": 100,
                         "current_leader_epoch": -1, "last_fetched_epoch": -1, "log_start_offset": -1}]}])
    part = roundtrip(broker.bootstrap, 1, 12, req).responses[0].partitions[0]  # type: ignore[attr-defined]
    from odradek.protocol.records import parse_batches

    batches = parse_batches(bytes(part.records))
    assert [b.base_offset for b in batches] == [1], "exactly one whole batch, larger than max_bytes"


def test_sigterm_stops_quickly_with_clean_shutdown_marker(broker_factory) -> None:  # type: ignore[no-untyped-def]
    b = broker_factory()
    produce_ck(b.bootstrap, unique("quit"), [{"value": b"x"}])
    assert b.stop() == 0
    assert "the shutdown did not end within" not in b.logs(), "the stop ends by itself, not at its budget"
    data = Path(b.data_dir)
    assert (data / ".kafka_cleanshutdown").exists()
    assert (data / "recovery-point-offset-checkpoint").read_text().startswith("0\n")
    assert "broker.id=0" in (data / "meta.properties").read_text()


def test_default_serve_listens_on_9092_with_odradek_data(tmp_path: Path) -> None:
    """`odradek serve` with no arguments: 127.0.0.1:9092 and ./odradek-data."""
    import socket

    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 9092)) == 0:
            raise AssertionError("port 9092 is in use on this machine; the default cannot be checked")
    proc = subprocess.Popen([sys.executable, "-m", "odradek", "serve"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    try:
        wait_for_port(9092, proc=proc)  # type: ignore[arg-type]
        produce_ck("127.0.0.1:9092", "default-check", [{"value": b"x"}])
        assert (tmp_path / "odradek-data" / "default-check-0").is_dir()
    finally:
        proc.terminate()
        proc.wait(10)
