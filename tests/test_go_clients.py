"""The Go clients against a real `odradek serve`: franz-go (kgo and kadm) and IBM Sarama, both
written from the protocol up (no librdkafka, no Java).

The Go programs are tests/go/franz and tests/go/sarama (one sub-command per scenario, one JSON
object on stdout); tests/go/go.mod pins franz-go and Sarama, and `./dev test` builds them into
tests/go/bin (the module fixture here builds them again, which is quick when nothing changed).
Sarama runs twice: with its default config.Version (Kafka 2.8's request versions) and with the
newest Kafka version it knows. GO_CLIENT_LOG=debug (or info, warn) puts the clients' own logs on
the programs' stderr.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from conftest import BrokerProcess, module_broker, unique

# Each test here checks what Kafka answers: pytest --kafka runs them against Apache Kafka.
pytestmark = pytest.mark.kafka_behaviour

GO = Path(__file__).with_name("go")
ENV = {"ODRADEK_GROUP_INITIAL_REBALANCE_DELAY_MS": "0", "ODRADEK_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "3",
       "ODRADEK_OFFSETS_TOPIC_NUM_PARTITIONS": "3"}
SARAMA_VERSIONS = ["default", "max"]
# Kafka's API keys, for the request versions Sarama reports
PRODUCE, FETCH, OFFSET_COMMIT, OFFSET_FETCH, JOIN_GROUP = "0", "1", "8", "9", "11"

go_broker = module_broker("go_broker", env=ENV)


@pytest.fixture(scope="module", autouse=True)
def go_programs() -> None:
    go = shutil.which("go")
    assert go is not None, "the go command is not installed (the Go tests need it)"
    done = subprocess.run([go, "build", "-o", "bin/", "./..."], cwd=GO, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def run_go(program: str, *args: str) -> dict[str, Any]:
    done = subprocess.run([str(GO / "bin" / program), *args], capture_output=True, text=True, timeout=90,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=10)[name].result(10)


def read_back(bootstrap: str, topic: str, partitions: int, count: int) -> list[tuple[str, str, dict[str, str]]]:
    """(key, value, headers) of the first `count` records of a topic, read with librdkafka."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("rd"), "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen: list[tuple[str, str, dict[str, str]]] = []
    try:
        while len(seen) < count:
            msgs = c.consume(count - len(seen), 10)
            assert msgs, f"librdkafka read {len(seen)} of {count} records"
            seen += [(m.key().decode(), m.value().decode(), {k: v.decode() for k, v in m.headers() or []})
                     for m in msgs if m.error() is None]
    finally:
        c.close()
    return seen


def assert_partitioned_by_key(records: list[dict[str, Any]]) -> None:
    """Each key on one partition, offsets from 0 without gaps in the order sent."""
    by_key: dict[str, set[int]] = defaultdict(set)
    by_partition: dict[int, list[int]] = defaultdict(list)
    for r in records:
        by_key[r["key"]].add(r["partition"])
        by_partition[r["partition"]].append(r["offset"])
    assert all(len(ps) == 1 for ps in by_key.values()), by_key
    assert len(by_partition) > 1, "every key landed on one partition"
    for offsets in by_partition.values():
        assert offsets == list(range(len(offsets)))


def assert_group_split(out: dict[str, Any], n: int, partitions: int = 3) -> dict[int, int]:
    """Two members held disjoint, non-empty sets of partitions covering the topic, each read only
    its own, and together every record once; returns the count read per partition."""
    held = [set(ps) for ps in out["held"]]
    assert all(held) and held[0].isdisjoint(held[1]) and held[0] | held[1] == set(range(partitions)), held
    consumed = out["consumed"]
    assert sorted(c["value"] for c in consumed) == sorted(f"v{i}" for i in range(n))
    per_partition: dict[int, list[int]] = defaultdict(list)
    for c in consumed:
        assert c["partition"] in held[c["member"]]
        per_partition[c["partition"]].append(c["offset"])
    for offsets in per_partition.values():
        assert sorted(offsets) == list(range(len(offsets)))
    return {p: len(offsets) for p, offsets in per_partition.items()}


def keyed(d: dict[str, Any]) -> dict[int, Any]:
    """JSON's string keys back to partition numbers."""
    return {int(k): v for k, v in d.items()}


# franz-go


def test_franz_admin_creates_topics_lists_offsets_and_alters_configs(go_broker: BrokerProcess) -> None:
    topic = unique("franz-adm")
    out = run_go("franz", "admin", go_broker.bootstrap, topic)

    assert out["created_partitions"] == 3 and out["topic_id_set"] and out["internal"] is False
    assert out["create_again_error"].startswith("TOPIC_ALREADY_EXISTS")
    assert len(out["leaders"]) == 3 and len(set(out["leaders"])) == 1 and out["leaders"][0] >= 0
    # partition p holds p + 1 records
    assert keyed(out["start"]) == {0: 0, 1: 0, 2: 0}
    assert keyed(out["end"]) == {0: 1, 1: 2, 2: 3}
    assert keyed(out["after_before"]) == {0: 0, 1: 0, 2: 0}  # every record is newer than the time before
    assert keyed(out["future"]) == {0: 1, 1: 2, 2: 3}  # none newer than an hour ahead: kadm shows the end

    # IncrementalAlterConfigs sets one key and deletes another (the create's retention.ms)
    incr = out["after_incremental"]
    assert incr["segment.bytes"] == ["1048576", "DYNAMIC_TOPIC_CONFIG"]
    assert incr["retention.ms"] == ["604800000", "DEFAULT_CONFIG"]
    # AlterConfigs replaces the whole set of a topic's dynamic configs
    state = out["after_alter_configs"]
    assert state["cleanup.policy"] == ["compact", "DYNAMIC_TOPIC_CONFIG"]
    assert state["segment.bytes"] == ["1073741824", "DEFAULT_CONFIG"]

    # a broker's own configs; without a broker id, only the cluster-wide dynamic defaults
    # (`kafka-configs --entity-type brokers --entity-default`), none of the static ones
    broker = out["broker_configs"]
    assert broker["broker.id"] == [str(out["leaders"][0]), "STATIC_BROKER_CONFIG"]
    assert broker["num.partitions"] == ["1", "DEFAULT_CONFIG"]
    assert broker["auto.create.topics.enable"] == ["true", "DEFAULT_CONFIG"]
    assert all(source == "DYNAMIC_DEFAULT_BROKER_CONFIG" for _, source in out["cluster_default_configs"].values())


def test_franz_produces_with_acks_all_and_idempotence(go_broker: BrokerProcess) -> None:
    topic = unique("franz-produce")
    create_topic(go_broker.bootstrap, topic, 3)
    n = 50
    out = run_go("franz", "produce", go_broker.bootstrap, topic, str(n))
    records = out["records"]

    assert [r["value"] for r in records] == [f"value-{i}" for i in range(n)]
    assert_partitioned_by_key(records)
    # one idempotent producer id from InitProducerId, epoch 0, on every record
    assert len({r["producer_id"] for r in records}) == 1 and records[0]["producer_id"] >= 0
    assert {r["producer_epoch"] for r in records} == {0}
    # each partition's leader remembers that producer and the last sequence it wrote there
    sent: dict[int, int] = defaultdict(int)
    for r in records:
        sent[r["partition"]] += 1
    assert sorted((p["partition"], p["producer_id"], p["producer_epoch"], p["last_sequence"], p["txn_start"])
                  for p in out["producers"]) == \
        [(partition, records[0]["producer_id"], 0, count - 1, -1) for partition, count in sorted(sent.items())]
    seen = read_back(go_broker.bootstrap, topic, 3, n)
    assert sorted(seen) == sorted((r["key"], r["value"], {"seq": str(i)}) for i, r in enumerate(records))

    # a topic that does not exist is created on the first Metadata request that asks for it
    fresh = unique("franz-auto")
    records = run_go("franz", "produce", go_broker.bootstrap, fresh, "3")["records"]
    assert [(r["partition"], r["offset"]) for r in records] == [(0, 0), (0, 1), (0, 2)]


def test_franz_group_of_two_splits_partitions_and_commits(go_broker: BrokerProcess) -> None:
    topic, group, n = unique("franz-group"), unique("franz-g"), 60
    out = run_go("franz", "group", go_broker.bootstrap, topic, group, str(n))
    counts = assert_group_split(out, n)

    assert out["state"] == "Stable" and out["protocol_type"] == "consumer"
    assert out["protocol"] == "cooperative-sticky"  # kgo's default balancer
    members = {m["client_id"]: m for m in out["members"]}
    assert set(members) == {"member-0", "member-1"}
    assert [members[f"member-{i}"]["partitions"] for i in range(2)] == out["held"]
    assert all(m["host"] == "/127.0.0.1" and m["member_id"].startswith(m["client_id"] + "-") for m in members.values())
    # kadm's lag: each partition committed at its end, by the member holding it
    assert [(lag["partition"], lag["commit"], lag["end"], lag["lag"], lag["error"]) for lag in out["lag"]] == \
        [(p, counts[p], counts[p], 0, "") for p in range(3)]
    assert all(lag["partition"] in members[lag["member"]]["partitions"] for lag in out["lag"])

    # member-1 left: member-0 took its partitions over where member-1 had committed, and read every
    # record produced since exactly once
    alone = out["consumed_alone"]
    assert sorted(c["value"] for c in alone) == sorted(f"w{i}" for i in range(n))
    more: dict[int, list[int]] = defaultdict(list)
    for c in alone:
        more[c["partition"]].append(c["offset"])
    for p, offsets in more.items():
        assert sorted(offsets) == list(range(counts.get(p, 0), counts.get(p, 0) + len(offsets)))
    # the commits outlive the members
    assert out["state_after_leave"] == "Empty"
    assert keyed(out["committed_after_leave"]) == {p: counts.get(p, 0) + len(more.get(p, [])) for p in range(3)}


def test_franz_transactions_read_committed_sees_only_committed(go_broker: BrokerProcess) -> None:
    source, sink, group, n = unique("franz-in"), unique("franz-out"), unique("franz-eos"), 40
    out = run_go("franz", "txn", go_broker.bootstrap, source, sink, group, str(n))

    # GroupTransactSession: every input record transformed once, in several transactions, with the
    # input offsets committed in them
    assert out["transformed"] == n and out["transactions"] > 1
    assert sum(keyed(out["committed"]).values()) == n
    transformed = sorted(f"out-{i}" for i in range(n))
    # then a transaction aborted and one committed by a plain transactional producer
    assert sorted(out["read_committed"]) == sorted(transformed + ["committed-0", "committed-1", "committed-2"])
    assert sorted(out["read_uncommitted"]) == sorted(
        transformed + ["aborted-0", "aborted-1", "aborted-2", "committed-0", "committed-1", "committed-2"])
    assert out["read_committed"][-3:] == ["committed-0", "committed-1", "committed-2"]
    assert out["txn_states"] == {f"{group}-ctp": "CompleteCommit", f"{group}-plain": "CompleteCommit"}
    # transaction.version 2 (KIP-890 part 2) on every connection: partitions and offsets join the
    # transaction through Produce and TxnOffsetCommit, each EndTxn bumps the epoch
    requests = out["requests"]
    assert "AddPartitionsToTxn" not in requests and "AddOffsetsToTxn" not in requests, requests
    assert requests["EndTxn"] == out["transactions"] + 2 and requests["TxnOffsetCommit"] == out["transactions"]


# Sarama


@pytest.mark.parametrize("version", SARAMA_VERSIONS)
def test_sarama_cluster_admin_creates_and_describes_topics(go_broker: BrokerProcess, version: str) -> None:
    topic = unique(f"sarama-adm-{version}")
    out = run_go("sarama", "admin", version, go_broker.bootstrap, topic)

    assert "already exists" in out["create_again_error"]
    assert out["describe_error"] == ""
    broker_id = out["controller"]
    assert out["brokers"] == [broker_id]
    # created with 2 partitions, then CreatePartitions to 3
    assert out["partitions"] == [{"partition": p, "leader": broker_id, "replicas": [broker_id], "isr": [broker_id],
                                  "error": 0} for p in range(3)]
    assert out["listed_partitions"] == 3
    assert out["configs"] == {"retention.ms": {"value": "3600000", "default": False, "source": "Topic"},
                              "cleanup.policy": {"value": "delete", "default": True, "source": "Default"}}


@pytest.mark.parametrize("version", SARAMA_VERSIONS)
def test_sarama_sync_producer_waits_for_all(go_broker: BrokerProcess, version: str) -> None:
    topic = unique(f"sarama-produce-{version}")
    create_topic(go_broker.bootstrap, topic, 3)
    n = 30
    records = run_go("sarama", "produce", version, go_broker.bootstrap, topic, str(n))["records"]

    assert_partitioned_by_key(records)
    seen = read_back(go_broker.bootstrap, topic, 3, n)
    assert sorted(seen) == sorted((r["key"], r["value"], {"seq": str(i)}) for i, r in enumerate(records))


@pytest.mark.parametrize("version", SARAMA_VERSIONS)
def test_sarama_consumer_group_of_two_commits_offsets(go_broker: BrokerProcess, version: str) -> None:
    topic, group, n = unique(f"sarama-group-{version}"), unique("sarama-g"), 60
    out = run_go("sarama", "group", version, go_broker.bootstrap, topic, group, str(n))
    counts = assert_group_split(out, n)

    assert out["state"] == "Stable" and out["protocol_type"] == "consumer" and out["protocol"] == "range"
    assert sorted(m["partitions"] for m in out["members"]) == sorted(out["held"])
    assert all(m["client_id"] == "sarama-test" and m["host"] == "/127.0.0.1" for m in out["members"])
    # the commits fetched back (OffsetFetch) are the ends (ListOffsets), while in the group and after
    assert keyed(out["committed"]) == keyed(out["end"]) == counts
    assert keyed(out["committed_after_leave"]) == counts


def test_sarama_default_version_sends_older_requests_than_max(go_broker: BrokerProcess) -> None:
    """The two Sarama runs above differ in what they send, not only in their configuration."""
    sent = {}
    for version in SARAMA_VERSIONS:
        topic, group = unique(f"sarama-v-{version}"), unique("sarama-v")
        sent[version] = run_go("sarama", "group", version, go_broker.bootstrap, topic, group, "6")["request_versions"]
    for key in (PRODUCE, FETCH, OFFSET_COMMIT, OFFSET_FETCH, JOIN_GROUP):
        assert max(sent["default"][key]) <= max(sent["max"][key]), key
    assert max(sent["default"][PRODUCE]) < max(sent["max"][PRODUCE])
    assert max(sent["default"][JOIN_GROUP]) < max(sent["max"][JOIN_GROUP])
