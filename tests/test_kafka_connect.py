"""Kafka Connect 4.3.1 with the FileStream connectors against a real `odradek serve` (issue 15):
the seed's log-aggregation use case.

org.apache.kafka.connect.cli.ConnectStandalone runs FileStreamSourceConnector, tailing a log file
into a topic, and FileStreamSinkConnector, writing the topic out to another file. Connect is
stopped with SIGTERM, more lines are appended, and it is started again: the source resumes from
the file position kept in offset.storage.file.filename, the sink from its consumer group's
committed offset, so the output file holds every line exactly once, in order. Also: topic
creation by the source (KIP-158), the offsets REST API (KIP-875), and a ConnectDistributed worker
with exactly-once source support (KIP-618).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource
from conftest import (
    ROOT,
    BrokerProcess,
    free_port,
    java_command,
    module_broker,
    read_messages,
    unique,
)
from test_clients import create_topic

ENV = {"ODRADEK_GROUP_INITIAL_REBALANCE_DELAY_MS": "0", "ODRADEK_OFFSETS_TOPIC_NUM_PARTITIONS": "3"}

cbroker = module_broker("cbroker", ENV)


def write_properties(path: Path, props: dict[str, str]) -> Path:
    path.write_text("".join(f"{key}={value}\n" for key, value in props.items()))
    return path


class Connect:
    """One Kafka Connect worker with a FileStreamSource `source` tailing `input` into the topic and
    a FileStreamSink `sink` writing it to `output`: `ConnectStandalone worker.properties
    source.properties sink.properties`, or `ConnectDistributed worker.properties` with the
    connectors then created over REST (create_connectors)."""

    def __init__(self, tmp: Path, bootstrap: str, topic: str, source: dict[str, str] | None = None,
                 sink: dict[str, str] | None = None, distributed: bool = False) -> None:
        self.tmp, self.distributed = tmp, distributed
        self.input, self.output = tmp / "app.log", tmp / "aggregated.log"
        self.offsets = tmp / "connect.offsets"
        self.source, self.sink = unique("log-source"), unique("log-sink")
        self.sink_group = f"connect-{self.sink}"  # Kafka Connect's sink group: connect-<connector name>
        self.rest = f"http://127.0.0.1:{free_port()}"
        worker = {
            "bootstrap.servers": bootstrap,
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "org.apache.kafka.connect.storage.StringConverter",
            "offset.flush.interval.ms": "500",
            "listeners": self.rest,
            # connect-file is on the classpath with its ServiceLoader manifests: no scan of every jar
            "plugin.discovery": "service_load",
        }
        if distributed:
            self.cluster = unique("connect")
            self.internal_topics = [f"{self.cluster}-{kind}" for kind in ("configs", "offsets", "status")]
            worker |= {"group.id": self.cluster, "exactly.once.source.support": "enabled",
                       "offset.storage.partitions": "2", "status.storage.partitions": "1"}
            for kind, name in zip(("config", "offset", "status"), self.internal_topics, strict=True):
                worker |= {f"{kind}.storage.topic": name, f"{kind}.storage.replication.factor": "1"}
        else:
            worker["offset.storage.file.filename"] = str(self.offsets)
        self.connectors = {
            self.source: {"connector.class": "FileStreamSource", "tasks.max": "1", "file": str(self.input),
                          "topic": topic, **(source or {})},
            self.sink: {"connector.class": "FileStreamSink", "tasks.max": "1", "file": str(self.output),
                        "topics": topic, **(sink or {})},
        }
        self.configs = [write_properties(tmp / "worker.properties", worker)]
        if not distributed:
            self.configs += [write_properties(tmp / f"{name}.properties", {"name": name, **config})
                             for name, config in self.connectors.items()]
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def log(self) -> Path:
        return self.tmp / f"connect{self.runs}.log"

    def start(self) -> None:
        command = java_command("connect-file")
        self.runs += 1
        with open(self.log, "wb") as out:
            main = "ConnectDistributed" if self.distributed else "ConnectStandalone"
            self.proc = subprocess.Popen([*command, f"org.apache.kafka.connect.cli.{main}", *map(str, self.configs)],
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

    def call(self, method: str, path: str, body: object = None) -> Any:
        """Connect's REST API; the answer's JSON (None for 204 No Content)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.rest + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def create_connectors(self) -> None:
        """Distributed mode: PUT /connectors/<name>/config once the REST server answers."""

        def listening() -> bool:
            try:
                self.call("GET", "/connectors")
                return True
            except OSError:  # URLError, connection refused: not yet
                return False

        self.wait_until("Connect's REST server", listening)
        for name, config in self.connectors.items():
            self.call("PUT", f"/connectors/{name}/config", config)

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
    connect = Connect(tmp_path, cbroker.bootstrap, topic)
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


@pytest.mark.kafka_behaviour
def test_source_creates_its_topic_and_the_offsets_api_rewinds_the_sink(cbroker: BrokerProcess,
                                                                       tmp_path: Path) -> None:
    """KIP-158: the source connector creates its topic with the configs it names; KIP-875: the
    connectors' offsets over REST, and a stopped sink moved back replays what follows."""
    topic = unique("applogs")  # not created beforehand
    connect = Connect(tmp_path, cbroker.bootstrap, topic, source={
        "topic.creation.default.replication.factor": "1", "topic.creation.default.partitions": "1",
        "topic.creation.default.retention.ms": "604800000", "topic.creation.default.compression.type": "zstd"})
    written = log_lines(0, 200)
    append(connect.input, written)
    connect.start()
    try:
        connect.wait_until("the lines copied", lambda: len(connect.output_lines()) >= len(written))
        admin = AdminClient({"bootstrap.servers": cbroker.bootstrap})
        resource = ConfigResource("topic", topic)
        configs = {k: v.value for k, v in admin.describe_configs([resource])[resource].result(10).items()}
        assert (configs["retention.ms"], configs["compression.type"]) == ("604800000", "zstd")
        assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 1

        def offsets(connector: str) -> Any:
            return connect.call("GET", f"/connectors/{connector}/offsets")["offsets"]

        # both flushed every offset.flush.interval.ms
        connect.wait_until("the source's offset flush", lambda: offsets(connect.source) == [
            {"partition": {"filename": str(connect.input)}, "offset": {"position": connect.input.stat().st_size}}])
        connect.wait_until("the sink's offset commit", lambda: offsets(connect.sink) == [
            {"partition": {"kafka_topic": topic, "kafka_partition": 0}, "offset": {"kafka_offset": len(written)}}])

        connect.call("PUT", f"/connectors/{connect.sink}/stop")
        connect.wait_until("the sink stopped", lambda: connect.call(
            "GET", f"/connectors/{connect.sink}/status")["connector"]["state"] == "STOPPED")
        rewound = len(written) - 50
        connect.call("PATCH", f"/connectors/{connect.sink}/offsets", {"offsets": [
            {"partition": {"kafka_topic": topic, "kafka_partition": 0}, "offset": {"kafka_offset": rewound}}]})
        assert committed_and_end(cbroker.bootstrap, connect.sink_group, topic) == (rewound, len(written))
        connect.call("PUT", f"/connectors/{connect.sink}/resume")
        connect.wait_until("the replay", lambda: len(connect.output_lines()) >= len(written) + 50)
    finally:
        assert connect.stop() in (0, 128 + signal.SIGTERM), connect.log.read_text()[-4000:]
    assert connect.output_lines() == written + written[rewound:], "the last 50 lines once more, nothing else"


def read_values(bootstrap: str, topic: str, isolation: str) -> list[str]:
    """Every value of partition 0 up to its end, as a consumer with `isolation` reads them."""
    return [m.value().decode() for m in read_messages(bootstrap, topic, 1, isolation)]


@pytest.mark.kafka_behaviour
def test_distributed_worker_with_exactly_once_source(cbroker: BrokerProcess, tmp_path: Path) -> None:
    """KIP-618: a ConnectDistributed worker with exactly.once.source.support=enabled fences the
    source's earlier producers, then writes each poll's records and file position in one
    transaction; its config, offset and status topics are the compacted ones it creates."""
    topic = unique("eoslogs")
    create_topic(cbroker.bootstrap, topic)
    connect = Connect(tmp_path, cbroker.bootstrap, topic, distributed=True,
                      source={"exactly.once.support": "required", "transaction.boundary": "poll"},
                      sink={"consumer.override.isolation.level": "read_committed"})
    written = log_lines(0, 200)
    append(connect.input, written)
    connect.start()
    try:
        connect.create_connectors()
        connect.wait_until("the first lines copied", lambda: len(connect.output_lines()) >= len(written))
        more = log_lines(200, 300)
        append(connect.input, more)
        written += more
        connect.wait_until("the appended lines copied", lambda: len(connect.output_lines()) >= len(written))
        for name in (connect.source, connect.sink):
            status = connect.call("GET", f"/connectors/{name}/status")
            assert [task["state"] for task in status["tasks"]] == ["RUNNING"], status
        connect.wait_until("the source's position committed", lambda: connect.call(
            "GET", f"/connectors/{connect.source}/offsets")["offsets"] == [
            {"partition": {"filename": str(connect.input)}, "offset": {"position": connect.input.stat().st_size}}])
    finally:
        assert connect.stop() in (0, 128 + signal.SIGTERM), connect.log.read_text()[-4000:]
    assert connect.output_lines() == written
    assert read_values(cbroker.bootstrap, topic, "read_committed") == written
    _, end = committed_and_end(cbroker.bootstrap, connect.sink_group, topic)
    assert end > len(written), "transaction markers between the records: the source wrote in transactions"
    admin = AdminClient({"bootstrap.servers": cbroker.bootstrap})
    for name in connect.internal_topics:
        resource = ConfigResource("topic", name)
        assert admin.describe_configs([resource])[resource].result(10)["cleanup.policy"].value == "compact"
