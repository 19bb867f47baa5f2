"""ProducerStateManager: idempotent producer sequence tracking per partition.

For each producer id the log remembers its epoch and the sequence ranges and
offsets of its last 5 batches (Kafka's ProducerStateEntry, max.in.flight <= 5),
so a retried batch is answered with its original offsets instead of being
written twice (DUPLICATE_SEQUENCE_NUMBER handled as success), a gap is
OUT_OF_ORDER_SEQUENCE_NUMBER and an old epoch INVALID_PRODUCER_EPOCH.
Snapshots (`NNNNNNNNNNNNNNNNNNNN.snapshot`, named by the log end offset they
cover) let a restart rebuild the state by scanning only the batches after them.
"""

from __future__ import annotations

import json
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from kio.schema.errors import ErrorCode

from odradek.protocol.records import BatchHeader, InvalidRecordError

MAX_BATCHES = 5
SEQ_MOD = 2**31


@dataclass
class ProducerEntry:
    epoch: int
    # (first_seq, last_seq, first_offset, last_offset), oldest first
    batches: deque[tuple[int, int, int, int]] = field(default_factory=lambda: deque(maxlen=MAX_BATCHES))

    @property
    def last_seq(self) -> int:
        return self.batches[-1][1] if self.batches else -1


class ProducerStateManager:
    def __init__(self, directory: Path | None) -> None:
        self.dir = directory
        self.producers: dict[int, ProducerEntry] = {}

    def check(self, b: BatchHeader) -> tuple[int, int] | None:
        """Before an append: the (first, last) offsets of a duplicate, None for a new batch.

        Raises InvalidRecordError for a fenced epoch or a sequence gap.
        """
        if b.producer_id < 0 or b.base_sequence < 0:
            return None
        entry = self.producers.get(b.producer_id)
        if entry is None:
            return None
        if b.producer_epoch < entry.epoch:
            raise InvalidRecordError(
                ErrorCode.invalid_producer_epoch,
                f"producer {b.producer_id} epoch {b.producer_epoch} is older than {entry.epoch}",
            )
        if b.producer_epoch > entry.epoch:
            if b.base_sequence != 0:
                raise InvalidRecordError(
                    ErrorCode.out_of_order_sequence_number,
                    f"producer {b.producer_id} starts epoch {b.producer_epoch} at sequence {b.base_sequence}, not 0",
                )
            return None
        for first_seq, last_seq, first_off, last_off in entry.batches:
            if first_seq == b.base_sequence and last_seq == b.last_sequence:
                return first_off, last_off
        expected = (entry.last_seq + 1) % SEQ_MOD
        if entry.batches and b.base_sequence != expected:
            raise InvalidRecordError(
                ErrorCode.out_of_order_sequence_number,
                f"producer {b.producer_id} sent sequence {b.base_sequence}, expected {expected}",
            )
        return None

    def update(self, b: BatchHeader, first_offset: int) -> None:
        if b.producer_id < 0:
            return
        entry = self.producers.get(b.producer_id)
        if entry is None or b.producer_epoch > entry.epoch:
            entry = self.producers[b.producer_id] = ProducerEntry(b.producer_epoch)
        if b.base_sequence >= 0:
            entry.batches.append((b.base_sequence, b.last_sequence, first_offset,
                                  first_offset + b.last_offset_delta))

    def truncate(self) -> None:
        """After a log truncation the state is rebuilt from the remaining batches."""
        self.producers.clear()

    # -- snapshots ---------------------------------------------------------------

    def snapshot(self, offset: int) -> None:
        if self.dir is None:
            return
        path = self.dir / f"{offset:020d}.snapshot"
        payload = {str(pid): {"epoch": e.epoch, "batches": list(e.batches)} for pid, e in self.producers.items()}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, path)
        for old in sorted(self.dir.glob("*.snapshot"))[:-2]:
            old.unlink(missing_ok=True)

    def load_latest(self, max_offset: int) -> int:
        """Load the newest snapshot at or below max_offset; returns the offset it covers (0 if none)."""
        if self.dir is None:
            return 0
        snaps = sorted((int(p.stem), p) for p in self.dir.glob("*.snapshot") if p.stem.isdigit())
        for offset, path in reversed(snaps):
            if offset > max_offset:
                path.unlink(missing_ok=True)
                continue
            try:
                raw = json.loads(path.read_text())
            except (ValueError, OSError):
                continue
            self.producers = {
                int(pid): ProducerEntry(v["epoch"], deque((tuple(x) for x in v["batches"]), maxlen=MAX_BATCHES))
                for pid, v in raw.items()
            }
            return offset
        return 0
