"""KIP-932 share groups with Kafka's own KafkaShareConsumer and Admin (kafka-clients 4.3.1).

tests/java/ShareClient.java runs one scenario per JVM and prints JSON lines; the assertions
are here. The broker answers ShareGroupHeartbeat, ShareFetch, ShareAcknowledge and the share
group offsets APIs; group configs (share.auto.offset.reset, share.isolation.level, lock
duration, delivery count limit) are set as a user would, with IncrementalAlterConfigs on the
GROUP resource.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from conftest import (
    JAVA_DIR,
    ROOT,
    BrokerProcess,
    compile_java,
    java_command,
    module_broker,
    unique,
    wait_for_port,
)
from typer.testing import CliRunner

from odradek.cli.group import group_app

ENV = {"ODRADEK_OFFSETS_TOPIC_NUM_PARTITIONS": "3", "ODRADEK_SHARE_COORDINATOR_STATE_TOPIC_NUM_PARTITIONS": "3",
       "ODRADEK_GROUP_SHARE_HEARTBEAT_INTERVAL_MS": "1000", "ODRADEK_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "3"}

sbroker = module_broker("sbroker", ENV)
pytest_plugins = ["cluster_fixtures"]


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ShareClient compiled once for the module."""
    return compile_java([JAVA_DIR / "ShareClient.java"], tmp_path_factory.mktemp("share-classes"))


def command(classes: Path, bootstrap: str, *args: str) -> list[str]:
    return [*java_command(classes=classes), "ShareClient", bootstrap, *args]


def run(classes: Path, bootstrap: str, *args: str, timeout: float = 150) -> list[dict[str, Any]]:
    """One scenario's JSON lines, failing on an exception the Java side printed."""
    done = subprocess.run(command(classes, bootstrap, *args), capture_output=True, text=True, timeout=timeout,
                          check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    errors = [line["error"] for line in lines if "error" in line]
    assert not errors, f"{args[0]}: {errors}\n{done.stderr[-3000:]}"
    assert lines, f"{args[0]} printed nothing: {done.stderr[-3000:]}"
    return lines


@contextlib.contextmanager
def restart_scenario(classes: Path, bootstrap: str, group: str, topic: str, count: int,
                     timeout: float) -> Iterator[Iterator[dict[str, Any]]]:
    """ShareClient's `restart` scenario (a consumer that comes back after each failure), its JSON
    lines as they come so the test acts between them, until it says it is done; an exception
    it printed fails the test. Its JVM is killed on the way out if it is still running."""
    proc = subprocess.Popen(command(classes, bootstrap, "restart", group, topic, str(count)),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)

    def lines() -> Iterator[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        assert proc.stdout is not None
        for raw in proc.stdout:
            assert time.monotonic() < deadline, "the share consumer did not finish"
            if not raw.startswith("{"):
                continue
            line = json.loads(raw)
            assert "error" not in line, line
            yield line
            if "done" in line:
                break
        proc.wait(30)

    try:
        yield lines()
    finally:
        if proc.poll() is None:
            proc.kill()


def configure(classes: Path, bootstrap: str, group: str, **configs: str) -> dict[str, str]:
    pairs = ",".join(f"{k.replace('_', '.')}={v}" for k, v in configs.items())
    (line,) = run(classes, bootstrap, "config", group, pairs, "-")
    return line["configs"]  # type: ignore[no-any-return]


def make_topic(bootstrap: str, partitions: int, values: list[str]) -> str:
    topic = unique("share")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        f.result(30)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i, value in enumerate(values):
        p.produce(topic, value=value.encode(), partition=i % partitions)
    assert p.flush(30) == 0
    return topic


def test_share_consumers_split_the_records_of_two_partitions(sbroker: BrokerProcess, classes: Path) -> None:
    values = [f"w-{i}" for i in range(2000)]
    topic = make_topic(sbroker.bootstrap, 2, values)
    group = unique("sg-work")
    assert configure(classes, sbroker.bootstrap, group, share_auto_offset_reset="earliest")[
        "share.auto.offset.reset"] == "earliest"
    lines = run(classes, sbroker.bootstrap, "work", group, topic, "8", str(len(values)))
    summary = next(line for line in lines if "distinct" in line)
    counts = {line["consumer"]: line["count"] for line in lines if "consumer" in line}
    assert summary["distinct"] == len(values)  # every record delivered
    assert summary["duplicates"] == []  # and none twice: nothing was released or timed out
    assert sum(counts.values()) == len(values)
    # 8 members on 2 partitions: each partition is shared, more consumers work than there are partitions
    assert len([c for c in counts.values() if c > 0]) > 2, counts


def test_released_records_come_back_rejected_do_not_and_poison_stops_at_the_limit(
        sbroker: BrokerProcess, classes: Path) -> None:
    values = [f"accept-{i}" for i in range(10)] + [f"release-{i}" for i in range(5)] + \
        [f"reject-{i}" for i in range(5)] + [f"poison-{i}" for i in range(2)]
    topic = make_topic(sbroker.bootstrap, 1, values)
    group = unique("sg-acks")
    configure(classes, sbroker.bootstrap, group, share_auto_offset_reset="earliest", share_delivery_count_limit="3")
    lines = run(classes, sbroker.bootstrap, "acks", group, topic, "4000")
    assert not [line for line in lines if "ack_error" in line]
    deliveries: dict[str, list[int]] = {}
    for line in lines:
        deliveries.setdefault(line["value"], []).append(line["delivery"])
    assert set(deliveries) == set(values)
    for value, counts in deliveries.items():
        kind = value.split("-")[0]
        expected = {"accept": [1], "reject": [1], "release": [1, 2], "poison": [1, 2, 3]}[kind]
        assert counts == expected, (value, counts)  # a poison record is archived after the 3rd delivery


def test_a_record_whose_lock_times_out_goes_to_another_consumer(sbroker: BrokerProcess, classes: Path) -> None:
    values = [f"lock-{i}" for i in range(20)]
    topic = make_topic(sbroker.bootstrap, 1, values)
    group = unique("sg-lock")
    configure(classes, sbroker.bootstrap, group, share_auto_offset_reset="earliest",
              share_record_lock_duration_ms="2000")
    lines = run(classes, sbroker.bootstrap, "lock", group, topic, "30000")
    held = next(line["held"] for line in lines if "held" in line)
    redelivered = next(line["redelivered"] for line in lines if "redelivered" in line)
    assert held, "consumer A got nothing"
    # every record A held past the 2 s lock went to B, as its second delivery
    assert redelivered == {value: 2 for value in held}


def test_read_committed_share_group_skips_aborted_records(sbroker: BrokerProcess, classes: Path) -> None:
    topic = make_topic(sbroker.bootstrap, 1, [])
    p = Producer({"bootstrap.servers": sbroker.bootstrap, "transactional.id": unique("share-txn")})
    p.init_transactions(30)
    for round_ in range(3):
        for outcome in ("committed", "aborted"):
            p.begin_transaction()
            for i in range(5):
                p.produce(topic, value=f"accept-{outcome}-{round_}-{i}".encode(), partition=0)
            p.commit_transaction(30) if outcome == "committed" else p.abort_transaction(30)
    group = unique("sg-rc")
    configure(classes, sbroker.bootstrap, group, share_auto_offset_reset="earliest",
              share_isolation_level="read_committed")
    lines = run(classes, sbroker.bootstrap, "acks", group, topic, "3000")
    got = sorted(line["value"] for line in lines if "value" in line)
    assert got == sorted(f"accept-committed-{r}-{i}" for r in range(3) for i in range(5))


def test_admin_lists_describes_and_moves_share_group_offsets(sbroker: BrokerProcess, classes: Path) -> None:
    topic = make_topic(sbroker.bootstrap, 2, [f"a-{i}" for i in range(100)])
    group = unique("sg-admin")
    configure(classes, sbroker.bootstrap, group, share_auto_offset_reset="earliest")
    lines = run(classes, sbroker.bootstrap, "admin", group, topic)
    listed = next(line["listed"] for line in lines if "listed" in line)
    assert {"group": group, "type": "Share", "state": "Stable"} in listed
    described = next(line for line in lines if "members" in line)
    assert described["state"] == "Stable"
    assert described["members"] == [[f"{topic}-0", f"{topic}-1"]]  # the sole member has both partitions
    offsets = next(line["offsets"] for line in lines if "offsets" in line)
    assert set(offsets) == {f"{topic}-0", f"{topic}-1"}
    assert next(line["alter_error"] for line in lines if "alter_error" in line) == "GroupNotEmptyException"
    # odradek group list / describe: the share group, its start offsets and lag (50 records a partition, all read)
    listed_cli = group_cli(sbroker, "list")
    assert [group, "Empty", "share"] in cells(listed_cli), listed_cli
    described_cli = group_cli(sbroker, "describe", group)
    assert f"group {group}  type share  state Empty" in described_cli
    rows = [row for row in cells(described_cli) if row[:1] == [topic]]
    assert rows == [[topic, "0", "50", "0"], [topic, "1", "50", "0"]], described_cli
    # the consumer closed: the group is empty and its offsets move
    lines = run(classes, sbroker.bootstrap, "offsets", group, topic, "10")
    altered = next(line["altered"] for line in lines if "altered" in line)
    assert altered[f"{topic}-0"] == {"start": 10, "lag": 40}  # 50 records on partition 0
    assert next(line["deleted"] for line in lines if "deleted" in line) == {}
    assert group not in next(line["groups_after_delete"] for line in lines if "groups_after_delete" in line)


def cells(table: str) -> list[list[str]]:
    """The cells of each row of a rich table."""
    return [[c.strip() for c in line.strip("│").split("│")] for line in table.splitlines() if line.startswith("│")]


def group_cli(b: BrokerProcess, *args: str) -> str:
    result = CliRunner().invoke(group_app, ["--bootstrap-server", b.bootstrap, *args], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    b = BrokerProcess(tmp_path / "data", env=ENV).start()
    yield b
    if b.proc is not None and b.proc.poll() is None:
        b.kill()


def test_acknowledged_records_survive_a_broker_sigkill(own_broker: BrokerProcess, classes: Path) -> None:
    values = [f"k-{i}" for i in range(3000)]
    topic = make_topic(own_broker.bootstrap, 2, values)
    group = unique("sg-kill")
    configure(classes, own_broker.bootstrap, group, share_auto_offset_reset="earliest")
    acked: set[str] = set()
    redelivered_after_ack: list[str] = []
    delivered: Counter[str] = Counter()
    killed = False
    with restart_scenario(classes, own_broker.bootstrap, group, topic, len(values), 150) as lines:
        for line in lines:
            if "delivered" in line:
                redelivered_after_ack += [v for v in line["delivered"] if v in acked]
                delivered.update(line["delivered"])
            acked.update(line.get("acked", ()))
            if not killed and len(acked) >= 1000:
                own_broker.kill()  # SIGKILL mid-stream: no flush, no clean close
                killed = True
                try:
                    own_broker.start()
                except TimeoutError:  # a loaded machine: recovery and start-up take longer than start() waits
                    wait_for_port(own_broker.port, 120, own_broker.proc)
    assert killed
    assert acked == set(values)  # none lost
    assert redelivered_after_ack == []  # no acknowledged record delivered again


CLUSTER_ENV = {"ODRADEK_SHARE_COORDINATOR_STATE_TOPIC_NUM_PARTITIONS": "1",
               "ODRADEK_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "3",
               "ODRADEK_OFFSETS_TOPIC_REPLICATION_FACTOR": "3",
               "ODRADEK_GROUP_SHARE_HEARTBEAT_INTERVAL_MS": "1000"}


def test_share_state_survives_its_share_coordinators_sigkill(cluster_factory: Any, classes: Path) -> None:
    """3 brokers; the leader of __share_group_state (the share coordinator) is SIGKILLed mid-stream:
    its follower takes the state over, no acknowledged record comes back, none is lost."""
    cluster = cluster_factory(3, env=CLUSTER_ENV)
    topic = unique("share-cl")
    cluster.create_topic(topic, partitions=2, rf=3)
    values = [f"c-{i}" for i in range(2000)]
    p = Producer({"bootstrap.servers": cluster.bootstrap, "linger.ms": 5, "acks": "all"})
    for i, value in enumerate(values):
        p.produce(topic, value=value.encode(), partition=i % 2)
    assert p.flush(30) == 0
    group = unique("sg-cluster")
    configure(classes, cluster.bootstrap, group, share_auto_offset_reset="earliest",
              share_record_lock_duration_ms="5000")  # records whose acknowledgement failed come back sooner
    acked: set[str] = set()
    redelivered_after_ack: list[str] = []
    errors: list[str] = []
    killed = -1
    with restart_scenario(classes, cluster.bootstrap, group, topic, len(values), 180) as lines:
        for line in lines:
            if "delivered" in line:
                redelivered_after_ack += [v for v in line["delivered"] if v in acked]
            acked.update(line.get("acked", ()))
            errors += [str(v) for k, v in line.items() if k.endswith("_error")]
            if killed < 0 and len(acked) >= 600:
                killed = cluster.partition("__share_group_state", 0).leader
                cluster.by_id(killed).kill()
    assert killed >= 0
    cluster.wait_leader("__share_group_state", 0, not_in=(killed,))  # a follower took the state over
    missing = sorted(set(values) - acked)
    assert not missing, f"{len(missing)} never acknowledged: {missing[:20]}; errors: {errors[-10:]}"
    assert redelivered_after_ack == []
