"""The Fetch response (v4-18) in wire form, written directly for the common answer.

kio's generic writer (build, then the entity walk) was ~11% of the broker's busy time with 50
producers and 50 consumers sending one record a request (issue 20): each record is its own
Fetch answer. This writer takes the handler's plain values and leaves to kio what it does not
cover (file slices, KIP-951 leader hints, diverging epochs), returning None for those.

Field order (FetchResponse.json): throttle_time_ms, error_code and session_id (v7+), then per
topic its name (topic_id from v13) and per partition: index, error code, high watermark, last
stable offset, log start offset (v5+), aborted transactions (nullable), preferred read replica
(v11+), records (nullable bytes); flexible versions (v12+) end each struct with tagged fields.
"""

from __future__ import annotations

import struct
from typing import Any

from odradek.protocol.bounds import uvarint_bytes as _uvarint
from odradek.protocol.build import ZERO_UUID
from odradek.protocol.framing import EncodedBody

MIN_VERSION = 4
MAX_VERSION = 18
_FLEXIBLE = 12
_TOPIC_IDS = 13
_PREFERRED_REPLICA = 11
_HEAD_V7 = struct.Struct(">ihi")  # throttle_time_ms, error_code, session_id
_PARTITION_V4 = struct.Struct(">ihqq")  # index, error code, high watermark, last stable offset
_PARTITION_V5 = struct.Struct(">ihqqq")  # ... log start offset
_ABORTED = struct.Struct(">qq")  # producer id, first offset
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_NULL_ARRAY = _INT32.pack(-1)
# What a partition entry may hold for this writer (anything else is left to kio)
_KNOWN = frozenset({"partition_index", "error_code", "high_watermark", "last_stable_offset", "log_start_offset",
                    "preferred_read_replica", "records", "aborted_transactions"})


def encode_body(version: int, error_code: int, session_id: int,
                responses: list[dict[str, Any]]) -> EncodedBody | None:
    """The response body, or None when an entry needs what kio writes (its records not bytes,
    a field this writer does not know, a version outside 4-18). No node endpoints (v16's
    tagged field): the caller passes none."""
    if not MIN_VERSION <= version <= MAX_VERSION:
        return None
    flexible = version >= _FLEXIBLE
    by_id = version >= _TOPIC_IDS
    v5 = version >= 5
    preferred = version >= _PREFERRED_REPLICA
    out: list[bytes] = []
    append = out.append
    if version >= 7:
        append(_HEAD_V7.pack(0, error_code, session_id))
    else:
        append(_INT32.pack(0))
    append(_uvarint(len(responses) + 1) if flexible else _INT32.pack(len(responses)))
    for topic in responses:
        if by_id:
            topic_id = topic["topic_id"]
            append((topic_id or ZERO_UUID).bytes)
        else:
            raw = topic["topic"].encode()
            append((_uvarint(len(raw) + 1) if flexible else _INT16.pack(len(raw))) + raw)
        partitions = topic["partitions"]
        append(_uvarint(len(partitions) + 1) if flexible else _INT32.pack(len(partitions)))
        for p in partitions:
            records = p["records"]
            if type(records) is not bytes or not _KNOWN.issuperset(p):
                return None
            if v5:
                append(_PARTITION_V5.pack(p["partition_index"], p["error_code"], p["high_watermark"],
                                          p["last_stable_offset"], p["log_start_offset"]))
            else:
                append(_PARTITION_V4.pack(p["partition_index"], p["error_code"], p["high_watermark"],
                                          p["last_stable_offset"]))
            aborted = p.get("aborted_transactions", ())  # absent: empty, as build() fills it
            if aborted is None:
                append(b"\0" if flexible else _NULL_ARRAY)
            else:
                append(_uvarint(len(aborted) + 1) if flexible else _INT32.pack(len(aborted)))
                for a in aborted:
                    append(_ABORTED.pack(a["producer_id"], a["first_offset"]))
                    if flexible:
                        append(b"\0")
            if preferred:
                append(_INT32.pack(p["preferred_read_replica"]))
            append(_uvarint(len(records) + 1) if flexible else _INT32.pack(len(records)))
            append(records)
            if flexible:
                append(b"\0")  # no diverging epoch, current leader or snapshot id
        if flexible:
            append(b"\0")
    if flexible:
        append(b"\0")  # no node endpoints
    return EncodedBody(b"".join(out), flexible)
