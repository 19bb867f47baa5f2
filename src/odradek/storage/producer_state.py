"""ProducerStateManager: idempotent producer sequence tracking per partition.

For each producer id the log remembers its epoch and the sequence ranges and
offsets of its last 5 batches (Kafka's ProducerStateEntry, max.in.flight <= 5),
so a retried batch is answered with its original offsets instead of being
written twice (DUPLICATE_SEQUENCE_NUMBER handled as success), a gap is
OUT_OF_ORDER_SEQUENCE_NUMBER and an old epoch INVALID_PRODUCER_EPOCH.
Snapshots (`NNNNNNNNNNNNNNNNNNNN.snapshot`, named by the log end offset they
cover) let a restart rebuild the state by scanning only the batches after them.

Transactions (KIP-98) live here too, as in Kafka: the first offset of each
producer's open transaction (the last stable offset is the smallest of them, capped
by the high watermark), and the aborted transactions that read_committed fetches
return so clients drop those records. A control batch (end-transaction marker)
closes a producer's open transaction.
"""

from __future__ import annotations

import bisect
import json
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from kio.schema.errors import ErrorCode

from odradek.protocol.record_errors import InvalidRecordError
from odradek.protocol.records import CONTROL_ABORT, BatchHeader

MAX_BATCHES = 5
MAX_EPOCH = 32767
SEQ_MOD = 2**31


@dataclass
class ProducerEntry:
    epoch: int
    # (first_seq, last_seq, first_offset, last_offset), oldest first
    batches: deque[tuple[int, int, int, int]] = field(default_factory=lambda: deque(maxlen=MAX_BATCHES))
    last_timestamp: int = -1  # the max timestamp of its last batch (DescribeProducers)
    coordinator_epoch: int = -1  # of its last end-transaction marker (Kafka's ProducerStateEntry)

    @property
    def last_seq(self) -> int:
        return self.batches[-1][1] if self.batches else -1


@dataclass(frozen=True, slots=True)
class AbortedTxn:
    """One entry of the aborted-transaction index (Kafka's AbortedTxn, `.txnindex`)."""

    producer_id: int
    first_offset: int
    last_offset: int  # the offset of the ABORT marker
    last_stable_offset: int


class ProducerStateManager:
    def __init__(self, directory: Path | None) -> None:
        self.dir = directory
        self.producers: dict[int, ProducerEntry] = {}
        self.ongoing: dict[int, int] = {}  # producer id -> first offset of its open transaction
        self.aborted: list[AbortedTxn] = []  # ordered by last_offset
        # KIP-890: producer id -> (guard, epoch, transactions version 2) of a transactional write being
        # checked with its coordinator; a marker appended meanwhile ends it (Kafka's VerificationStateEntry)
        self.verifications: dict[int, tuple[object, int, bool]] = {}

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

    def update(self, b: BatchHeader, first_offset: int, control: int = -1,
               coordinator_epoch: int = -1) -> AbortedTxn | None:
        """After an append of `b` at `first_offset`; `control` is the marker type of a control
        batch, `coordinator_epoch` the one it carries. Returns the aborted-transaction entry an
        ABORT marker creates."""
        if b.producer_id < 0:
            return None
        entry = self.producers.get(b.producer_id)
        if entry is None or b.producer_epoch > entry.epoch:
            last = entry.coordinator_epoch if entry is not None else -1
            entry = self.producers[b.producer_id] = ProducerEntry(b.producer_epoch, coordinator_epoch=last)
        if b.base_sequence >= 0:
            entry.batches.append((b.base_sequence, b.last_sequence, first_offset,
                                  first_offset + b.last_offset_delta))
        entry.last_timestamp = b.max_timestamp
        if not b.is_transactional:
            return None
        verifying = self.verifications.get(b.producer_id)
        # the data batch opened the transaction here, or a marker ended one; a version 2 producer's
        # check for its next transaction survives the previous one's marker (same, bumped, epoch)
        if verifying is not None and not (verifying[2] and b.is_control and b.producer_epoch == verifying[1]):
            del self.verifications[b.producer_id]
        if not b.is_control:
            self.ongoing.setdefault(b.producer_id, first_offset)
            return None
        entry.coordinator_epoch = coordinator_epoch
        began = self.ongoing.pop(b.producer_id, None)
        if control != CONTROL_ABORT or began is None:
            return None
        aborted = AbortedTxn(b.producer_id, began, first_offset, min(self.ongoing.values(), default=first_offset + 1))
        return aborted if self.add_aborted(aborted) else None

    def truncate(self) -> None:
        """After a log truncation the state is rebuilt from the remaining batches."""
        self.producers.clear()
        self.ongoing.clear()

    # -- transactions ------------------------------------------------------------

    def has_ongoing_txn(self, producer_id: int, epoch: int) -> bool:
        """Kafka's UnifiedLog.hasOngoingTransaction: no need to ask the coordinator again."""
        entry = self.producers.get(producer_id)
        return producer_id in self.ongoing and entry is not None and entry.epoch == epoch

    def marker_error(self, producer_id: int, epoch: int, transaction_version: int,
                     coordinator_epoch: int) -> ErrorCode | None:
        """Kafka's ProducerAppendInfo.checkProducerEpoch for a marker from a coordinator: an epoch
        older than the producer's is refused; from transactions version 2 on, the marker must bump
        it (the same epoch again only as the retry of a marker that already ended the transaction).
        Then checkCoordinatorEpoch: a coordinator epoch older than that of the producer's last marker
        comes from a deposed coordinator (TRANSACTION_COORDINATOR_FENCED)."""
        entry = self.producers.get(producer_id)
        if entry is None:
            return None
        fenced = ErrorCode.transaction_coordinator_fenced if coordinator_epoch < entry.coordinator_epoch else None
        if epoch > entry.epoch:
            return fenced
        if transaction_version < 2:
            return ErrorCode.invalid_producer_epoch if epoch < entry.epoch else fenced
        if epoch == entry.epoch and (producer_id not in self.ongoing or epoch == MAX_EPOCH):
            return fenced
        return ErrorCode.invalid_producer_epoch

    def start_verification(self, producer_id: int, epoch: int, supports_epoch_bump: bool) -> object:
        """The guard a transactional write checked with its coordinator must still hold when appended."""
        current = self.verifications.get(producer_id)
        guard = current[0] if current is not None else object()
        self.verifications[producer_id] = (guard, epoch, supports_epoch_bump)
        return guard

    def verified(self, producer_id: int, epoch: int, guard: object) -> bool:
        current = self.verifications.get(producer_id)
        return self.has_ongoing_txn(producer_id, epoch) or (current is not None and current[0] is guard)

    def last_stable_offset(self, high_watermark: int) -> int:
        """Kafka's LSO: below the first offset of any open transaction, and never past the HW."""
        if not self.ongoing:
            return high_watermark
        return min(high_watermark, min(self.ongoing.values()))

    def add_aborted(self, entry: AbortedTxn) -> bool:
        if self.aborted and self.aborted[-1].last_offset >= entry.last_offset:
            return False  # replayed after loading the index: already known
        self.aborted.append(entry)
        return True

    def collect_aborted(self, fetch_offset: int, upper: int) -> list[AbortedTxn]:
        """Aborted transactions overlapping [fetch_offset, upper): what a read_committed fetch returns."""
        i = bisect.bisect_left(self.aborted, fetch_offset, key=lambda a: a.last_offset)
        return [a for a in self.aborted[i:] if a.first_offset < upper]

    def drop_aborted(self, *, before: int | None = None, from_offset: int | None = None) -> None:
        """Forget index entries whose marker is below `before` (deleted segments) or at or
        after `from_offset` (truncation)."""
        if before is not None:
            self.aborted = [a for a in self.aborted if a.last_offset >= before]
        if from_offset is not None:
            self.aborted = [a for a in self.aborted if a.last_offset < from_offset]

    # -- snapshots ---------------------------------------------------------------

    def snapshot(self, offset: int) -> None:
        if self.dir is None:
            return
        path = self.dir / f"{offset:020d}.snapshot"
        payload = {str(pid): {"epoch": e.epoch, "batches": list(e.batches), "txn_first": self.ongoing.get(pid),
                              "ts": e.last_timestamp, "ce": e.coordinator_epoch}
                   for pid, e in self.producers.items()}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, path)
        for old in sorted(self.dir.glob("*.snapshot"))[:-2]:
            old.unlink(missing_ok=True)

    def load_latest(self, max_offset: int, names: set[str] | None = None) -> int:
        """Load the newest snapshot at or below max_offset; returns the offset it covers (0 if none).
        `names`: the directory's files, when the caller has listed them already."""
        if self.dir is None:
            return 0
        if names is None:
            names = set(os.listdir(self.dir))
        snaps = sorted((int(n[:-9]), self.dir / n) for n in names if n.endswith(".snapshot") and n[:-9].isdigit())
        for offset, path in reversed(snaps):
            if offset > max_offset:
                path.unlink(missing_ok=True)
                continue
            try:
                raw = json.loads(path.read_text())
            except (ValueError, OSError):
                continue
            self.producers = {
                int(pid): ProducerEntry(v["epoch"], deque((tuple(x) for x in v["batches"]), maxlen=MAX_BATCHES),
                                        v.get("ts", -1), v.get("ce", -1))
                for pid, v in raw.items()
            }
            self.ongoing = {int(pid): v["txn_first"] for pid, v in raw.items() if v.get("txn_first") is not None}
            return offset
        return 0
