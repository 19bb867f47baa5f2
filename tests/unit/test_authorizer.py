"""The authorizer's rules (Kafka's AclAuthorizer/StandardAuthorizer semantics), without a broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from odradek.security import KafkaPrincipal
from odradek.security.acl_store import FileAclStore
from odradek.security.authorizer import (
    CLUSTER_NAME,
    AccessControlEntry,
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    Authorizer,
    MemoryAclStore,
    PatternType,
    ResourcePattern,
    ResourceType,
    authorizer_enabled,
    from_code,
    kafka_name,
    parse_super_users,
)

Op = AclOperation
T = ResourceType
ALICE = KafkaPrincipal("User", "alice")
BOB = KafkaPrincipal("User", "bob")
HOST = "10.0.0.1"


def acl(rtype: ResourceType, name: str, op: AclOperation, principal: str = "User:alice", *,
        allow: bool = True, prefixed: bool = False, host: str = "*") -> AclBinding:
    return AclBinding(
        ResourcePattern(rtype, name, PatternType.PREFIXED if prefixed else PatternType.LITERAL),
        AccessControlEntry(principal, host, op, AclPermissionType.ALLOW if allow else AclPermissionType.DENY),
    )


def authorizer(*bindings: AclBinding, **kwargs: object) -> Authorizer:
    auth = Authorizer(MemoryAclStore(), **kwargs)  # type: ignore[arg-type]
    assert auth.create_acls(list(bindings)) == [None] * len(bindings)
    return auth


def test_read_allows_read_and_implies_describe_only() -> None:
    auth = authorizer(acl(T.TOPIC, "orders", Op.READ))
    assert auth.authorize(ALICE, HOST, Op.READ, T.TOPIC, "orders")
    assert auth.authorize(ALICE, HOST, Op.DESCRIBE, T.TOPIC, "orders")
    assert not auth.authorize(ALICE, HOST, Op.WRITE, T.TOPIC, "orders")
    assert not auth.authorize(BOB, HOST, Op.READ, T.TOPIC, "orders")
    assert not auth.authorize(ALICE, HOST, Op.READ, T.TOPIC, "orders2")  # literal: the exact name only
    assert not auth.authorize(ALICE, HOST, Op.READ, T.GROUP, "orders")


@pytest.mark.parametrize("granted", [Op.READ, Op.WRITE, Op.DELETE, Op.ALTER, Op.DESCRIBE])
def test_operations_that_imply_describe(granted: AclOperation) -> None:
    assert authorizer(acl(T.TOPIC, "t", granted)).authorize(ALICE, HOST, Op.DESCRIBE, T.TOPIC, "t")


@pytest.mark.parametrize("granted", [Op.CREATE, Op.CLUSTER_ACTION, Op.DESCRIBE_CONFIGS, Op.IDEMPOTENT_WRITE])
def test_operations_that_do_not_imply_describe(granted: AclOperation) -> None:
    assert not authorizer(acl(T.TOPIC, "t", granted)).authorize(ALICE, HOST, Op.DESCRIBE, T.TOPIC, "t")


def test_alter_configs_implies_describe_configs_and_all_implies_everything() -> None:
    auth = authorizer(acl(T.TOPIC, "t", Op.ALTER_CONFIGS), acl(T.GROUP, "g", Op.ALL))
    assert auth.authorize(ALICE, HOST, Op.DESCRIBE_CONFIGS, T.TOPIC, "t")
    assert not auth.authorize(ALICE, HOST, Op.DESCRIBE, T.TOPIC, "t")
    for op in (Op.READ, Op.DESCRIBE, Op.DELETE, Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS):
        assert auth.authorize(ALICE, HOST, op, T.GROUP, "g")


def test_deny_wins_over_allow_of_any_pattern() -> None:
    auth = authorizer(acl(T.TOPIC, "pay-ledger", Op.ALL),
                      acl(T.TOPIC, "pay-", Op.WRITE, allow=False, prefixed=True))
    assert auth.authorize(ALICE, HOST, Op.READ, T.TOPIC, "pay-ledger")
    assert not auth.authorize(ALICE, HOST, Op.WRITE, T.TOPIC, "pay-ledger")
    # a DENY of WRITE does not deny DESCRIBE (denials match their operation or ALL only)
    assert auth.authorize(ALICE, HOST, Op.DESCRIBE, T.TOPIC, "pay-ledger")
    deny_all = authorizer(acl(T.TOPIC, "*", Op.READ), acl(T.TOPIC, "secret", Op.ALL, allow=False))
    assert deny_all.authorize(ALICE, HOST, Op.READ, T.TOPIC, "public")
    assert not deny_all.authorize(ALICE, HOST, Op.DESCRIBE, T.TOPIC, "secret")


def test_prefixed_and_wildcard_patterns() -> None:
    auth = authorizer(acl(T.TOPIC, "logs-", Op.READ, prefixed=True),
                      acl(T.GROUP, "*", Op.READ),
                      acl(T.TOPIC, "shared", Op.WRITE, "User:*"))
    assert auth.authorize(ALICE, HOST, Op.READ, T.TOPIC, "logs-app")
    assert auth.authorize(ALICE, HOST, Op.READ, T.TOPIC, "logs-")
    assert not auth.authorize(ALICE, HOST, Op.READ, T.TOPIC, "logs")
    assert not auth.authorize(ALICE, HOST, Op.READ, T.TOPIC, "app-logs-x")
    assert auth.authorize(ALICE, HOST, Op.READ, T.GROUP, "any-group")
    assert auth.authorize(BOB, HOST, Op.WRITE, T.TOPIC, "shared")
    assert not auth.authorize(BOB, HOST, Op.READ, T.GROUP, "any-group")


def test_a_prefixed_star_is_a_literal_prefix_not_a_wildcard() -> None:
    auth = authorizer(acl(T.TOPIC, "*", Op.READ, prefixed=True))
    assert auth.authorize(ALICE, HOST, Op.READ, T.TOPIC, "*x")
    assert not auth.authorize(ALICE, HOST, Op.READ, T.TOPIC, "x")


def test_host_must_match_unless_wildcard() -> None:
    auth = authorizer(acl(T.TOPIC, "t", Op.READ, host="10.0.0.1"), acl(T.TOPIC, "t", Op.WRITE, host="10.0.0.9"))
    assert auth.authorize(ALICE, "10.0.0.1", Op.READ, T.TOPIC, "t")
    assert not auth.authorize(ALICE, "10.0.0.2", Op.READ, T.TOPIC, "t")
    assert not auth.authorize(ALICE, "10.0.0.1", Op.WRITE, T.TOPIC, "t")


def test_super_users_bypass_every_acl_including_deny() -> None:
    auth = authorizer(acl(T.TOPIC, "*", Op.ALL, "User:*", allow=False),
                      super_users=parse_super_users("User:admin; User:broker"))
    admin = KafkaPrincipal("User", "admin")
    assert auth.authorize(admin, HOST, Op.DELETE, T.TOPIC, "t")
    assert auth.authorize(admin, HOST, Op.CLUSTER_ACTION, T.CLUSTER, CLUSTER_NAME)
    assert not auth.authorize(ALICE, HOST, Op.READ, T.TOPIC, "t")


def test_allow_everyone_if_no_acl_found_only_where_no_acl_applies() -> None:
    auth = authorizer(acl(T.TOPIC, "guarded", Op.READ, "User:bob"), allow_everyone_if_no_acl_found=True)
    assert auth.authorize(ALICE, HOST, Op.WRITE, T.TOPIC, "open")
    assert not auth.authorize(ALICE, HOST, Op.READ, T.TOPIC, "guarded")
    assert auth.authorize(BOB, HOST, Op.READ, T.TOPIC, "guarded")
    strict = authorizer(acl(T.TOPIC, "guarded", Op.READ, "User:bob"))
    assert not strict.authorize(ALICE, HOST, Op.WRITE, T.TOPIC, "open")


def test_authorize_by_resource_type_as_kafka_default() -> None:
    # KIP-679: WRITE on some topic lets an idempotent producer in
    assert authorizer(acl(T.TOPIC, "t", Op.WRITE)).authorize_by_resource_type(ALICE, HOST, Op.WRITE, T.TOPIC)
    assert not authorizer(acl(T.TOPIC, "t", Op.READ)).authorize_by_resource_type(ALICE, HOST, Op.WRITE, T.TOPIC)
    # a DENY covering the allowed name (literal, or a prefix of it) takes it away
    assert not authorizer(acl(T.TOPIC, "t", Op.WRITE), acl(T.TOPIC, "t", Op.WRITE, allow=False)) \
        .authorize_by_resource_type(ALICE, HOST, Op.WRITE, T.TOPIC)
    assert not authorizer(acl(T.TOPIC, "app-x", Op.WRITE, prefixed=True),
                          acl(T.TOPIC, "app", Op.ALL, allow=False, prefixed=True)) \
        .authorize_by_resource_type(ALICE, HOST, Op.WRITE, T.TOPIC)
    assert authorizer(acl(T.TOPIC, "app-x", Op.WRITE, prefixed=True),
                      acl(T.TOPIC, "app-y", Op.ALL, allow=False, prefixed=True)) \
        .authorize_by_resource_type(ALICE, HOST, Op.WRITE, T.TOPIC)
    assert not authorizer(acl(T.TOPIC, "t", Op.WRITE), acl(T.TOPIC, "*", Op.WRITE, allow=False)) \
        .authorize_by_resource_type(ALICE, HOST, Op.WRITE, T.TOPIC)
    assert authorizer(super_users=["User:alice"]).authorize_by_resource_type(ALICE, HOST, Op.WRITE, T.TOPIC)


def test_authorized_operations_bit_field() -> None:
    auth = authorizer(acl(T.GROUP, "g", Op.READ))
    bits = auth.authorized_operations(ALICE, HOST, T.GROUP, "g")
    assert bits == (1 << Op.READ) | (1 << Op.DESCRIBE)


def test_filters_match_as_kafka_resource_pattern_filter() -> None:
    lit = ResourcePattern(T.TOPIC, "orders", PatternType.LITERAL)
    wild = ResourcePattern(T.TOPIC, "*", PatternType.LITERAL)
    pre = ResourcePattern(T.TOPIC, "ord", PatternType.PREFIXED)
    match = AclBindingFilter(T.TOPIC, "orders", PatternType.MATCH)
    assert [match.matches_pattern(p) for p in (lit, wild, pre)] == [True, True, True]
    exact = AclBindingFilter(T.TOPIC, "orders", PatternType.ANY)
    assert [exact.matches_pattern(p) for p in (lit, wild, pre)] == [True, False, False]
    assert AclBindingFilter(T.ANY, None, PatternType.PREFIXED).matches_pattern(pre)
    assert not AclBindingFilter(T.GROUP).matches_pattern(lit)
    entry = AccessControlEntry("User:alice", "*", Op.READ, AclPermissionType.ALLOW)
    assert AclBindingFilter(principal="User:alice", operation=Op.READ).matches_entry(entry)
    assert not AclBindingFilter(host="10.0.0.1").matches_entry(entry)
    assert not AclBindingFilter(permission_type=AclPermissionType.DENY).matches_entry(entry)
    assert AclBindingFilter(T.UNKNOWN).unknown_part() == "Unknown patternFilter."
    assert AclBindingFilter(operation=from_code(AclOperation, 99)).unknown_part() == "Unknown entryFilter."


def test_create_refuses_what_kafka_refuses() -> None:
    auth = Authorizer(MemoryAclStore())
    results = auth.create_acls([
        acl(T.CLUSTER, "other", Op.ALTER),
        acl(T.TOPIC, "", Op.READ),
        acl(T.TOPIC, "t", Op.READ, "alice"),
        acl(T.TOPIC, "t", Op.ANY),
        acl(T.ANY, "t", Op.READ),
        AclBinding(ResourcePattern(T.TOPIC, "t", PatternType.MATCH),
                   AccessControlEntry("User:a", "*", Op.READ, AclPermissionType.ALLOW)),
        acl(T.TOPIC, "t", Op.READ),
        acl(T.TOPIC, "t", Op.READ),  # the same ACL twice: no error, stored once
    ])
    assert [r.code if r is not None else None for r in results] == ["invalid_request"] * 6 + [None, None]
    assert auth.acls(AclBindingFilter()) == [acl(T.TOPIC, "t", Op.READ)]


def test_delete_returns_what_each_filter_removed() -> None:
    auth = authorizer(acl(T.TOPIC, "a", Op.READ), acl(T.TOPIC, "a", Op.WRITE),
                      acl(T.TOPIC, "a-", Op.READ, prefixed=True), acl(T.GROUP, "g", Op.READ))
    results = auth.delete_acls([
        AclBindingFilter(T.TOPIC, "a", PatternType.LITERAL, operation=Op.WRITE),
        AclBindingFilter(T.UNKNOWN),
        AclBindingFilter(T.TOPIC),
    ])
    assert results[0] == (None, [(acl(T.TOPIC, "a", Op.WRITE), None)])
    assert results[1][0] is not None and results[1][0].code == "invalid_request"
    assert sorted(b for b, _ in results[2][1]) == [acl(T.TOPIC, "a", Op.READ),
                                                  acl(T.TOPIC, "a-", Op.READ, prefixed=True)]
    assert auth.acls(AclBindingFilter()) == [acl(T.GROUP, "g", Op.READ)]
    assert not auth.authorize(ALICE, HOST, Op.READ, T.TOPIC, "a")


def test_file_store_survives_a_new_process_and_writes_atomically(tmp_path: Path) -> None:
    first = Authorizer(FileAclStore(tmp_path))
    first.load()
    assert first.create_acls([acl(T.TOPIC, "t", Op.READ), acl(T.GROUP, "g-", Op.READ, prefixed=True)]) == [None, None]
    second = Authorizer(FileAclStore(tmp_path))
    second.load()
    assert second.authorize(ALICE, HOST, Op.READ, T.TOPIC, "t")
    assert second.authorize(ALICE, HOST, Op.READ, T.GROUP, "g-1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acls.json"]
    rows = json.loads((tmp_path / "acls.json").read_text())["acls"]
    assert {"resourceType": "Topic", "patternType": "Literal", "name": "t", "principal": "User:alice",
            "permissionType": "Allow", "operation": "Read", "host": "*"} in rows
    second.delete_acls([AclBindingFilter()])
    third = Authorizer(FileAclStore(tmp_path))
    third.load()
    assert third.acls(AclBindingFilter()) == []


def test_a_torn_acl_file_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "acls.json").write_text('{"acls": [{"resourceType": "Topic"')
    with pytest.raises(OSError, match="is not a readable ACL file"):
        FileAclStore(tmp_path).load()


def test_authorizer_class_names() -> None:
    assert not authorizer_enabled("")
    assert authorizer_enabled("kafka.security.authorizer.AclAuthorizer")
    assert authorizer_enabled("org.apache.kafka.metadata.authorizer.StandardAuthorizer")
    with pytest.raises(ValueError, match="authorizer.class.name must be"):
        authorizer_enabled("com.example.MyAuthorizer")


def test_kafka_names() -> None:
    assert kafka_name(T.TRANSACTIONAL_ID) == "TransactionalId"
    assert kafka_name(Op.DESCRIBE_CONFIGS) == "DescribeConfigs"
    assert kafka_name(AclPermissionType.ALLOW) == "Allow"
