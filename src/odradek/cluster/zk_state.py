"""Partition state in ZooKeeper and the controller's fenced writes, for cluster/zk.py's store.

Every write of the controller is fenced: one transaction with a check of /controller_epoch's
zkVersion (`fenced_set`, `fenced_delete`, `write_state(fence=...)`), so a controller deposed
while it was paused writes nothing (ControllerMoved), as Kafka's ZooKeeper-mode controller's
multi-ops do.
"""

from __future__ import annotations

from typing import Any

from kazoo.exceptions import BadVersionError, NoNodeError  # type: ignore[import-untyped]

from odradek.cluster.zk_client import BoundedOps, is_rollback
from odradek.cluster.zk_znodes import (
    CONTROLLER_EPOCH_PATH,
    ControllerMoved,
    Fence,
    LeaderAndIsr,
    state_path,
    with_version,
)


class PartitionStates:
    """The state znodes' reads and compare-and-set writes; ZkMetadataStore is one (it gives
    `zk`, the kazoo client, and `ops`, its bounded calls)."""

    zk: Any
    ops: BoundedOps

    def controller_epoch(self) -> int:
        try:
            return int(self.ops.get(CONTROLLER_EPOCH_PATH)[0] or b"0")
        except NoNodeError:
            return 0

    def read_state(self, topic: str, partition: int) -> LeaderAndIsr | None:
        try:
            raw, stat = self.ops.get(state_path(topic, partition))
        except NoNodeError:
            return None
        return LeaderAndIsr.from_json(raw, stat.version)

    def write_state(self, topic: str, partition: int, state: LeaderAndIsr,
                    fence: Fence | None = None) -> LeaderAndIsr | None:
        """Compare-and-set on the state znode version; `fence` adds a check op (the
        controller's /controller_epoch version) so a stale controller cannot write.
        Returns the state as written, None when the CAS lost; ControllerMoved when fenced."""
        if fence is None:
            try:
                stat = self.ops.set(state_path(topic, partition), state.to_json(), version=state.zk_version)
            except (BadVersionError, NoNodeError):
                return None
            return with_version(state, stat.version)
        stat = self.fenced_set(state_path(topic, partition), state.to_json(), state.zk_version, fence)
        return None if stat is None else with_version(state, stat.version)

    def write_states(self, writes: list[tuple[str, int, LeaderAndIsr]], fence: Fence) -> list[LeaderAndIsr] | int:
        """Several partitions' states in one transaction, each a compare-and-set on its znode's
        version, fenced as write_state: the states as written, in order, or the index of a write
        whose partition changed meanwhile (then none is written); ControllerMoved when fenced."""
        tx = self.zk.transaction()
        tx.check(fence[0], fence[1])
        for topic, partition, state in writes:
            tx.set_data(state_path(topic, partition), state.to_json(), version=state.zk_version)
        results = self._fenced_commit(tx, fence)[1:]
        failed = [i for i, r in enumerate(results) if isinstance(r, Exception)]
        if failed:
            return next((i for i in failed if not is_rollback(results[i])), failed[0])
        return [with_version(state, stat.version) for (_t, _p, state), stat in zip(writes, results, strict=True)]

    def fenced_set(self, path: str, value: bytes, version: int, fence: Fence) -> Any:
        """Set `path` at `version` in one transaction with the check of `fence` (Kafka's
        ZooKeeper-mode controller: a multi-op with a check of /controller_epoch's zkVersion).
        The new stat, None when `path` changed meanwhile; ControllerMoved when fenced."""
        tx = self.zk.transaction()
        tx.check(fence[0], fence[1])
        tx.set_data(path, value, version=version)
        results = self._fenced_commit(tx, fence)
        return None if isinstance(results[1], Exception) else results[1]

    def fenced_delete(self, path: str, version: int, fence: Fence) -> bool:
        """Delete `path` at `version`, fenced as fenced_set; False when it changed or is gone."""
        tx = self.zk.transaction()
        tx.check(fence[0], fence[1])
        tx.delete(path, version=version)
        return not isinstance(self._fenced_commit(tx, fence)[1], Exception)

    def check_fence(self, fence: Fence) -> None:
        """ControllerMoved unless `fence` still holds: for a controller's answers that write nothing."""
        stat = self.ops.exists(fence[0])
        if stat is None or stat.version != fence[1]:
            raise ControllerMoved(f"{fence[0]} is no longer at version {fence[1]}: a newer controller was elected")

    def _fenced_commit(self, tx: Any, fence: Fence) -> list[Any]:
        results = self.ops.commit(tx)
        if isinstance(results[0], Exception) and not is_rollback(results[0]):
            raise ControllerMoved(f"{fence[0]} is no longer at version {fence[1]}: a newer controller "
                                  f"was elected ({type(results[0]).__name__})")
        return results
