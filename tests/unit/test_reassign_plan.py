"""The placement plans of `partitions reassign --generate`, `cluster rebalance` and
`cluster decommission` (odradek.cli.reassign_plan), and kafka-reassign-partitions' JSON."""

from __future__ import annotations

import json
import random

import pytest

from odradek.cli import reassign_plan as rp
from odradek.cluster import placement


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
                     (('{"partitions":[{"topic":"t","partition":0,"replicas":[1]},'
                       '{"topic":"t","partition":0,"replicas":[2]}]}'), "twice")):
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


# -- racks ------------------------------------------------------------------------------------

THREE_RACKS = {0: "a", 1: "b", 2: "c", 3: "a", 4: "b", 5: "c"}


def racks_of(replicas: list[int], racks: dict[int, str]) -> list[str]:
    return [racks[b] for b in replicas]


def distinct(after: rp.Assignment, racks: dict[int, str]) -> bool:
    return all(len(set(racks_of(r, racks))) == len(r) for r in after.values())


def test_rebalance_onto_new_brokers_in_three_racks_keeps_replicas_in_distinct_racks() -> None:
    # brokers 0,1,2 in racks a,b,c hold topic t (RF 3) and u (RF 2); brokers 3 (rack a) and 4 (rack b) join:
    # rack c has one broker, so broker 2 keeps its replicas; racks a and b share theirs out
    current = three_broker_topic(10)
    current.update({("u", p): [p % 3, (p + 1) % 3] for p in range(9)})
    sizes = {tp: 1000 * (tp[1] + 1) for tp in current}
    brokers = [0, 1, 2, 3, 4]
    plan = rp.rebalance(current, brokers, sizes, THREE_RACKS)
    after = {**current, **plan}
    assert distinct(after, THREE_RACKS)
    counts = rp.load({tp: r for tp, r in after.items() if tp[0] == "t"}, brokers, sizes)
    assert counts.replicas == {0: 5, 1: 5, 2: 10, 3: 5, 4: 5}
    assert plan and all(THREE_RACKS[b] in ("a", "b") for tp, r in plan.items() for b in r if b not in current[tp])
    # rack-unaware, the same cluster spreads t 6/6/6/6/6 and puts two replicas of a partition in one rack
    unaware = {**current, **rp.rebalance(current, brokers, sizes)}
    assert not distinct(unaware, THREE_RACKS)


def test_rebalance_with_as_many_brokers_in_every_rack_is_even_and_rack_distinct() -> None:
    current = three_broker_topic(12)
    brokers = [0, 1, 2, 3, 4, 5]
    after = {**current, **rp.rebalance(current, brokers, {}, THREE_RACKS)}
    assert distinct(after, THREE_RACKS)
    counts = rp.load(after, brokers, {})
    assert set(counts.replicas.values()) == {6} and set(counts.leaders.values()) == {2}


def test_rebalance_moves_a_replica_out_of_a_shared_rack() -> None:
    # even counts, but placed before broker.rack was set: t-0 has both replicas in rack a, t-1 in rack b
    racks = {0: "a", 1: "a", 2: "b", 3: "b"}
    current = {("t", 0): [0, 1], ("t", 1): [2, 3], ("t", 2): [1, 2], ("t", 3): [3, 0]}
    assert rp.rebalance(current, [0, 1, 2, 3], {}) == {}  # balanced: rack-unaware, nothing to do
    plan = rp.rebalance(current, [0, 1, 2, 3], {}, racks)
    after = {**current, **plan}
    assert all(sorted(racks_of(r, racks)) == ["a", "b"] for r in after.values()), after
    counts = rp.load(after, [0, 1, 2, 3], {})
    assert set(counts.replicas.values()) == {2} and set(counts.leaders.values()) == {1}
    assert all(len(set(r) & set(current[tp])) == 1 for tp, r in plan.items())  # one replica moved in each


def test_rebalance_never_trades_racks_for_balance() -> None:
    # two brokers in rack a, one in rack b, RF 2: broker 2 holds a replica of every partition (as Kafka
    # places them); evening the counts would put both replicas of a partition in rack a
    racks = {0: "a", 1: "a", 2: "b"}
    current = {("t", p): [2, p % 2] if p % 2 else [p % 2, 2] for p in range(6)}
    assert rp.rebalance(current, [0, 1, 2], {}, racks) == {}
    assert rp.rebalance(current, [0, 1, 2], {}) != {}  # without racks it evens them


def test_rebalance_with_a_broker_without_rack_is_rack_unaware() -> None:
    current = three_broker_topic(10)
    partial = {**THREE_RACKS, 4: None}
    assert rp.rebalance(current, [0, 1, 2, 3, 4], {}, partial) == rp.rebalance(current, [0, 1, 2, 3, 4], {})
    assert "broker(s) 4 have no rack" in rp.describe_racks(partial)
    assert rp.describe_racks({0: "a", 1: "b", 2: "a"}) == "rack-aware: rack a: 0,2; rack b: 1"
    assert rp.describe_racks({0: None, 1: None}) is None  # without racks the commands say nothing of them


def test_rebalance_keeps_random_assignments_valid_with_racks() -> None:
    rng = random.Random(11)
    for _ in range(40):
        brokers = list(range(rng.choice([3, 4, 5, 6, 7, 9])))
        racks = {b: "abc"[b % 3] for b in brokers}
        current = {("t", p): rng.sample(brokers[:3], 2) for p in range(rng.randint(1, 20))}
        current.update({("u", p): [(p + j) % 3 for j in range(3)] for p in range(rng.randint(1, 6))})
        sizes = {tp: rng.randint(0, 10_000) for tp in current}
        after = {**current, **rp.rebalance(current, brokers, sizes, racks)}
        assert distinct(after, racks), after
        assert all(len(r) == len(current[tp]) for tp, r in after.items())
        if len(brokers) % 3 == 0:  # racks of one size: the racks do not stand in the way of an even spread
            for topic in ("t", "u"):
                counts = rp.load({tp: r for tp, r in after.items() if tp[0] == topic}, brokers, sizes)
                assert max(counts.replicas.values()) - min(counts.replicas.values()) <= 1, (topic, counts)


def test_decommission_in_three_racks_keeps_replicas_in_distinct_racks() -> None:
    current = {("t", p): [p % 6, (p + 1) % 6, (p + 2) % 6] for p in range(12)}
    current.update({("big", p): [1, 2] for p in range(4)})  # brokers 1 and 2 are the busiest
    brokers = [0, 1, 2, 3, 4, 5]
    plan = rp.decommission(current, brokers, 0, {}, THREE_RACKS)
    after = {**current, **plan}
    assert all(0 not in r for r in after.values())
    assert distinct(after, THREE_RACKS)
    for tp, r in plan.items():
        assert r[0] in current[tp]
    # rack-unaware, the least loaded broker wins even in a rack the partition already uses
    assert not distinct({**current, **rp.decommission(current, brokers, 0, {})}, THREE_RACKS)


def test_decommission_falls_back_to_any_rack_when_no_other_rack_is_free() -> None:
    racks = {0: "a", 1: "b", 2: "b"}
    current = {("t", 0): [0, 1]}
    assert rp.decommission(current, [0, 1, 2], 0, {}, racks) == {("t", 0): [1, 2]}


def test_generate_with_racks_is_kafkas_rack_aware_layout() -> None:
    racks = {0: "a", 1: "a", 2: "b", 3: "b", 4: "c", 5: "c"}
    current = three_broker_topic(12)
    current.update({("u", p): [0, 1] for p in range(6)})
    proposed = rp.generate(current, [0, 1, 2, 3, 4, 5], racks)
    assert set(proposed) == set(current)
    assert distinct(proposed, racks)
    assert all(len(proposed[tp]) == len(current[tp]) for tp in current)
    t = {tp: r for tp, r in proposed.items() if tp[0] == "t"}
    counts = rp.load(t, [0, 1, 2, 3, 4, 5], {})
    assert set(counts.replicas.values()) == {6} and set(counts.leaders.values()) == {2}
    # the same layout CreateTopics gives the topic on these brokers
    assert [t[("t", p)] for p in range(12)] == placement.assign_replicas(
        racks, 12, 3, fixed_start=placement.start_index("t", 6))
    # a listed broker without a rack: the rack-unaware layout of today
    assert rp.generate(current, [0, 1, 2, 6], racks) == rp.generate(current, [0, 1, 2, 6])
