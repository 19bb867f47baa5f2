"""Server-side partition assignors of KIP-848 (Kafka's UniformAssignor and RangeAssignor).

An assignor maps the group's members to partitions of the topics they subscribe to;
it sees the previous target assignment so that it can be sticky (a partition stays
with its member while the assignment stays balanced, so fewer partitions move and
fewer revocations are needed). Topics are named by their ids, as in Kafka.
`group.consumer.assignors` lists the assignors a group may ask for; the first is
the default.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Assignment = dict[uuid.UUID, set[int]]  # topic id -> partitions


@dataclass(frozen=True, slots=True)
class MemberSpec:
    member_id: str
    instance_id: str | None
    topics: frozenset[uuid.UUID]  # the subscribed topics that exist


Assignor = Callable[[list[MemberSpec], Mapping[uuid.UUID, int], Mapping[str, Assignment]], dict[str, Assignment]]


def _empty(members: list[MemberSpec]) -> dict[str, Assignment]:
    return {m.member_id: {} for m in members}


def uniform(members: list[MemberSpec], partitions: Mapping[uuid.UUID, int],
            previous: Mapping[str, Assignment]) -> dict[str, Assignment]:
    """Every partition to one subscribed member, member counts differing by at most one
    where subscriptions allow; partitions stay where they were while that holds."""
    result = _empty(members)
    if not members:
        return result
    by_id = {m.member_id: m for m in members}
    owner: dict[tuple[uuid.UUID, int], str] = {}
    count = dict.fromkeys(by_id, 0)
    # 1. keep the previous target where the member still subscribes and the partition exists
    for member_id, assignment in sorted(previous.items()):
        spec = by_id.get(member_id)
        if spec is None:
            continue
        for topic_id, parts in assignment.items():
            if topic_id not in spec.topics:
                continue
            for p in sorted(parts):
                if p < partitions.get(topic_id, 0) and (topic_id, p) not in owner:
                    owner[(topic_id, p)] = member_id
                    count[member_id] += 1
    # a member holding more than its share gives the excess back first (homogeneous quota)
    total = sum(n for t, n in partitions.items() if any(t in m.topics for m in members))
    quota, extra = divmod(total, len(members))
    if all(m.topics == members[0].topics for m in members):
        over_quota = sorted(by_id, key=lambda mid: -count[mid])
        allowed = {mid: quota + (1 if i < extra else 0) for i, mid in enumerate(over_quota)}
        for tp in sorted(owner, key=lambda tp: (str(tp[0]), -tp[1])):
            mid = owner[tp]
            if count[mid] > allowed[mid]:
                del owner[tp]
                count[mid] -= 1
    # 2. every unowned partition to the eligible member with the fewest
    for topic_id in sorted(partitions, key=str):
        eligible = [m.member_id for m in members if topic_id in m.topics]
        if not eligible:
            continue
        for p in range(partitions[topic_id]):
            if (topic_id, p) in owner:
                continue
            mid = min(eligible, key=lambda e: (count[e], e))
            owner[(topic_id, p)] = mid
            count[mid] += 1
    # 3. heterogeneous subscriptions: move partitions from the fullest to the emptiest eligible member
    moved = True
    while moved:
        moved = False
        for tp, mid in sorted(owner.items(), key=lambda kv: (-count[kv[1]], str(kv[0][0]), kv[0][1])):
            eligible = [m.member_id for m in members if tp[0] in m.topics]
            target = min(eligible, key=lambda e: (count[e], e))
            if count[target] < count[mid] - 1:
                owner[tp] = target
                count[mid] -= 1
                count[target] += 1
                moved = True
                break
    for (topic_id, p), mid in owner.items():
        result[mid].setdefault(topic_id, set()).add(p)
    return result


def range_(members: list[MemberSpec], partitions: Mapping[uuid.UUID, int],
           previous: Mapping[str, Assignment]) -> dict[str, Assignment]:
    """Per topic, consecutive ranges of partitions to its subscribers in member order, the
    first (partitions % members) getting one more: co-partitioned topics line up."""
    result = _empty(members)
    for topic_id in sorted(partitions, key=str):
        subscribers = sorted((m for m in members if topic_id in m.topics),
                             key=lambda m: (m.instance_id or m.member_id))
        if not subscribers:
            continue
        size, extra = divmod(partitions[topic_id], len(subscribers))
        start = 0
        for i, m in enumerate(subscribers):
            n = size + (1 if i < extra else 0)
            if n:
                result[m.member_id][topic_id] = set(range(start, start + n))
            start += n
    return result


ASSIGNORS: dict[str, Assignor] = {"uniform": uniform, "range": range_}
