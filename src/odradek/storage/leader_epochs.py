"""The leader-epoch cache of a partition log (Kafka's LeaderEpochFileCache): which leader
epoch started at which offset, kept in `leader-epoch-checkpoint` ("0", a count, then
"epoch start-offset" lines), answering OffsetForLeaderEpoch. A part of PartitionLog
(storage/log.py), which it is mixed into.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

LEADER_EPOCH_FILE = "leader-epoch-checkpoint"


class LeaderEpochs:
    """PartitionLog's leader epochs: `epochs`, `leader_epoch` and the checkpoint file."""

    # PartitionLog's state this part uses (set in PartitionLog.__init__)
    _deleted: bool
    _epochs_dirty: bool
    _epochs_lock: threading.Lock
    _epochs_saved: int
    _epochs_taken: int
    dir: Path
    epochs: list[tuple[int, int]]
    leader_epoch: int
    log_end_offset: int

    if TYPE_CHECKING:  # PartitionLog's own, called from this part
        def _ensure_dir(self) -> None: ...

    def assign_leader_epoch(self, epoch: int, start_offset: int) -> None:
        """Record that `epoch` starts at `start_offset` (leader-epoch-checkpoint)."""
        self._ensure_dir()
        self.leader_epoch = max(self.leader_epoch, epoch)
        if self.epochs and self.epochs[-1][0] >= epoch:
            return
        self.epochs = [(e, s) for e, s in self.epochs if s < start_offset] + [(epoch, start_offset)]
        # written with the next flush, not on the event loop of the first append (1,000 partitions'
        # first produce wrote 1,000 files): a crash before it is recovered from the batches' epochs
        self._epochs_dirty = True

    def latest_leader_epoch(self) -> int:
        return self.epochs[-1][0] if self.epochs else -1

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """OffsetForLeaderEpoch: the largest epoch <= `epoch` and the offset where it ends. An
        epoch older than every one known ends where the first known one starts (Kafka's
        LeaderEpochFileCache.endOffsetFor): a replica back from an older epoch truncates there
        instead of keeping records the leader never had."""
        if not self.epochs:
            return -1, -1
        if epoch < self.epochs[0][0]:
            return epoch, self.epochs[0][1]
        for i, (e, _start) in enumerate(self.epochs):
            if e > epoch:
                prev = self.epochs[i - 1][0]
                return prev, self.epochs[i][1]
        return self.epochs[-1][0], self.log_end_offset

    def _save_epochs(self) -> None:
        self._epochs_dirty = True  # until written: a full disk's refusal leaves it to the next flush
        self._write_epochs(*self._take_epochs(), sync=False)
        self._epochs_dirty = False

    def _take_epochs(self) -> tuple[list[tuple[int, int]], int]:
        """On the event loop: a copy of the leader epochs to write, and its number."""
        self._epochs_taken += 1
        return list(self.epochs), self._epochs_taken

    def _write_epochs(self, epochs: list[tuple[int, int]], taken: int, *, sync: bool) -> None:
        """Write leader-epoch-checkpoint from any thread, unless a newer copy is there already
        (a flush thread's copy must not overwrite what a truncation wrote on the loop since)."""
        with self._epochs_lock:
            if taken <= self._epochs_saved or self._deleted:
                return
            path = self.dir / LEADER_EPOCH_FILE
            tmp = path.with_suffix(".tmp")
            entries = "".join(f"{e} {s}\n" for e, s in epochs)
            with open(tmp, "w") as f:
                f.write(f"0\n{len(epochs)}\n{entries}")
                if sync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
            self._epochs_saved = taken

    def _load_epochs(self) -> None:
        path = self.dir / LEADER_EPOCH_FILE
        try:
            lines = path.read_text().split("\n")
            self.epochs = [(int(a), int(b)) for a, b in (ln.split() for ln in lines[2:] if ln.strip())]
        except (FileNotFoundError, ValueError):
            self.epochs = []
        self.epochs = [(e, s) for e, s in self.epochs if s <= self.log_end_offset]
        if self.epochs:
            self.leader_epoch = self.epochs[-1][0]
