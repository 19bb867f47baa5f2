"""Pure helpers of the message browser and the overview: where a page starts, how a
record's bytes are shown, which records a filter keeps, and rates from offsets over time.

No I/O here, so the rules are tested with plain values (tests/unit/test_console_browse.py).
A page is always bounded: by a number of records shown, by a number of records scanned
(a filter may match nothing in a large partition) and by the partition's end offset as it
was when the page began, so a browser never loads a whole partition.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from typing import Any

MAX_LIMIT = 500  # records on one page
MAX_SCAN = 20_000  # records read for one page when a filter skips most of them
MAX_SHOWN_BYTES = 64 * 1024  # of one key or value; the rest is cut and said so
FORMATS = ("auto", "text", "json", "hex")
START_MODES = ("oldest", "newest", "offset", "timestamp")


class BrowseError(ValueError):
    """A request the browser cannot serve, as one sentence."""


@dataclass(frozen=True, slots=True)
class Watermarks:
    """A partition's log start offset and log end offset (high watermark) when the page began."""

    low: int
    high: int


def clamp(offset: int, marks: Watermarks) -> int:
    return min(max(offset, marks.low), marks.high)


def plan_starts(mode: str, marks: dict[int, Watermarks], limit: int, value: int | None = None,
                by_time: dict[int, int] | None = None) -> dict[int, int]:
    """The first offset to read of each partition. `newest` shares the page among the
    partitions (each gets its last ceil(limit / n) records); `timestamp` takes the
    offsets ListOffsets found for it (`by_time`, -1 where no record is that recent)."""
    if mode not in START_MODES:
        raise BrowseError(f"start must be one of {', '.join(START_MODES)}, not {mode!r}")
    if not marks:
        return {}
    if mode == "oldest":
        return {p: m.low for p, m in marks.items()}
    if mode == "newest":
        share = max(1, math.ceil(limit / len(marks)))
        return {p: max(m.low, m.high - share) for p, m in marks.items()}
    if mode == "offset":
        if value is None or value < 0:
            raise BrowseError("an offset to start at must be a whole number of 0 or more")
        return {p: clamp(value, m) for p, m in marks.items()}
    if by_time is None:
        raise BrowseError("a timestamp to start at is needed (milliseconds or an ISO date-time)")
    return {p: m.high if by_time.get(p, -1) < 0 else clamp(by_time[p], m) for p, m in marks.items()}


def older_starts(starts: dict[int, int], marks: dict[int, Watermarks], limit: int) -> dict[int, int]:
    """The cursor of the page before one that started at `starts`."""
    share = max(1, math.ceil(limit / max(1, len(starts))))
    return {p: max(marks[p].low, s - share) if p in marks else s for p, s in starts.items()}


def parse_cursor(text: str) -> dict[int, int]:
    """A page cursor as the browser sends it back: "0:120,1:98" (partition:offset)."""
    out: dict[int, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        partition, sep, offset = item.partition(":")
        if not sep or not partition.isdigit() or not offset.lstrip("-").isdigit():
            raise BrowseError(f"the page cursor {text!r} is not partition:offset,...")
        out[int(partition)] = int(offset)
    return out


def format_cursor(cursor: dict[int, int]) -> str:
    return ",".join(f"{p}:{o}" for p, o in sorted(cursor.items()))


def parse_timestamp(text: str) -> int:
    """Milliseconds since the epoch, from a number of them or an ISO date-time (UTC when it
    names no zone, as the browser sends the value of its datetime input)."""
    import datetime

    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise BrowseError(f"{text!r} is neither milliseconds nor an ISO date-time such as 2024-05-01T12:00:00") \
            from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp() * 1000)


def render(data: bytes | None, fmt: str) -> dict[str, Any] | None:
    """A key or value as the page shows it: `text` (UTF-8, undecodable bytes replaced),
    `json` (indented; text when it does not parse), `hex`, or `auto` (JSON if it parses,
    text if it is printable UTF-8, else hex). Only the first MAX_SHOWN_BYTES are shown."""
    if fmt not in FORMATS:
        raise BrowseError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if data is None:
        return None
    shown = data[:MAX_SHOWN_BYTES]
    out: dict[str, Any] = {"size": len(data), "truncated": len(data) > len(shown)}
    if fmt == "hex":
        return {**out, "format": "hex", "text": shown.hex(" ")}
    try:
        text = shown.decode("utf-8")
    except UnicodeDecodeError:
        if fmt == "auto" and not out["truncated"]:
            return {**out, "format": "hex", "text": shown.hex(" ")}
        text = shown.decode("utf-8", errors="replace")
    if fmt in ("json", "auto") and not out["truncated"]:
        try:
            parsed = json.loads(text)
        except ValueError:
            if fmt == "json":
                return {**out, "format": "text", "text": text, "note": "not JSON: shown as text"}
        else:
            if fmt == "json" or isinstance(parsed, dict | list):
                return {**out, "format": "json", "text": json.dumps(parsed, indent=2, ensure_ascii=False)}
    if fmt == "auto" and not _printable(text):
        return {**out, "format": "hex", "text": shown.hex(" ")}
    return {**out, "format": "text", "text": text}


def _printable(text: str) -> bool:
    return all(c.isprintable() or c in "\t\r\n" for c in text)


def matches(key: bytes | None, value: bytes | None, needle: str, where: str = "any") -> bool:
    """Whether a record's key or value (or either: `any`) holds `needle`, as bytes of its UTF-8."""
    if not needle:
        return True
    wanted = needle.encode()
    in_key = key is not None and wanted in key
    in_value = value is not None and wanted in value
    if where == "key":
        return in_key
    if where == "value":
        return in_value
    return in_key or in_value


def encode_bytes(data: bytes | None) -> str | None:
    """Raw bytes for the page's copy button."""
    return None if data is None else base64.b64encode(data[:MAX_SHOWN_BYTES]).decode()


@dataclass(slots=True)
class RateMeter:
    """A rate per second from a growing total sampled now and then (log end offsets summed:
    records produced; committed offsets summed: records consumed). A total that goes down
    (a topic deleted, offsets reset) restarts the meter instead of showing a negative rate."""

    window_s: float = 30.0
    samples: list[tuple[float, int]] = field(default_factory=list)

    def add(self, now: float, total: int) -> float | None:
        if self.samples and total < self.samples[-1][1]:
            self.samples.clear()
        self.samples.append((now, total))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window_s:
            self.samples.pop(0)
        return self.rate()

    def rate(self) -> float | None:
        """Records per second between the oldest sample in the window and the newest."""
        if len(self.samples) < 2:
            return None
        (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else None


def lag(committed: int | None, end: int) -> int | None:
    """A group's lag on one partition: log end offset minus committed offset (none when it
    committed nothing there)."""
    if committed is None or committed < 0 or end < 0:
        return None
    return max(0, end - committed)


def reset_target(mode: str, marks: Watermarks, value: int | None = None, by_time: int | None = None) -> int:
    """The new committed offset of a reset, as kafka-consumer-groups.sh computes it: an
    offset is clamped into the log, a time past the last record means the log end."""
    if mode == "earliest":
        return marks.low
    if mode == "latest":
        return marks.high
    if mode == "offset":
        if value is None:
            raise BrowseError("an offset to reset to is needed")
        return clamp(value, marks)
    if mode == "timestamp":
        return marks.high if by_time is None or by_time < 0 else clamp(by_time, marks)
    raise BrowseError(f"reset to must be earliest, latest, offset or timestamp, not {mode!r}")
