"""`odradek acl create|list|delete`: ACLs, with the flags of kafka-acls.sh and rpk acl.

Through CreateAcls / DescribeAcls / DeleteAcls with confluent-kafka's AdminClient,
so they work against any Kafka. `create` makes one binding per principal, host,
operation and resource given, and refuses an operation the resource type has not
(Kafka's AclCommand table). `list` and `delete` take the same options as filters:
what is left out matches anything; `--resource-pattern-type` is `any` by default
(`match` also finds the wildcard and prefixed ACLs that apply to a name).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from odradek.cli.common import Client, fail
from odradek.cli.options import OPTION_GROUP, Connection, OptionGroup, with_option_groups

acl_app = typer.Typer(no_args_is_help=True, help="ACLs: create, list, delete (like kafka-acls.sh / rpk acl).")

DESCRIBE_ACLS = 29  # api key
CLUSTER_NAME = "kafka-cluster"  # the one cluster resource's name, as Kafka writes it
# Kafka's AclCommand.ResourceTypeToValidOperations
VALID_OPERATIONS = {
    "TOPIC": {"READ", "WRITE", "CREATE", "DESCRIBE", "DELETE", "ALTER", "DESCRIBE_CONFIGS", "ALTER_CONFIGS", "ALL"},
    "GROUP": {"READ", "DESCRIBE", "DELETE", "ALL"},
    "BROKER": {"CREATE", "CLUSTER_ACTION", "DESCRIBE_CONFIGS", "ALTER_CONFIGS", "IDEMPOTENT_WRITE", "ALTER",
               "DESCRIBE", "ALL"},
    "TRANSACTIONAL_ID": {"DESCRIBE", "WRITE", "ALL"},
}
OPERATIONS = sorted({op for ops in VALID_OPERATIONS.values() for op in ops})
SHOWN_TYPE = {"BROKER": "CLUSTER"}  # confluent-kafka calls the cluster resource type BROKER

TopicOpt = Annotated[list[str] | None, typer.Option("--topic", help="a topic name (repeatable)")]
GroupOpt = Annotated[list[str] | None, typer.Option("--group", help="a consumer group id (repeatable)")]
ClusterOpt = Annotated[bool, typer.Option("--cluster", help="the cluster resource")]
TxnOpt = Annotated[list[str] | None, typer.Option("--transactional-id", help="a transactional id (repeatable)")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="delete without asking")]


def _words(text: str) -> str:
    """`ClusterAction`, `cluster-action`, `cluster_action` -> CLUSTER_ACTION."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", text.strip()).upper().replace("-", "_")


def _operation(text: str) -> Any:
    from confluent_kafka.admin import AclOperation  # type: ignore[attr-defined]  # re-exported without __all__

    name = _words(text)
    if name not in OPERATIONS and name != "ANY":
        fail(f"unknown --operation {text!r}; use one of {', '.join(o.lower() for o in OPERATIONS)}", 2)
    return AclOperation[name]


def _pattern(text: str, allowed: tuple[str, ...]) -> Any:
    from confluent_kafka.admin import ResourcePatternType  # type: ignore[attr-defined]  # no __all__

    name = _words(text)
    if name.lower() not in allowed:
        fail(f"--resource-pattern-type must be {', '.join(allowed)}, not {text!r}", 2)
    return ResourcePatternType[name]


def _principal(text: str) -> str:
    from odradek.security import KafkaPrincipal

    try:
        return str(KafkaPrincipal.parse(text))
    except ValueError as exc:
        fail(f"{exc} (as in User:alice)", 2)


def _resources(topic: list[str] | None, group: list[str] | None, cluster: bool,
               txn: list[str] | None) -> list[tuple[str, str]]:
    """(confluent-kafka resource type name, resource name) for every resource option given."""
    found = [("TOPIC", t) for t in topic or []] + [("GROUP", g) for g in group or []]
    found += [("TRANSACTIONAL_ID", t) for t in txn or []]
    if cluster:
        found.append(("BROKER", CLUSTER_NAME))
    return found


def _table(bindings: list[Any]) -> Table:
    table = Table("PRINCIPAL", "HOST", "TYPE", "NAME", "PATTERN", "OPERATION", "PERMISSION")
    table.columns[3].overflow = "fold"
    rows = sorted({(b.principal, b.host, SHOWN_TYPE.get(b.restype.name, b.restype.name), b.name,
                    b.resource_pattern_type.name, b.operation.name, b.permission_type.name) for b in bindings})
    for row in rows:
        table.add_row(*row)
    return table


@acl_app.command()
@with_option_groups
def create(
    allow_principal: Annotated[list[str] | None, typer.Option(
        "--allow-principal", help="User:NAME to allow (repeatable)")] = None,
    deny_principal: Annotated[list[str] | None, typer.Option(
        "--deny-principal", help="User:NAME to deny (repeatable); a DENY beats every ALLOW")] = None,
    operation: Annotated[list[str] | None, typer.Option(
        "--operation", help="read, write, create, delete, alter, describe, cluster_action, describe_configs, "
                            "alter_configs, idempotent_write or all (repeatable)")] = None,
    topic: TopicOpt = None,
    group: GroupOpt = None,
    cluster: ClusterOpt = False,
    transactional_id: TxnOpt = None,
    resource_pattern_type: Annotated[str, typer.Option(
        "--resource-pattern-type", help="literal (the name, or * for every one) or prefixed")] = "literal",
    host: Annotated[list[str] | None, typer.Option("--host", help="client host the ACL applies to (default *)")] = None,
    connection: Connection = OPTION_GROUP,
) -> None:
    """Create ACLs: every principal x host x operation x resource given."""
    # confluent_kafka.admin re-exports these without __all__, so strict mypy calls them private
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AclBinding,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    principals = [(p, AclPermissionType.ALLOW) for p in allow_principal or []]
    principals += [(p, AclPermissionType.DENY) for p in deny_principal or []]
    if not principals:
        fail("give at least one --allow-principal or --deny-principal User:NAME", 2)
    if not operation:
        fail("give at least one --operation", 2)
    resources = _resources(topic, group, cluster, transactional_id)
    if not resources:
        fail("give at least one resource: --topic, --group, --cluster or --transactional-id", 2)
    pattern = _pattern(resource_pattern_type, ("literal", "prefixed"))
    operations = [_operation(op) for op in operation]
    bindings = []
    for kind, name in resources:
        for op in operations:
            if op.name not in VALID_OPERATIONS[kind]:
                fail(f"a {SHOWN_TYPE.get(kind, kind).lower()} ACL cannot grant {op.name.lower()}; it takes "
                     f"{', '.join(sorted(o.lower() for o in VALID_OPERATIONS[kind]))}", 2)
        kind_pattern = ResourcePatternType.LITERAL if kind == "BROKER" else pattern
        for principal, permission in principals:
            for h in host or ["*"]:
                for op in operations:
                    bindings.append(AclBinding(ResourceType[kind], name, kind_pattern, _principal(principal), h,
                                               op, permission))
    client = connection.client()
    futures = client.admin().create_acls(bindings)
    for binding in bindings:
        client.result(futures[binding], "cannot create the ACL")
    Console().print(_table(bindings))
    Console(stderr=True, highlight=False).print(f"created {len(bindings)} ACL(s)")


def _filters(f: AclFilter) -> list[Any]:
    from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported without __all__
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourceType,
    )

    pattern = _pattern(f.resource_pattern_type, ("any", "match", "literal", "prefixed"))
    op = _operation(f.operation) if f.operation else AclOperation.ANY
    if f.permission is None:
        perm = AclPermissionType.ANY
    elif f.permission.lower() in ("allow", "deny"):
        perm = AclPermissionType[f.permission.upper()]
    else:
        fail(f"--permission must be allow or deny, not {f.permission!r}", 2)
    who = _principal(f.principal) if f.principal else None
    resources: list[tuple[Any, str | None]] = [
        (ResourceType[k], n) for k, n in _resources(f.topic, f.group, f.cluster, f.transactional_id)]
    # None matches anything (confluent-kafka's documented filter), though its annotations say str
    return [AclBindingFilter(kind, name, pattern, who, f.host, op, perm)  # type: ignore[arg-type]
            for kind, name in resources or [(ResourceType.ANY, None)]]


def _matching(client: Client, filters: list[Any]) -> list[Any]:
    found: list[Any] = []
    for f in filters:
        found += client.result(client.admin().describe_acls(f), "cannot list ACLs") or []
    if not found:
        _check_describe_allowed(client)
    return found


def _check_describe_allowed(client: Client) -> None:
    """librdkafka turns DescribeAcls' top-level error (CLUSTER_AUTHORIZATION_FAILED,
    SECURITY_DISABLED) into an empty list: ask once more over the wire to tell them apart."""
    from kio.schema.errors import ErrorCode

    everything = {"resource_type_filter": 1, "resource_name_filter": None, "pattern_type_filter": 1,
                  "principal_filter": None, "host_filter": None, "operation": 1, "permission_type": 1}
    response = client.call(DESCRIBE_ACLS, 1, everything, "cannot list ACLs")  # v1: every Kafka since 2.0
    if response.error_code != ErrorCode.none:
        message = (response.error_message or response.error_code.name.upper()).rstrip(".")
        fail(f"cannot list ACLs: {message} ({response.error_code.name.upper()})")


PrincipalFilterOpt = Annotated[str | None, typer.Option("--principal", help="only this User:NAME")]
HostFilterOpt = Annotated[str | None, typer.Option("--host", help="only ACLs of this host (* is its own value)")]
OperationFilterOpt = Annotated[str | None, typer.Option("--operation", help="only this operation")]
PermissionFilterOpt = Annotated[str | None, typer.Option("--permission", help="allow or deny")]
PatternFilterOpt = Annotated[str, typer.Option(
    "--resource-pattern-type", help="any, match (every ACL that applies to the names), literal or prefixed")]


@dataclass(frozen=True)
class AclFilter(OptionGroup):
    """The options of `acl list` and `acl delete`: what is left out matches anything."""

    topic: TopicOpt = None
    group: GroupOpt = None
    cluster: ClusterOpt = False
    transactional_id: TxnOpt = None
    resource_pattern_type: PatternFilterOpt = "any"
    principal: PrincipalFilterOpt = None
    host: HostFilterOpt = None
    operation: OperationFilterOpt = None
    permission: PermissionFilterOpt = None


@acl_app.command("list")
@with_option_groups
def list_acls(acls: AclFilter = OPTION_GROUP, connection: Connection = OPTION_GROUP) -> None:
    """List the ACLs that match the filters (all of them without any)."""
    filters = _filters(acls)
    client = connection.client()
    Console().print(_table(_matching(client, filters)))


@acl_app.command()
@with_option_groups
def delete(acls: AclFilter = OPTION_GROUP, yes: YesOpt = False, connection: Connection = OPTION_GROUP) -> None:
    """Delete the ACLs that match the filters; shows them and asks first unless --yes."""
    if not (acls.topic or acls.group or acls.cluster or acls.transactional_id or acls.principal):
        fail("name what to delete: a resource (--topic, --group, --cluster, --transactional-id) "
             "or --principal", 2)
    filters = _filters(acls)
    client = connection.client()
    matching = _matching(client, filters)
    if not matching:
        Console(stderr=True, highlight=False).print("no ACL matches; nothing deleted")
        return
    if not yes:
        Console().print(_table(matching))
        if not sys.stdin.isatty():
            fail(f"{len(matching)} ACL(s) match; add --yes to delete them without a terminal to confirm in", 2)
        if not typer.confirm(f"delete these {len(matching)} ACL(s)?"):
            fail("nothing deleted")
    futures = client.admin().delete_acls(filters)
    deleted: list[Any] = []
    for f in filters:
        deleted += client.result(futures[f], "cannot delete ACLs") or []
    if yes:
        Console().print(_table(deleted))
    Console(stderr=True, highlight=False).print(f"deleted {len(deleted)} ACL(s)")
