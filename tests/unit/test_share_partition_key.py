"""Kafka's SharePartitionKey (group:topicId:partition) as FindCoordinator v6's share key type and the
share coordinator's partitioning read it, and the ShareSnapshot record's leader epoch, without a broker."""

from __future__ import annotations

import base64
import uuid

import pytest

from odradek.coordinator.records import partition_for
from odradek.coordinator.share_partition import StateBatch
from odradek.coordinator.share_state import (
    ShareStateStore,
    kafka_uuid,
    parse_share_key,
    parse_snapshot,
    snapshot_leader_epoch,
    snapshot_value,
)

TOPIC_ID = uuid.UUID("2b9d46c2-e5c9-414e-a85d-bdaaca6c11f6")
B64 = base64.urlsafe_b64encode(TOPIC_ID.bytes).decode().rstrip("=")


def test_kafka_uuid_is_unpadded_url_safe_base64() -> None:
    assert kafka_uuid(TOPIC_ID) == B64
    assert len(B64) == 22


@pytest.mark.parametrize(("key", "parsed"), [
    (f"g:{B64}:0", ("g", TOPIC_ID, 0)),
    (f"g:{B64}==:7", ("g", TOPIC_ID, 7)),  # Java's URL decoder takes the padding too
    (f"a:b:c:{B64}:3", ("a:b:c", TOPIC_ID, 3)),  # the group is what precedes the last two colons
    (f"g:{B64}:+2", ("g", TOPIC_ID, 2)),  # Integer.parseInt takes a sign
    (f"g:{B64}:-1", ("g", TOPIC_ID, -1)),
    (f"g:{B64}:5:", ("g", TOPIC_ID, 5)),  # String.split drops trailing empty strings
])
def test_keys_kafka_takes(key: str, parsed: tuple[str, uuid.UUID, int]) -> None:
    assert parse_share_key(key) == parsed


@pytest.mark.parametrize(("key", "why"), [
    ("", "cannot be empty"),
    ("no-colons", "Invalid key format"),
    (f"g:{B64}", "Invalid key format"),
    (f" :{B64}:0", "GroupId must not be empty"),
    (f"g:{TOPIC_ID}:0", "Invalid topic ID"),  # the hyphenated form is not Kafka's Uuid.toString
    (f"g:{B64[:-1]}:0", "Invalid topic ID"),
    (f"g:{B64[:-1]}+:0", "Invalid topic ID"),  # not the URL-safe alphabet
    (f"g:{B64}:x", "Invalid partition"),
    (f"g:{B64}:1_0", "Invalid partition"),  # Python's int() would take it, Java's parseInt does not
    (f"g:{B64}:2147483648", "Invalid partition"),  # beyond an int32
])
def test_keys_kafka_refuses(key: str, why: str) -> None:
    refused = parse_share_key(key)
    assert isinstance(refused, str) and why in refused


def test_the_coordinator_key_hashes_the_base64_form() -> None:
    key = ShareStateStore.share_key("g", TOPIC_ID, 3)
    assert key == f"g:{B64}:3"  # SharePartitionKey.asCoordinatorKey
    parsed = parse_share_key(key)
    assert not isinstance(parsed, str)
    assert partition_for(ShareStateStore.share_key(*parsed), 50) == partition_for(key, 50)


def test_a_snapshot_keeps_its_leader_epoch() -> None:
    value = snapshot_value(3, 7, 11, [StateBatch(11, 12, 2, 1)], 1000, 1000)
    assert snapshot_leader_epoch(value) == 7
    assert parse_snapshot(value) == (3, 11, [StateBatch(11, 12, 2, 1)])
