"""Kafka Connect 4.3.1 standalone with the FileStream connectors against a real `odradek serve`
(issue 15): the seed's log-aggregation use case.

org.apache.kafka.connect.cli.ConnectStandalone runs FileStreamSourceConnector, tailing a log file
into a topic, and FileStreamSinkConnector, writing the topic out to another file. Connect is
stopped with SIGTERM, more lines are appended, and it is started again: the source resumes from
the file position kept in offset.storage.file.filename, the sink from its consumer group's
committed offset, so the output file holds every line exactly once, in order.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from conftest import ROOT, BrokerProcess, free_port, module_broker, unique
from test_clients import create_topic

JAVA_DIR = ROOT / "tests" / "java"
JVM_FLAGS = ["-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]
ENV = {"ODRADEK_GROUP_INITIAL_REBALANCE_DELAY_MS": "0", "ODRADEK_OFFSETS_TOPIC_NUM_PARTITIONS": "3"}

cbroker = module_broker("cbroker", ENV)


def write_properties(path: Path, props: dict[str, str]) -> Path:
    path.write_text("".join(f"{key}={value}\n" for key, value in props.items()))
    return path


class ConnectStandalone:
    """One `ConnectStandalone worker.properties source.properties sink.properties` process."""

    def __init__(self, tmp: Path, bootstrap: str, topic: str) -> None:
        self.tmp = tmp
        self.input, self.output = tmp / "app.log", tmp / "aggregated.log"
        self.offsets = tmp / "connect.offsets"
        self.sink_group = "connect-log-sink"  # Kafka Connect's sink group: connect-<connector name>
        self.configs = [
            write_properties(tmp / "worker.properties", {
                "bootstrap.servers": bootstrap,
                "key.converter": "org.apache.kafka.connect.storage.StringConverter",
                "value.converter": "org.apache.kafka.connect.storage.StringConverter",
                "offset.storage.file.filename": str(self.offsets),
                "offset.flush.interval.ms": "500",
                "listeners": f"http://127.0.0.1:{free_port()}",
                # connect-file is on the classpath with its ServiceLoader manifests: no scan of every jar
                "plugin.discovery": "service_load",
            }),
            write_properties(tmp / "source.properties", {
                "name": "log-source", "connector.class": "FileStreamSource", "tasks.max": "1",
                "file": str(self.input), "topic": topic,
            }),
            write_properties(tmp / "sink.properties", {
                "name": "log-sink", "connector.class": "FileStreamSink", "tasks.max": "1",
                "file": str(self.output), "topics": topic,
            }),
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def log(self) -> Path:
        return self.tmp / f"connect{self.runs}.log"

    def start(self) -> None:
        java = shutil.which("java")
        assert java is not None, "no java on PATH (JDK 17 is needed)"
        assert any((JAVA_DIR / "lib").glob("connect-file-*.jar")), "tests/java/lib is empty (./dev test fills it)"
        self.runs += 1
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([java, *JVM_FLAGS, "-cp", str(JAVA_DIR / "lib" / "*"),
                                          "org.apache.kafka.connect.cli.ConnectStandalone",
                                          *map(str, self.configs)],
                                         stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)

    def stop(self) -> int:
        """SIGTERM: Connect stops its tasks, which flush and commit their offsets."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)

    def wait_until(self, what: str, check: Callable[[], bool], timeout: float = 60) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not check():
            assert self.proc.poll() is None, f"Connect exited ({self.proc.returncode}) before {what}:\n" + (
                self.log.read_text()[-4000:])
            assert time.monotonic() < deadline, f"no {what} after {timeout} s:\n" + self.log.read_text()[-4000:]
            time.sleep(0.2)

    def output_lines(self) -> list[str]:
        return self.output.read_text().splitlines() if self.output.exists() else []


def append(path: Path, lines: list[str]) -> None:
    with open(path, "a") as f:
        f.write("".join(line + "\n" for line in lines))


def log_lines(start: int, stop: int) -> list[str]:
    return [f"2026-12-01T00:00:{i % 60:02d}Z INFO request {i} served in {i % 97} ms" for i in range(start, stop)]


def committed_and_end(bootstrap: str, group: str, topic: str) -> tuple[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tp = TopicPartition(topic, 0)
        return int(c.committed([tp], timeout=10)[0].offset), int(c.get_watermark_offsets(tp, timeout=10)[1])
    finally:
        c.close()


@pytest.mark.kafka_behaviour
def test_file_source_and_sink_keep_their_offsets_across_a_restart(cbroker: BrokerProcess, tmp_path: Path) -> None:
    topic = unique("logs")
    create_topic(cbroker.bootstrap, topic)  # one partition: the aggregated file keeps the log's order
    connect = ConnectStandalone(tmp_path, cbroker.bootstrap, topic)
    written = log_lines(0, 200)
    append(connect.input, written)
    connect.start()
    try:
        connect.wait_until("the first lines copied", lambda: len(connect.output_lines()) >= len(written))
        more = log_lines(200, 300)  # tailed while Connect runs
        append(connect.input, more)
        written += more
        connect.wait_until("the appended lines copied", lambda: len(connect.output_lines()) >= len(written))
    finally:
        assert connect.stop() in (0, 128 + signal.SIGTERM), connect.log.read_text()[-4000:]
    assert connect.output_lines() == written
    assert committed_and_end(cbroker.bootstrap, connect.sink_group, topic) == (len(written), len(written)), (
        "the sink committed its group offset when it stopped")
    assert connect.offsets.stat().st_size > 0, "the source's file position is kept in offset.storage.file.filename"

    more = log_lines(300, 450)  # written while Connect is down
    append(connect.input, more)
    written += more
    connect.start()
    try:
        connect.wait_until("the lines written while down copied", lambda: len(connect.output_lines()) >= len(written))
        last = log_lines(450, 500)
        append(connect.input, last)
        written += last
        connect.wait_until("the last lines copied", lambda: len(connect.output_lines()) >= len(written))
        time.sleep(2)  # several offset flushes: a line read or delivered twice would show up by now
    finally:
        assert connect.stop() in (0, 128 + signal.SIGTERM), connect.log.read_text()[-4000:]
    assert connect.output_lines() == written, "every line exactly once, in order"
    _, end = committed_and_end(cbroker.bootstrap, connect.sink_group, topic)
    assert end == len(written), "the source produced every line once"
