"""ElectLeaders (KIP-460) in cluster mode: a preferred or unclean election of one partition.

Only the active controller makes these, as in Kafka (another broker answers NOT_CONTROLLER):
it writes the partition's state znode, a compare-and-set on its version as every other writer
does (the controller's thread, the leader changing its ISR), so a concurrent change makes it
read and retry, in one transaction with the check of /controller_epoch's zkVersion (`fence`),
so a controller deposed meanwhile writes nothing (ControllerMoved).
The answers are Kafka's (PartitionLeaderElectionAlgorithms, KafkaController.electLeaders):
ELECTION_NOT_NEEDED when the leader is already the one the election would pick,
PREFERRED_LEADER_NOT_AVAILABLE when the preferred replica is down or out of the ISR,
ELIGIBLE_LEADERS_NOT_AVAILABLE when an unclean election finds no live replica.
"""

from __future__ import annotations

import logging

from odradek.cluster.metadata import TopicError
from odradek.cluster.zk import ControllerMoved, Fence, LeaderAndIsr, ZkMetadataStore

log = logging.getLogger("odradek.controller")

PREFERRED, UNCLEAN = 0, 1
CAS_ATTEMPTS = 5


def elect(store: ZkMetadataStore, topic: str, p: int, election_type: int, live: set[int], *,
          fence: Fence, controller_epoch: int) -> None:
    """Blocking (the store's executor); raises TopicError with Kafka's code when nothing was
    elected (ControllerMoved when the controller whose `fence` this is was deposed)."""
    meta = store.seen.topics.get(topic)
    try:
        if meta is None or not 0 <= p < meta.partitions:
            raise TopicError("unknown_topic_or_partition", "The partition does not exist.")
        _elect(store, topic, p, election_type, live, meta.replicas[p], fence, controller_epoch)
    except ControllerMoved:
        raise
    except TopicError:
        store.check_fence(fence)  # a deposed controller answers nothing but NOT_CONTROLLER
        raise


def _elect(store: ZkMetadataStore, topic: str, p: int, election_type: int, live: set[int], replicas: list[int],
           fence: Fence, controller_epoch: int) -> None:
    for _ in range(CAS_ATTEMPTS):
        state = store.read_state(topic, p)
        if state is None:
            raise TopicError("unknown_topic_or_partition", "The partition does not exist.")
        if election_type == PREFERRED:
            preferred = replicas[0]
            if state.leader == preferred:
                raise TopicError("election_not_needed", "Leader election not needed for topic partition.")
            if preferred not in live or preferred not in state.isr:
                raise TopicError("preferred_leader_not_available",
                                 f"Failed to elect leader for partition {topic}-{p} under strategy "
                                 "PreferredReplicaPartitionLeaderElectionStrategy")
            new = LeaderAndIsr(preferred, state.leader_epoch + 1, state.isr, controller_epoch, state.zk_version)
        elif election_type == UNCLEAN:
            if state.leader in live:
                raise TopicError("election_not_needed", "Leader election not needed for topic partition.")
            clean = [b for b in replicas if b in state.isr and b in live]
            candidates = clean or [b for b in replicas if b in live]
            if not candidates:
                raise TopicError("eligible_leaders_not_available",
                                 f"Failed to elect leader for partition {topic}-{p} under strategy "
                                 "UncleanLeaderElectionStrategy")
            isr = tuple(b for b in state.isr if b in live) if clean else (candidates[0],)
            new = LeaderAndIsr(candidates[0], state.leader_epoch + 1, isr, controller_epoch, state.zk_version)
        else:
            raise TopicError("invalid_request", f"unknown election type {election_type}")
        if store.write_state(topic, p, new, fence=fence) is not None:
            log.info("%s-%d: leader %d epoch %d isr %s (%s election asked by a client)", topic, p, new.leader,
                     new.leader_epoch, list(new.isr), "preferred" if election_type == PREFERRED else "unclean")
            return
    raise TopicError("request_timed_out", f"the state of {topic}-{p} kept changing; retry")
