"""`odradek txn list` and `odradek txn describe` end to end: a real broker (and a real
three-broker cluster), a confluent-kafka transactional producer, the real command."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from conftest import BrokerProcess, free_port, module_broker, unique
from test_cli import odradek, ok, one_sentence_error
from test_clients import create_topic
from test_cluster_txn import txn_coordinator
from test_groups_protocol import call
from test_transactions import ENV, txn_producer

if TYPE_CHECKING:
    from cluster_fixtures import Cluster

pytest_plugins = ["cluster_fixtures"]


txb = module_broker("txb", ENV)


def table_rows(out: str) -> list[list[str]]:
    """The body cells of the rich tables the command printed (the header row is in ┃ rules)."""
    return [[cell.strip() for cell in line.strip().strip("│").split("│")]
            for line in out.splitlines() if line.lstrip().startswith("│")]


def listed(out: str) -> dict[str, tuple[int, int, str]]:
    """TransactionalId -> (Coordinator, ProducerId, TransactionState) of `txn list`."""
    return {r[0]: (int(r[1]), int(r[2]), r[3]) for r in table_rows(out)}


def described(out: str) -> dict[str, list[str]]:
    """Field -> its lines of `txn describe` (a value of several lines continues under an empty field)."""
    fields: dict[str, list[str]] = {}
    last = ""
    for field, value in table_rows(out):
        last = field or last
        fields.setdefault(last, []).append(value)
    return fields


def test_list_and_describe_show_an_open_transaction_then_its_commit(txb: BrokerProcess) -> None:
    b = ["-b", txb.bootstrap]
    topic, tid = unique("txncli"), unique("tx")
    create_topic(txb.bootstrap, topic, partitions=2)
    p = txn_producer(txb.bootstrap, tid, **{"transaction.timeout.ms": 45000})
    p.begin_transaction()
    p.produce(topic, value=b"a", partition=0)
    p.produce(topic, value=b"b", partition=1)
    assert p.flush(60) == 0
    # The partition leader's view of the producer (DescribeProducers), independent of the coordinator's.
    leader = call(txb, 61, 0, topics=[{"name": topic, "partition_indexes": [0]}]).topics[0].partitions[0]
    (producer,) = [s for s in leader.active_producers if s.current_txn_start_offset >= 0]

    rows = listed(ok("txn", "list", *b))
    assert rows[tid] == (0, producer.producer_id, "Ongoing"), rows
    info = described(ok("txn", "describe", tid, *b))
    assert info["CoordinatorId"] == ["0"] and info["TransactionalId"] == [tid]
    assert info["ProducerId"] == [str(producer.producer_id)]
    assert info["ProducerEpoch"] == [str(producer.producer_epoch)]
    assert info["TransactionState"] == ["Ongoing"] and info["TransactionTimeoutMs"] == ["45000"]
    assert int(info["CurrentTransactionStartTimeMs"][0]) > 0 and int(info["TransactionDurationMs"][0]) >= 0
    assert sorted(info["TopicPartitions"]) == [f"{topic}-0", f"{topic}-1"]

    p.commit_transaction(30)
    info = described(ok("txn", "describe", tid, *b))
    assert info["TransactionState"] == ["CompleteCommit"] and info["TopicPartitions"] == ["None"], info
    assert info["ProducerId"] == [str(producer.producer_id)]


def test_list_filters_by_state_and_producer_id(txb: BrokerProcess) -> None:
    b = ["-b", txb.bootstrap]
    topic, open_id, done_id = unique("txnf"), unique("open"), unique("done")
    create_topic(txb.bootstrap, topic)
    done = txn_producer(txb.bootstrap, done_id)
    done.begin_transaction()
    done.produce(topic, value=b"x")
    done.commit_transaction(30)
    still = txn_producer(txb.bootstrap, open_id)
    still.begin_transaction()
    still.produce(topic, value=b"y")
    assert still.flush(60) == 0

    ongoing = listed(ok("txn", "list", "--state", "Ongoing", *b))
    assert open_id in ongoing and done_id not in ongoing
    assert all(state == "Ongoing" for _, _, state in ongoing.values())
    both = listed(ok("txn", "list", "--state", "ongoing", "--state", "CompleteCommit", *b))  # any case
    assert both[open_id][2] == "Ongoing" and both[done_id][2] == "CompleteCommit"
    pid = both[done_id][1]
    assert list(listed(ok("txn", "list", "--producer-id", str(pid), *b))) == [done_id]
    out = odradek("txn", "list", "--state", "Bogus", *b)
    assert out.returncode == 0 and listed(out.stdout) == {} and "Bogus" in out.stderr, out.stderr
    still.abort_transaction(30)


def test_describe_of_an_unknown_transactional_id_is_one_sentence(txb: BrokerProcess) -> None:
    tid = unique("nobody")
    out = odradek("txn", "describe", tid, "-b", txb.bootstrap)
    one_sentence_error(out, f"transactional id {tid} is not known")
    assert out.returncode == 1 and "TRANSACTIONAL_ID_NOT_FOUND" in out.stderr


def test_unreachable_broker_is_one_sentence() -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    for cmd in (["txn", "list"], ["txn", "describe", "x"]):
        out = odradek(*cmd, "-b", nowhere)
        one_sentence_error(out, f"cannot reach a broker at {nowhere}")
        assert out.returncode == 1


@pytest.mark.timeout(240)
def test_list_asks_every_broker_of_a_cluster(cluster_factory: Any) -> None:
    """Each broker coordinates its own __transaction_state partitions: one bootstrap address
    is enough to list the transactions of all of them."""
    cluster: Cluster = cluster_factory(3, env={"ODRADEK_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "3"})
    topic = unique("ctxcli")
    cluster.create_topic(topic, partitions=2, rf=3)
    by_coordinator: dict[int, str] = {}
    for _ in range(30):
        tid = unique("ctx")
        by_coordinator.setdefault(txn_coordinator(cluster, tid), tid)
        if len(by_coordinator) == 3:
            break
    assert len(by_coordinator) >= 2, by_coordinator
    producers = []
    for tid in by_coordinator.values():
        p = txn_producer(cluster.bootstrap, tid)
        p.begin_transaction()
        p.produce(topic, value=b"v", partition=0)
        assert p.flush(60) == 0
        producers.append(p)

    via = cluster.brokers[0].bootstrap
    rows = listed(ok("txn", "list", "-b", via))
    assert {tid: rows[tid][0] for tid in by_coordinator.values()} == {t: c for c, t in by_coordinator.items()}
    assert all(rows[tid][2] == "Ongoing" for tid in by_coordinator.values())
    for coordinator, tid in by_coordinator.items():
        info = described(ok("txn", "describe", tid, "-b", via))
        assert info["CoordinatorId"] == [str(coordinator)] and info["TopicPartitions"] == [f"{topic}-0"]
    for p in producers:
        p.abort_transaction(30)
