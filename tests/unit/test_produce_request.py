"""The short path of Produce decoding (protocol/produce_request.py) gives what the generic decode
gives, and leaves to the generic path every frame it refuses or would rewrite."""

from __future__ import annotations

import datetime
import random
import uuid
from typing import Any

import pytest

from odradek.protocol import produce_request
from odradek.protocol.build import build
from odradek.protocol.framing import (
    FrameError,
    decode_request,
    encode_request,
    peek_header,
    request_type,
)
from odradek.protocol.records import encode_batch

VERSIONS = range(produce_request.MIN_VERSION, produce_request.MAX_VERSION + 1)
BATCH = encode_batch([(b"k", b"v" * 50, ()), (None, b"w", (("h", b"x"),))], timestamp_ms=1_700_000_000_000)


def frame(version: int, topics: list[tuple[str, list[tuple[int, bytes | None]]]], *,
          transactional_id: str | None = None, client_id: str | None = "rdkafka") -> bytes:
    key = "topic_id" if version >= produce_request.TOPIC_IDS_VERSION else "name"
    body = build(request_type(0, version), transactional_id=transactional_id, acks=-1,
                 timeout=datetime.timedelta(milliseconds=1500), topic_data=[
                     {key: uuid.uuid5(uuid.NAMESPACE_DNS, name) if key == "topic_id" else name,
                      "partition_data": [{"index": i, "records": r} for i, r in parts]}
                     for name, parts in topics])
    return encode_request(0, version, 42, body, client_id=client_id)[4:]


def short(data: bytes, version: int) -> Any:
    """What the dispatcher decodes on the short path (None: it takes the generic one)."""
    api_key, api_version, correlation_id = peek_header(data)
    if (api_key, api_version) != (0, version):
        return None
    body = produce_request.check(data, version)
    return None if body is None else produce_request.decode(data, version, correlation_id, body)


SHAPES: list[dict[str, Any]] = [
    {"topics": [("t", [(0, BATCH)])]},
    {"topics": [("t", [(0, BATCH), (7, None), (3, BATCH + BATCH)]), ("ünïcode-topic", [(1, BATCH)])],
     "transactional_id": "txn-1"},
    {"topics": [], "client_id": None},
    {"topics": [("t", [])], "transactional_id": ""},
    {"topics": [(f"t{i}", [(p, BATCH) for p in range(20)]) for i in range(10)], "client_id": ""},
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("shape", range(len(SHAPES)))
def test_the_short_path_decodes_what_the_generic_decode_does(version: int, shape: int) -> None:
    data = frame(version, **SHAPES[shape])
    assert produce_request.check(data, version) is not None
    assert short(data, version) == decode_request(data)


@pytest.mark.parametrize("version", VERSIONS)
def test_mangled_frames_it_takes_decode_as_on_the_generic_path(version: int) -> None:
    """Truncations, flipped bytes and random lengths: whatever the short path accepts, the
    generic decode accepts too, with the same request (it refuses the rest itself)."""
    rng = random.Random(version)
    good = frame(version, **SHAPES[1])
    taken = 0
    for i in range(3000):
        data = bytearray(good)
        if i % 3 == 0:
            data = data[:rng.randrange(len(data))]
        else:
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        raw = bytes(data)
        try:
            fast = short(raw, version)
        except Exception:  # noqa: BLE001, S112 - kio's reader refused it: the dispatcher decodes it generically
            continue
        if fast is None:
            continue
        taken += 1
        try:
            slow = decode_request(raw)
        except FrameError as exc:
            raise AssertionError(f"the short path took a frame the generic one refuses: {exc}") from exc
        assert fast == slow
    assert taken > 100  # flips inside record bytes and names keep the frame valid


@pytest.mark.parametrize("version", [v for v in VERSIONS if v >= produce_request.FLEXIBLE_VERSION])
def test_tagged_fields_go_the_generic_way(version: int) -> None:
    data = frame(version, **SHAPES[0])
    # the request's own (last) tagged-field count: one unknown tag of one byte
    tagged = data[:-1] + bytes([1, 9, 1, 0])
    assert produce_request.check(tagged, version) is None
    header, request = decode_request(tagged)  # the generic path drops the unknown tag
    assert request == decode_request(data)[1] and header.correlation_id == 42


def test_other_versions_and_element_bounds_go_the_generic_way() -> None:
    data = frame(9, **SHAPES[0])
    assert produce_request.check(data, 2) is None
    assert produce_request.check(data[:20], 9) is None
    many = frame(9, [("t", [(p, None) for p in range(1000)])])
    bound = produce_request.MAX_REQUEST_ELEMENTS
    try:
        produce_request.MAX_REQUEST_ELEMENTS = 500  # type: ignore[misc]
        assert produce_request.check(many, 9) is None
    finally:
        produce_request.MAX_REQUEST_ELEMENTS = bound  # type: ignore[misc]
    assert produce_request.check(many, 9) is not None
