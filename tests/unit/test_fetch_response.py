"""protocol/fetch_response.py writes the bytes kio writes for the same Fetch answer.

Every version the broker serves (4-18; 19 is left to kio), topics by name and by id, partitions with and without
records, errors, read_committed's aborted transactions (none, empty, several) and a preferred
read replica; what the writer does not cover is left to kio (None).
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest
from kio.schema.errors import ErrorCode

from odradek.protocol import fetch_response
from odradek.protocol.build import build
from odradek.protocol.framing import encode_response, response_type

FETCH_KEY = 1


def _kio_frame(version: int, session_id: int, responses: list[dict[str, Any]]) -> bytes:
    response = build(response_type(FETCH_KEY, version), error_code=ErrorCode.none, session_id=session_id,
                     responses=responses, node_endpoints=[])
    return encode_response(7, response)


def _responses(rng: random.Random) -> list[dict[str, Any]]:
    topics = []
    for t in range(rng.randint(0, 3)):
        partitions = []
        for i in range(rng.randint(0, 4)):
            entry: dict[str, Any] = {
                "partition_index": i,
                "error_code": rng.choice([ErrorCode.none, ErrorCode.offset_out_of_range,
                                          ErrorCode.unknown_topic_or_partition]),
                "high_watermark": rng.choice([-1, 0, 5, 2**40]),
                "last_stable_offset": rng.choice([-1, 3]),
                "log_start_offset": rng.choice([-1, 0, 17]),
                "preferred_read_replica": rng.choice([-1, 2]),
                "records": rng.choice([b"", bytes(rng.randrange(256) for _ in range(rng.choice([1, 70, 300])))]),
            }
            aborted = rng.choice([None, [], [{"producer_id": 9, "first_offset": 4},
                                             {"producer_id": 2**40, "first_offset": 0}]])
            if aborted is not None:
                entry["aborted_transactions"] = aborted
            partitions.append(entry)
        topics.append({"topic": f"topic-{t}" * rng.choice([1, 20]), "topic_id": uuid.UUID(int=rng.getrandbits(128)),
                       "partitions": partitions})
    return topics


@pytest.mark.parametrize("version", range(4, 20))
def test_fetch_response_bytes_match_kio(version: int) -> None:
    rng = random.Random(version)
    for _ in range(60):
        responses = _responses(rng)
        session_id = rng.choice([0, 12345])
        body = fetch_response.encode_body(version, ErrorCode.none, session_id, responses)
        if version > fetch_response.MAX_VERSION:
            assert body is None
            continue
        assert body is not None
        assert encode_response(7, body) == _kio_frame(version, session_id, responses)


def test_fetch_response_leaves_leader_hints_and_file_slices_to_kio() -> None:
    entry = {"partition_index": 0, "error_code": ErrorCode.not_leader_or_follower, "high_watermark": -1,
             "last_stable_offset": -1, "log_start_offset": -1, "preferred_read_replica": -1, "records": b""}
    hinted = {**entry, "current_leader": {"leader_id": 1, "leader_epoch": 3}}
    sliced = {**entry, "records": memoryview(b"abc")}
    for partition in (hinted, sliced):
        responses = [{"topic": "t", "topic_id": uuid.uuid4(), "partitions": [partition]}]
        assert fetch_response.encode_body(16, ErrorCode.none, 0, responses) is None
    assert fetch_response.encode_body(16, ErrorCode.none, 0,
                                      [{"topic": "t", "topic_id": uuid.uuid4(), "partitions": [entry]}]) is not None
