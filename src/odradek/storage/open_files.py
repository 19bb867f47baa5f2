"""Segment files' descriptors: the process-wide LRU that bounds how many are open
(segment.py opens a `.log` lazily and joins it here), and the slice of one that a fetch
response holds until it is sent.
"""

from __future__ import annotations

import os
import resource
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from odradek.storage.segment import LogSegment

DEFAULT_OPEN_SEGMENTS = 1024


class OpenSegments:
    """The LRU of open segment files: at most `capacity` `.log` descriptors at once.

    Only the event loop's thread opens and closes segments (the cleaner's workers open
    their own descriptors by path), and a fetch's FileSlice holds a duplicate, so closing
    a segment here never pulls a descriptor from under a reader.
    """

    def __init__(self, capacity: int = DEFAULT_OPEN_SEGMENTS) -> None:
        self.capacity = max(capacity, 1)
        self._lru: OrderedDict[LogSegment, None] = OrderedDict()
        self.opened = 0  # counters for the bench and the metrics: opens and evictions so far
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._lru)

    def touch(self, seg: LogSegment) -> None:
        self._lru.move_to_end(seg)

    def add(self, seg: LogSegment) -> None:
        self._lru[seg] = None
        self.opened += 1
        while len(self._lru) > self.capacity:
            oldest, _ = self._lru.popitem(last=False)
            self.evicted += 1
            oldest.close_file()

    def discard(self, seg: LogSegment) -> None:
        self._lru.pop(seg, None)

    def resize(self, capacity: int) -> None:
        self.capacity = max(capacity, 1)
        while len(self._lru) > self.capacity:
            oldest, _ = self._lru.popitem(last=False)
            self.evicted += 1
            oldest.close_file()


OPEN_SEGMENTS = OpenSegments()


def open_segment_capacity() -> int:
    """A quarter of the soft open-file limit (the rest for sockets and everything else),
    between 64 and 10,000."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 10_000
    return min(max(soft // 4, 64), 10_000)


class FileSlice:
    """`size` bytes of whole batches at `position` of a segment file, for sendfile.

    A fetch response can wait in a connection's queue after the fetch was read, and
    meanwhile retention, compaction or truncation may close the segment (its
    descriptor number could then be reused by another file). The slice therefore
    holds its own duplicate of the descriptor, closed when sent or dropped.
    """

    __slots__ = ("fd", "position", "size")

    def __init__(self, fd: int, position: int, size: int) -> None:
        self.fd = os.dup(fd)
        self.position = position
        self.size = size

    def __len__(self) -> int:
        return self.size

    def read(self) -> bytes:
        """The bytes themselves, for paths that cannot use sendfile."""
        return os.pread(self.fd, self.size, self.position)

    def close(self) -> None:
        fd = getattr(self, "fd", -1)  # unset when os.dup failed in __init__ (no descriptors left)
        if fd >= 0:
            os.close(fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()
