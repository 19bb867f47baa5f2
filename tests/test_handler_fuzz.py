"""Every handler accepts every value its request schema allows (issue 13).

A seeded, bounded hypothesis run sends schema-driven requests of every API and
version in ROUTES (odradek.testing.requests: the broker's own topics, groups and
producer ids mixed with nulls, empty and huge arrays, duplicates, integer extremes,
broken record batches, unknown tagged fields) through the real dispatcher of a
real embedded broker; then one regression test per bug that run found, over TCP.
The long campaign is bench/handler_fuzz.py.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import recv_exact
from hypothesis import HealthCheck, given, settings
from kio.schema.errors import ErrorCode

from odradek.protocol.apis import api_name
from odradek.protocol.build import build
from odradek.protocol.framing import decode_response, encode_request, request_type
from odradek.testing import Broker
from odradek.testing.handler_fuzz import HandlerFuzzer
from odradek.testing.requests import all_routes, request_strategy

EXAMPLES = 8  # per API version: 167 versions x 8 examples


@pytest.fixture(scope="module")
def fuzzer() -> Iterator[HandlerFuzzer]:
    with Broker() as broker:
        f = HandlerFuzzer(broker)
        yield f
        f.close()


@pytest.mark.parametrize(("api_key", "version"), all_routes(),
                         ids=[f"{api_name(k)}-v{v}" for k, v in all_routes()])
def test_handler_answers_every_schema_valid_request(fuzzer: HandlerFuzzer, api_key: int, version: int) -> None:
    fuzzer.ensure_topics()

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(request_strategy(api_key, version, fuzzer.vocabulary))
    def check(request: Any) -> None:
        outcome = fuzzer.dispatch(request)
        assert not outcome.failed, f"{request.describe()}\n{outcome.detail}"

    check()
    assert fuzzer.healthy(), "the broker stopped answering ApiVersions over TCP"


# -- regressions, over TCP --------------------------------------------------------------


def call(broker: Broker, api_key: int, version: int, values: dict[str, Any] | None = None, **extra: Any) -> Any:
    """One request on a fresh connection; the decoded response."""
    frame = encode_request(api_key, version, 7, build(request_type(api_key, version), values, **extra))
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as s:
        s.sendall(frame)
        (size,) = struct.unpack(">i", recv_exact(s, 4))
        correlation_id, body = decode_response(recv_exact(s, size), api_key, version)
    assert correlation_id == 7
    return body


@pytest.fixture
def broker(fuzzer: HandlerFuzzer) -> Broker:
    fuzzer.ensure_topics()  # the fuzzed requests before may have deleted or grown them
    return fuzzer.broker


def test_create_partitions_refuses_two_billion_partitions(broker: Broker) -> None:
    """count = 2**31-1 made the broker build a list of two billion replica sets (MemoryError,
    or the process killed by the kernel); Kafka refuses more than 10,000 new partitions."""
    broker.create_topic("reg-grow", 1)
    body = call(broker, 37, 3, validate_only=False, timeout_ms=1000,
                topics=[{"name": "reg-grow", "count": 2**31 - 1, "assignments": None}])
    assert [(r.name, r.error_code) for r in body.results] == [("reg-grow", ErrorCode.policy_violation)]
    assert broker.server.broker.topics()["reg-grow"].partitions == 1


def test_create_topics_refuses_more_than_ten_thousand_partitions(broker: Broker) -> None:
    body = call(broker, 19, 7, validate_only=False, timeout_ms=1000, topics=[
        {"name": "reg-huge", "num_partitions": 2**31 - 1, "replication_factor": -1, "assignments": [], "configs": []},
        {"name": "reg-small", "num_partitions": 2, "replication_factor": -1, "assignments": [], "configs": []},
    ])
    assert [(t.name, t.error_code) for t in body.topics] == [
        ("reg-huge", ErrorCode.policy_violation), ("reg-small", ErrorCode.none)]
    assert "reg-huge" not in broker.server.broker.topics()


def test_a_topic_named_twice_is_answered_once_and_not_created(broker: Broker) -> None:
    """Kafka's ControllerApis: a duplicated name gets one INVALID_REQUEST row and nothing happens."""
    topic = {"name": "reg-twice", "num_partitions": 1, "replication_factor": -1, "assignments": [], "configs": []}
    body = call(broker, 19, 7, validate_only=False, timeout_ms=1000, topics=[topic, topic])
    assert [(t.name, t.error_code, t.error_message) for t in body.topics] == [
        ("reg-twice", ErrorCode.invalid_request, "Duplicate topic name.")]
    assert "reg-twice" not in broker.server.broker.topics()
    broker.create_topic("reg-twice", 1)
    grow = {"name": "reg-twice", "count": 3, "assignments": None}
    body = call(broker, 37, 3, validate_only=False, timeout_ms=1000, topics=[grow, grow])
    assert [(r.name, r.error_code) for r in body.results] == [("reg-twice", ErrorCode.invalid_request)]
    assert broker.server.broker.topics()["reg-twice"].partitions == 1


def test_delete_topics_rows_kafka_refuses(broker: Broker) -> None:
    broker.create_topic("reg-del", 1)
    topic_id = broker.server.broker.topics()["reg-del"].topic_id
    body = call(broker, 20, 6, timeout_ms=1000, topics=[
        {"name": None, "topic_id": None}, {"name": "reg-del", "topic_id": topic_id},
        {"name": "reg-del", "topic_id": None}, {"name": "reg-del", "topic_id": None}])
    assert sorted((r.name or "", r.error_message or "") for r in body.responses) == [
        ("", "Neither topic name nor id were specified."),
        ("reg-del", "Duplicate topic name."),
        ("reg-del", "You may not specify both topic name and topic id."),
    ]
    assert {r.error_code for r in body.responses} == {ErrorCode.invalid_request}
    assert "reg-del" in broker.server.broker.topics()
    body = call(broker, 20, 3, timeout_ms=1000, topic_names=["reg-del", "reg-del"])
    assert [(r.name, r.error_code) for r in body.responses] == [("reg-del", ErrorCode.invalid_request)]
    body = call(broker, 20, 6, timeout_ms=1000, topics=[{"name": None, "topic_id": topic_id}])
    assert [(r.name, r.error_code) for r in body.responses] == [("reg-del", ErrorCode.none)]
    assert "reg-del" not in broker.server.broker.topics()


def test_metadata_null_topics_lists_all_topics(broker: Broker) -> None:
    broker.create_topic("reg-listed", 2)
    for version in (1, 9, 12):
        body = call(broker, 3, version, topics=None, allow_auto_topic_creation=False)
        names = {t.name for t in body.topics}
        assert {"reg-listed", "fuzz-a"} <= names, version
    assert call(broker, 3, 12, topics=[], allow_auto_topic_creation=False).topics == ()


@pytest.mark.parametrize("version", [10, 11])
def test_metadata_v10_v11_null_name_or_topic_id_is_invalid_request(broker: Broker, version: int) -> None:
    """v10 and v11 have the fields, but Kafka answers names and ids only from v12 on: a null name
    was written into a response whose name is not nullable (TypeError, connection closed)."""
    topic_id = broker.server.broker.topics()["fuzz-a"].topic_id
    for topics in ([{"name": None, "topic_id": None}], [{"name": "fuzz-a", "topic_id": topic_id}]):
        body = call(broker, 3, version, topics=topics, allow_auto_topic_creation=False)
        assert [(t.name, t.error_code) for t in body.topics] == [
            (topics[0]["name"] or "", ErrorCode.invalid_request)]


def test_offset_for_leader_epoch_v2_has_no_replica_id(broker: Broker) -> None:
    """replica_id came in v3: every v2 request for a partition raised AttributeError."""
    body = call(broker, 23, 2, topics=[{"topic": "fuzz-a", "partitions": [
        {"partition": 0, "current_leader_epoch": -1, "leader_epoch": 0}]}])
    (partition,) = body.topics[0].partitions
    assert partition.error_code == ErrorCode.none and partition.end_offset >= 0


def _incremental(broker: Broker, configs: list[dict[str, Any]], name: str = "reg-configs") -> Any:
    body = call(broker, 44, 1, validate_only=False, resources=[
        {"resource_type": 2, "resource_name": name, "configs": configs}])
    return body.responses[0]


def test_incremental_alter_configs_null_value_is_invalid_request(broker: Broker) -> None:
    """A null value of a SET, and an APPEND after it, raised AttributeError on None.split."""
    broker.create_topic("reg-configs", 1)
    for op in (0, 2, 3):  # SET, APPEND, SUBTRACT
        r = _incremental(broker, [{"name": "cleanup.policy", "config_operation": op, "value": None}])
        assert (r.error_code, r.error_message) == (
            ErrorCode.invalid_request, "Null value not supported for : cleanup.policy")
    r = _incremental(broker, [{"name": "retention.ms", "config_operation": 0, "value": "1000"},
                              {"name": "retention.ms", "config_operation": 1, "value": None}])
    assert (r.error_code, r.error_message) == (ErrorCode.invalid_request, "Error due to duplicate config keys")
    r = _incremental(broker, [{"name": "retention.ms", "config_operation": 1, "value": None}])  # DELETE: null is fine
    assert r.error_code == ErrorCode.none
    r = _incremental(broker, [{"name": "retention.ms", "config_operation": 9, "value": "1"}])
    assert r.error_code == ErrorCode.invalid_request


def test_alter_configs_resource_named_twice_is_invalid_request(broker: Broker) -> None:
    broker.create_topic("reg-alter", 1)
    resource = {"resource_type": 2, "resource_name": "reg-alter",
                "configs": [{"name": "retention.ms", "value": "1000"}]}
    body = call(broker, 33, 2, validate_only=False, resources=[resource, resource])
    assert [(r.error_code, r.error_message) for r in body.responses] == [
        (ErrorCode.invalid_request, "Each resource must appear at most once.")] * 2
    assert "retention.ms" not in broker.server.broker.topics()["reg-alter"].configs
