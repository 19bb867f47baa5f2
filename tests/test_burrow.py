"""Burrow (Debian's 1.2.1, Sarama 1.22) reports a consumer group's lag against odradek.

Burrow is the lag monitor many installations run; it is built on Sarama, which still
sends versions Kafka 4 dropped (KIP-896): ListOffsets v0 for every partition's log end
offset, Metadata v1/v5, Fetch v4 on __consumer_offsets (whose commit records it decodes
itself). Before odradek served ListOffsets v0 it closed Burrow's connections ("EOF")
and Burrow reported nothing. Here Burrow runs as a user runs it: a burrow.toml with the
cluster, the consumer module reading __consumer_offsets, ZooKeeper for its own locks,
and its HTTP API asked for the group's lag until it reports every partition's.

kafka-version is the client profile's Sarama protocol level: 0.11.0 is the lowest that
reads message format v2 (Fetch v4; Kafka 4 refuses Burrow's default 0.10 as odradek
does), 2.1.0 the highest Burrow 1.2.1 knows.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from conftest import BrokerProcess, free_port, unique
from test_clients import create_topic

if TYPE_CHECKING:
    from cluster_fixtures import ZooKeeper

pytest_plugins = ["cluster_fixtures"]  # the zookeeper fixture

BURROW = shutil.which("Burrow") or "/usr/bin/Burrow"

pytestmark = pytest.mark.timeout(300)  # a bound on a hang; a loaded machine makes a passing run slow


@pytest.fixture(scope="module")
def lag_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    b = BrokerProcess(tmp_path_factory.mktemp("burrow") / "data").start()
    yield b
    if b.proc is not None and b.proc.poll() is None:
        b.stop()


def burrow_config(directory: Path, zookeeper_port: int, bootstrap: str, http_port: int, kafka_version: str) -> None:
    (directory / "burrow.toml").write_text(f"""
[general]
pidfile="{directory}/burrow.pid"

[logging]
level="info"

[zookeeper]
servers=["127.0.0.1:{zookeeper_port}"]
timeout=6
root-path="/burrow-{directory.name}"

[client-profile.odradek]
client-id="burrow-test"
kafka-version="{kafka_version}"

[cluster.odradek]
class-name="kafka"
servers=["{bootstrap}"]
client-profile="odradek"
topic-refresh=2
offset-refresh=2

[consumer.odradek]
class-name="kafka"
cluster="odradek"
servers=["{bootstrap}"]
client-profile="odradek"
offsets-topic="__consumer_offsets"
start-latest=false

[httpserver.default]
address="127.0.0.1:{http_port}"

[storage.default]
class-name="inmemory"
workers=2
intervals=10
min-distance=1
""")


def lag_report(http_port: int, group: str) -> dict[str, Any] | None:
    url = f"http://127.0.0.1:{http_port}/v3/kafka/odradek/consumer/{group}/lag"
    try:
        with urllib.request.urlopen(url, timeout=3) as reply:
            body: dict[str, Any] = json.load(reply)
    except (urllib.error.URLError, ConnectionError, TimeoutError):  # not up yet, or the group not seen yet (404)
        return None
    return None if body.get("error") else body["status"]


@pytest.mark.parametrize("kafka_version", ["0.11.0", "2.1.0"])
def test_burrow_reports_a_groups_lag_per_partition(
    zookeeper: ZooKeeper, lag_broker: BrokerProcess, tmp_path: Path, kafka_version: str
) -> None:
    topic, group = unique("lagged"), unique("watched")
    create_topic(lag_broker.bootstrap, topic, partitions=3)
    producer = Producer({"bootstrap.servers": lag_broker.bootstrap})
    for partition, count in ((0, 10), (1, 6), (2, 3)):
        for i in range(count):
            producer.produce(topic, value=b"%d" % i, partition=partition)
    assert producer.flush(10) == 0
    consumer = Consumer({"bootstrap.servers": lag_broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, 0, 4), TopicPartition(topic, 1, 6), TopicPartition(topic, 2, 1)],
                    asynchronous=False)
    consumer.close()
    expected = {0: (4, 6), 1: (6, 0), 2: (1, 2)}  # partition: (committed offset, lag)

    http_port = free_port()
    burrow_config(tmp_path, zookeeper.port, lag_broker.bootstrap, http_port, kafka_version)
    with open(tmp_path / "burrow.log", "wb") as log:
        burrow = subprocess.Popen([BURROW, "--config-dir", str(tmp_path)], stdout=log, stderr=subprocess.STDOUT,
                                  cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        reported: dict[int, tuple[int, int]] = {}
        while time.monotonic() < deadline:
            status = lag_report(http_port, group)
            if status is not None:
                reported = {p["partition"]: (p["end"]["offset"], p["current_lag"])
                            for p in status["partitions"] if p["topic"] == topic}
                if reported == expected:
                    assert status["totallag"] == 8
                    break
            assert burrow.poll() is None, (tmp_path / "burrow.log").read_text()[-3000:]
            time.sleep(1)
        assert reported == expected, (tmp_path / "burrow.log").read_text()[-3000:]
    finally:
        burrow.terminate()
        try:
            burrow.wait(10)
        except subprocess.TimeoutExpired:
            burrow.kill()
            burrow.wait(10)
    # nothing Burrow sent made odradek hang up on it
    assert "closing connection" not in lag_broker.logs()
