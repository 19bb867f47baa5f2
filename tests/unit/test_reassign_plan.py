"""The placement plans of `partitions reassign --generate`, `cluster rebalance` and
`cluster decommission` (odradek.cli.reassign_plan), and kafka-reassign-partitions' JSON."""

from __future__ import annotations

import json
import random

import pytest

from odradek.cli import reassign_plan as rp


def three_broker_topic(partitions: int, rf: int = 3) -> rp.Assignment:
    return {("t", p): [(p + j) % 3 for j in range(rf)] for p in range(partitions)}


def test_rebalance_onto_two_new_brokers_evens_replicas_and_leaders() -> None:
    current = three_broker_topic(10)
    sizes = {tp: 1000 * (tp[1] + 1) for tp in current}
    plan = rp.rebalance(current, [0, 1, 2, 3, 4], sizes)
    after = {**current, **plan}
    counts = rp.load(after, [0, 1, 2, 3, 4], sizes)
    assert set(counts.replicas.values()) == {6}  # 30 replicas over 5 brokers
    assert max(counts.leaders.values()) - min(counts.leaders.values()) <= 1
    assert all(len(set(r)) == 3 for r in after.values())  # replication factor and distinct replicas kept
    moved = sum(1 for tp, r in plan.items() for b in r if b not in current[tp])
    assert moved == 12  # exactly the replicas the new brokers take; nothing else moves


def test_rebalance_of_a_balanced_cluster_moves_nothing() -> None:
    current = three_broker_topic(6)
    assert rp.rebalance(current, [0, 1, 2], {}) == {}


def test_rebalance_uses_bytes_to_break_count_ties() -> None:
    # two brokers with as many replicas, one holding the big partition: the new broker takes big ones
    current = {("t", 0): [0], ("t", 1): [1], ("t", 2): [0], ("t", 3): [1]}
    sizes = {("t", 0): 10_000, ("t", 1): 10, ("t", 2): 10, ("t", 3): 10}
    plan = rp.rebalance(current, [0, 1, 2], sizes)
    assert plan[("t", 0)] == [2]


def test_decommission_moves_every_replica_and_keeps_leaders_in_sync() -> None:
    current = three_broker_topic(6)
    current.update({("u", p): [p % 4, (p + 1) % 4, (p + 2) % 4] for p in range(4)})
    plan = rp.decommission(current, [0, 1, 2, 3], 3, {})
    after = {**current, **plan}
    assert all(3 not in r for r in after.values())
    for tp, r in plan.items():
        assert len(set(r)) == len(current[tp])
        assert r[0] in current[tp]  # the new preferred leader is a replica that is already in sync


def test_decommission_refuses_when_too_few_brokers_remain() -> None:
    with pytest.raises(ValueError, match="only 2 broker"):
        rp.decommission(three_broker_topic(2), [0, 1, 2], 0, {})


def test_generate_spreads_over_the_listed_brokers() -> None:
    proposed = rp.generate(three_broker_topic(8), [0, 1, 2, 3])
    counts = rp.load(proposed, [0, 1, 2, 3], {})
    assert set(counts.replicas.values()) == {6} and set(counts.leaders.values()) == {2}
    with pytest.raises(ValueError, match="replication factor 3"):
        rp.generate(three_broker_topic(1), [0, 1])


def test_reassignment_json_round_trips_in_kafkas_format() -> None:
    text = rp.to_json({("t", 1): [2, 0], ("t", 0): [1, 2]})
    assert json.loads(text) == {"version": 1, "partitions": [
        {"topic": "t", "partition": 0, "replicas": [1, 2], "log_dirs": ["any", "any"]},
        {"topic": "t", "partition": 1, "replicas": [2, 0], "log_dirs": ["any", "any"]}]}
    assert rp.from_json(text) == {("t", 0): [1, 2], ("t", 1): [2, 0]}
    for bad, why in (("[", "not JSON"), ("{}", 'no "partitions"'), ('{"partitions":[{"topic":"t"}]}', "needs"),
                     ('{"partitions":[{"topic":"t","partition":0,"replicas":[1]},'
                      '{"topic":"t","partition":0,"replicas":[2]}]}', "twice")):
        with pytest.raises(ValueError, match=why):
            rp.from_json(bad)


def test_rebalance_keeps_random_assignments_valid() -> None:
    rng = random.Random(7)
    for _ in range(50):
        brokers = list(range(rng.randint(3, 7)))
        current = {("t", p): rng.sample(brokers[:3], 2) for p in range(rng.randint(1, 20))}
        sizes = {tp: rng.randint(0, 10_000) for tp in current}
        after = {**current, **rp.rebalance(current, brokers, sizes)}
        counts = rp.load(after, brokers, sizes)
        assert max(counts.replicas.values()) - min(counts.replicas.values()) <= 1
        assert all(len(set(r)) == 2 for r in after.values())


def test_rebalance_evens_each_topic_not_only_the_totals() -> None:
    current = three_broker_topic(6)  # topic t: 18 replicas
    current.update({("__consumer_offsets", p): [(p + j) % 3 for j in range(3)] for p in range(3)})
    after = {**current, **rp.rebalance(current, [0, 1, 2, 3, 4], {})}
    for topic in ("t", "__consumer_offsets"):
        counts = rp.load({tp: r for tp, r in after.items() if tp[0] == topic}, [0, 1, 2, 3, 4], {})
        assert max(counts.replicas.values()) - min(counts.replicas.values()) <= 1, (topic, counts)
