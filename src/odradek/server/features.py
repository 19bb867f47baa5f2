"""Kafka's feature flags (KIP-584) as this broker reports them in ApiVersions v3+.

`transaction.version` (KIP-890) and `group.version` (KIP-848) decide which protocol a
client may use: a Kafka 4 client uses transactions version 2 only when the broker's
finalized `transaction.version` is 2 or more. odradek has no UpdateFeatures: what it
supports it finalizes, so the two ranges below are the one place to raise a level once
its semantics are served and tested.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    min_version: int
    max_version: int  # supported, and finalized at this level


FEATURES: tuple[Feature, ...] = (
    # 1: the KIP-890 part 1 server-side checks; 2: transactions version 2 (KIP-890 part 2: an
    # epoch bump at every EndTxn v5, partitions added implicitly by Produce v12+ and TxnOffsetCommit v5+)
    Feature("transaction.version", 0, 2),
    # 1: KIP-848's consumer protocol (ConsumerGroupHeartbeat, ConsumerGroupDescribe) is served
    Feature("group.version", 0, 1),
    # 1: KIP-932 share groups (ShareGroupHeartbeat, ShareFetch, ShareAcknowledge), as Kafka 4.3 finalizes it
    Feature("share.version", 0, 1),
)

# The finalized-features epoch: constant, since the levels only change with a new release.
FINALIZED_FEATURES_EPOCH = 1


def finalized_level(name: str) -> int:
    """The finalized level of feature `name` (0 when odradek does not know it)."""
    for feature in FEATURES:
        if feature.name == name:
            return feature.max_version
    return 0
