"""Kafka Streams 4.3.1 with exactly_once_v2 against a real `odradek serve` (issue 15).

tests/java/StreamsWordCount.java counts words (groupBy -> count): Streams creates its repartition
and changelog topics itself, runs its transactions (one producer per thread, KIP-447), commits
the input offsets inside them, restores the count store from the changelog and purges the
repartition topic with DeleteRecords. The program is killed with SIGKILL while input remains,
after some output was committed, and restarted; the module runs that once and each test checks
one thing a Streams user relies on. The instance is a static group member (as in a StatefulSet),
so the restarted program takes the killed one's place in the group at once.
"""

from __future__ import annotations

import random
import signal
import struct
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource
from conftest import (
    ROOT,
    BrokerProcess,
    compile_java,
    java_command,
    module_broker,
    read_messages,
    unique,
)
from test_clients import create_topic

ENV = {"ODRADEK_GROUP_INITIAL_REBALANCE_DELAY_MS": "0", "ODRADEK_GROUP_MIN_SESSION_TIMEOUT_MS": "1000",
       "ODRADEK_OFFSETS_TOPIC_NUM_PARTITIONS": "3", "ODRADEK_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "3"}
PARTITIONS = 2
LINES = 2000
WORDS = [f"w{i:02d}" for i in range(30)]
FEED_CHUNK, FEED_PAUSE_S = 20, 0.05  # 400 lines a second: 5 s of input

sbroker = module_broker("sbroker", ENV)


@dataclass
class WordCountRun:
    app_id: str
    input: str
    output: str
    expected: Counter[str]
    consumed_before_kill: int
    repartition_log_start: list[int] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)

    @property
    def changelog(self) -> str:
        return f"{self.app_id}-counts-changelog"

    @property
    def repartition(self) -> str:
        return f"{self.app_id}-counts-repartition"


@pytest.fixture(scope="module")
def streams_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """StreamsWordCount compiled once: the module starts it three times."""
    return compile_java(["StreamsWordCount.java"], tmp_path_factory.mktemp("streams-classes"))


def start_app(classes: Path, bootstrap: str, run: WordCountRun, state_dir: Path,
              log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([*java_command("kafka-streams", classes), "StreamsWordCount", bootstrap, run.app_id,
                                 run.input, run.output, str(state_dir), f"{run.app_id}-instance"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def stop_app(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM: StreamsWordCount closes Streams and leaves the group."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


def committed_and_end(bootstrap: str, group: str, topic: str) -> tuple[list[int], list[int]]:
    """The group's committed offset (-1 for none) and the log end offset of each partition."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "isolation.level": "read_committed",
                  "enable.auto.commit": False})
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        committed = [max(tp.offset, -1) for tp in c.committed(parts, timeout=10)]
        ends = [int(c.get_watermark_offsets(tp, timeout=10)[1]) for tp in parts]
        return committed, ends
    finally:
        c.close()


def watermarks(bootstrap: str, topic: str, isolation: str = "read_uncommitted") -> list[tuple[int, int]]:
    """(log start offset, log end offset) of each partition; the end is the last stable offset
    for read_committed."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("wm"), "isolation.level": isolation})
    try:
        return [tuple(map(int, c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)))  # type: ignore[misc]
                for p in range(PARTITIONS)]
    finally:
        c.close()


def finished(bootstrap: str, run: WordCountRun) -> bool:
    """The application committed every input line and every repartitioned word."""
    for topic in (run.input, run.repartition):
        committed, ends = committed_and_end(bootstrap, run.app_id, topic)
        if committed != ends:
            return False
    return True


def wait_until(what: str, check: Any, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, f"StreamsWordCount exited ({proc.returncode}) before {what}:\n" + log.read_text()
        assert time.monotonic() < deadline, f"no {what} after {timeout} s:\n" + log.read_text()[-4000:]
        time.sleep(0.2)


def read_counts(bootstrap: str, topic: str, start: list[int] | None = None) -> dict[str, list[int]]:
    """Every count of the topic (from the `start` offsets) in offset order, per word, as a
    read_committed consumer reads them."""
    counts: dict[str, list[int]] = defaultdict(list)
    for m in read_messages(bootstrap, topic, PARTITIONS, "read_committed", start=start):
        (count,) = struct.unpack(">q", m.value())  # Serdes.Long: 8 bytes, big-endian
        counts[m.key().decode()].append(count)
    return counts


class LineFeeder(threading.Thread):
    """Produces the input lines at a steady rate, as a log would grow, while Streams runs, dies and
    comes back."""

    def __init__(self, bootstrap: str, topic: str, lines: list[str]) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.lines = bootstrap, topic, lines
        self.sent = 0
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            p = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5})
            for i, line in enumerate(self.lines):
                p.produce(self.topic, key=b"%d" % i, value=line.encode(), partition=i % PARTITIONS)
                if i % FEED_CHUNK == FEED_CHUNK - 1:
                    p.poll(0)
                    time.sleep(FEED_PAUSE_S)
                self.sent = i + 1
            assert p.flush(30) == 0
        except (BufferError, KafkaException, AssertionError) as e:  # the fixture joining the thread reports it
            self.error = e


@pytest.fixture(scope="module")
def word_count(sbroker: BrokerProcess, streams_classes: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[WordCountRun]:
    """Feeds LINES lines while StreamsWordCount runs, SIGKILLs the program once some output is
    committed and input remains, restarts it, and waits until it has consumed and committed all."""
    tmp = tmp_path_factory.mktemp("streams")
    bootstrap = sbroker.bootstrap
    run = WordCountRun(unique("wordcount"), unique("lines"), unique("counts"), Counter(), 0)
    create_topic(bootstrap, run.input, partitions=PARTITIONS)
    create_topic(bootstrap, run.output, partitions=PARTITIONS)
    rng = random.Random(15)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8))) for _ in range(LINES)]
    for line in lines:
        run.expected.update(line.split())
    feeder = LineFeeder(bootstrap, run.input, lines)
    state_dir = tmp / "state"  # the same state directory for both runs, as on one machine

    first_log = tmp / "first.log"
    first = start_app(streams_classes, bootstrap, run, state_dir, first_log)
    try:
        wait_until("state RUNNING", lambda: "STATE RUNNING" in first_log.read_text(), first, first_log)
        feeder.start()
        def output_committed() -> bool:
            return any(end > 0 for _, end in watermarks(bootstrap, run.output, "read_committed"))

        wait_until("committed output", output_committed, first, first_log)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    committed, _ = committed_and_end(bootstrap, run.app_id, run.input)
    run.consumed_before_kill = sum(max(c, 0) for c in committed)
    run.stdout += first_log.read_text().splitlines()

    second_log = tmp / "second.log"
    second = start_app(streams_classes, bootstrap, run, state_dir, second_log)
    try:
        feeder.join(60)
        assert feeder.error is None and feeder.sent == LINES, f"{feeder.sent} lines fed: {feeder.error}"
        wait_until("commit of every input line", lambda: finished(bootstrap, run), second, second_log, timeout=90)

        def purged() -> bool:
            run.repartition_log_start = [start for start, _ in watermarks(bootstrap, run.repartition)]
            return all(offset > 0 for offset in run.repartition_log_start)

        try:  # repartition.purge.interval.ms is 500 in StreamsWordCount
            wait_until("purge of the repartition topic", purged, second, second_log, timeout=10)
        except AssertionError:
            pass  # test_streams_purges_the_repartition_topic tells
    finally:
        stop_app(second)
    run.stdout += second_log.read_text().splitlines()
    yield run


@pytest.mark.kafka_behaviour
def test_streams_was_killed_mid_stream(word_count: WordCountRun) -> None:
    assert 0 < word_count.consumed_before_kill < LINES, (
        f"SIGKILL after some input was committed and while input remained: {word_count.consumed_before_kill}"
        f" of {LINES} lines committed")
    assert not [line for line in word_count.stdout if line.startswith("FATAL")], "\n".join(word_count.stdout)


@pytest.mark.kafka_behaviour
def test_output_counts_are_exact_after_sigkill_and_restart(sbroker: BrokerProcess, word_count: WordCountRun) -> None:
    counts = read_counts(sbroker.bootstrap, word_count.output)
    latest = {word: values[-1] for word, values in counts.items()}
    assert latest == dict(word_count.expected), "the last count of each word is exactly its number of occurrences"
    for word, values in counts.items():
        # exactly once: the restarted instance continues from the committed counts, so a word's counts
        # only go up; a replayed line counted twice would show as a count above the expected one
        assert values == sorted(set(values)), f"{word}: {values}"


@pytest.mark.kafka_behaviour
def test_changelog_holds_the_exact_counts(sbroker: BrokerProcess, word_count: WordCountRun) -> None:
    counts = read_counts(sbroker.bootstrap, word_count.changelog)
    assert {word: values[-1] for word, values in counts.items()} == dict(word_count.expected), (
        "the store restored from the changelog after SIGKILL did not double count")


@pytest.mark.kafka_behaviour
def test_internal_topics_have_the_configs_streams_asked_for(sbroker: BrokerProcess, word_count: WordCountRun) -> None:
    admin = AdminClient({"bootstrap.servers": sbroker.bootstrap})
    topics = admin.list_topics(timeout=10).topics
    for name in (word_count.changelog, word_count.repartition):
        assert name in topics, f"Streams created {name}"
        assert len(topics[name].partitions) == PARTITIONS, "as many partitions as the input topic"

    def configs(topic: str) -> dict[str, str]:
        resource = ConfigResource("topic", topic)
        return {key: entry.value for key, entry in admin.describe_configs([resource])[resource].result(10).items()}

    changelog = configs(word_count.changelog)
    assert changelog["cleanup.policy"] == "compact"
    assert changelog["message.timestamp.type"] == "CreateTime"
    repartition = configs(word_count.repartition)
    assert repartition["cleanup.policy"] == "delete"
    assert repartition["retention.ms"] == "-1", "kept until Streams purges it"
    assert repartition["segment.bytes"] == "52428800"


@pytest.mark.kafka_behaviour
def test_streams_purges_the_repartition_topic(word_count: WordCountRun) -> None:
    assert all(offset > 0 for offset in word_count.repartition_log_start), (
        f"DeleteRecords up to the committed offsets moves the log start: {word_count.repartition_log_start}")


@pytest.mark.kafka_behaviour
def test_application_reset_reprocesses_from_scratch(sbroker: BrokerProcess, word_count: WordCountRun,
                                                    streams_classes: Path, tmp_path: Path) -> None:
    """kafka-streams-application-reset (StreamsResetter): input offsets back to the start, internal
    topics deleted; run again on a fresh state directory the application counts everything anew.
    Runs last: it appends a second count sequence to the output."""
    bootstrap = sbroker.bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap})
    group = admin.describe_consumer_groups([word_count.app_id])[word_count.app_id].result(10)
    assert group.state == ConsumerGroupState.EMPTY and not group.members, "the stopped instance left its group"
    output_before = [end for _, end in watermarks(bootstrap, word_count.output)]
    reset = subprocess.run([*java_command("kafka-streams"), "org.apache.kafka.tools.StreamsResetter",
                            "--bootstrap-server", bootstrap, "--application-id", word_count.app_id, "--input-topics", word_count.input],
                           capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)
    assert reset.returncode == 0, reset.stdout + reset.stderr

    def committed() -> dict[tuple[str, int], int]:
        offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(word_count.app_id)])
        return {(tp.topic, tp.partition): tp.offset for tp in offsets[word_count.app_id].result(10).topic_partitions}

    reset_offsets = {(word_count.input, p): 0 for p in range(PARTITIONS)}
    deadline = time.monotonic() + 15  # Kafka's coordinator drops them once the deletion reaches it
    while committed() != reset_offsets and time.monotonic() < deadline:
        time.sleep(0.2)
    assert committed() == reset_offsets, "the input offsets start over; the deleted internal topics' offsets go"
    topics = admin.list_topics(timeout=10).topics
    assert word_count.changelog not in topics and word_count.repartition not in topics

    log = tmp_path / "rerun.log"
    app = start_app(streams_classes, bootstrap, word_count, tmp_path / "fresh-state", log)
    try:
        wait_until("commit of every input line", lambda: finished(bootstrap, word_count), app, log, timeout=90)
    finally:
        stop_app(app)
    counts = read_counts(bootstrap, word_count.output, output_before)
    assert {word: values[-1] for word, values in counts.items()} == dict(word_count.expected)
