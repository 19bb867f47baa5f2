"""The aborted-transaction index: `NNNNNNNNNNNNNNNNNNNN.txnindex` beside each segment.

Kafka's TransactionIndex format: 34-byte entries (version i16 = 0, producerId i64,
firstOffset i64, lastOffset i64, lastStableOffset i64), one per ABORT marker, in
the segment that holds the marker. A read_committed fetch returns the entries
that overlap what it reads, so the client drops the aborted records. Aborts are
rare, so each entry is fsynced as it is written: a recovered log never forgets
one (the producer-state snapshot may already cover the marker).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from odradek.storage.producer_state import AbortedTxn

_ENTRY = struct.Struct(">hqqqq")
SUFFIX = ".txnindex"


def index_path(log_path: Path) -> Path:
    return log_path.with_suffix(SUFFIX)


def append(path: Path, entry: AbortedTxn) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, _ENTRY.pack(0, entry.producer_id, entry.first_offset, entry.last_offset,
                                 entry.last_stable_offset))
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path: Path) -> list[AbortedTxn]:
    """The entries of one index; a torn last entry is ignored."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    usable = len(raw) - len(raw) % _ENTRY.size
    return [AbortedTxn(pid, first, last, lso) for _v, pid, first, last, lso in _ENTRY.iter_unpack(raw[:usable])]


def rewrite(path: Path, entries: list[AbortedTxn]) -> None:
    """After a truncation: keep only `entries` (atomically replaced)."""
    if not entries:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(SUFFIX + ".tmp")
    tmp.write_bytes(b"".join(_ENTRY.pack(0, e.producer_id, e.first_offset, e.last_offset, e.last_stable_offset)
                             for e in entries))
    os.replace(tmp, path)
