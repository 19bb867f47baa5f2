"""The users and ACLs page: SCRAM credentials (AlterUserScramCredentials, KIP-554) and ACL
bindings (CreateAcls, DescribeAcls, DeleteAcls), through confluent-kafka's AdminClient.
Listing SCRAM users goes over the wire (console/wire.py). Passwords are salted by the
client and never returned."""

from __future__ import annotations

from typing import Any

from odradek.cli.acl import CLUSTER_NAME, SHOWN_TYPE, VALID_OPERATIONS
from odradek.cli.common import TIMEOUT_S
from odradek.cli.user import MAX_ITERATIONS, MECHANISMS, MIN_ITERATIONS
from odradek.console.session import ConsoleError, Session

RESOURCE_TYPES = {"TOPIC": "TOPIC", "GROUP": "GROUP", "CLUSTER": "BROKER", "TRANSACTIONAL_ID": "TRANSACTIONAL_ID"}
PATTERNS = ("LITERAL", "PREFIXED")


def upsert_user(session: Session, name: str, password: str, mechanism: str, iterations: int) -> None:
    from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported without __all__
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    if not name:
        raise ConsoleError("a user needs a name")
    if not password:
        raise ConsoleError("the password is empty")
    if mechanism not in MECHANISMS:
        raise ConsoleError(f"the mechanism must be {' or '.join(MECHANISMS)}, not {mechanism!r}")
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ConsoleError(f"iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}")
    info = ScramCredentialInfo(ScramMechanism[mechanism.replace("-", "_")], iterations)
    futures = session.admin().alter_user_scram_credentials(
        [UserScramCredentialUpsertion(name, info, password.encode())], request_timeout=TIMEOUT_S)
    session.wait(futures[name], f"cannot set the {mechanism} password of {name}")


def delete_user(session: Session, name: str, mechanism: str) -> None:
    from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported without __all__
        ScramMechanism,
        UserScramCredentialDeletion,
    )

    if mechanism not in MECHANISMS:
        raise ConsoleError(f"the mechanism must be {' or '.join(MECHANISMS)}, not {mechanism!r}")
    futures = session.admin().alter_user_scram_credentials(
        [UserScramCredentialDeletion(name, ScramMechanism[mechanism.replace("-", "_")])], request_timeout=TIMEOUT_S)
    session.wait(futures[name], f"cannot delete the {mechanism} credential of {name}")


def _binding(spec: dict[str, Any]) -> Any:
    """An AclBinding from the page's form, checked as kafka-acls.sh checks it."""
    from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported without __all__
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    from odradek.security import KafkaPrincipal

    shown_type = str(spec.get("resource_type", "")).upper()
    restype = RESOURCE_TYPES.get(shown_type)
    if restype is None:
        raise ConsoleError(f"the resource type must be one of {', '.join(RESOURCE_TYPES)}, not {shown_type!r}")
    name = CLUSTER_NAME if restype == "BROKER" else str(spec.get("resource_name", ""))
    if not name:
        raise ConsoleError(f"a {shown_type.lower()} ACL needs a resource name ('*' for all)")
    operation = str(spec.get("operation", "")).upper()
    if operation not in VALID_OPERATIONS[restype]:
        raise ConsoleError(f"{operation or 'no operation'} is not an operation of a {shown_type.lower()} "
                           f"(use one of {', '.join(sorted(VALID_OPERATIONS[restype]))})")
    pattern = str(spec.get("pattern_type", "LITERAL")).upper()
    if pattern not in PATTERNS:
        raise ConsoleError(f"the pattern type must be LITERAL or PREFIXED, not {pattern!r}")
    permission = str(spec.get("permission", "ALLOW")).upper()
    if permission not in ("ALLOW", "DENY"):
        raise ConsoleError(f"the permission must be ALLOW or DENY, not {permission!r}")
    try:
        principal = str(KafkaPrincipal.parse(str(spec.get("principal", ""))))
    except ValueError as exc:
        raise ConsoleError(f"{exc} (as in User:alice)") from None
    return AclBinding(ResourceType[restype], name, ResourcePatternType[pattern], principal,
                      str(spec.get("host") or "*"), AclOperation[operation], AclPermissionType[permission])


def _row(b: Any) -> dict[str, Any]:
    return {"principal": b.principal, "host": b.host, "resource_type": SHOWN_TYPE.get(b.restype.name, b.restype.name),
            "resource_name": b.name, "pattern_type": b.resource_pattern_type.name, "operation": b.operation.name,
            "permission": b.permission_type.name}


def list_acls(session: Session) -> list[dict[str, Any]]:
    from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported without __all__
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    # None matches any name, principal and host; confluent-kafka's stubs say str
    every = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,  # type: ignore[arg-type]
                             AclOperation.ANY, AclPermissionType.ANY)
    found = session.wait(session.admin().describe_acls(every, request_timeout=TIMEOUT_S), "cannot list ACLs")
    return sorted((_row(b) for b in found), key=lambda r: tuple(r.values()))


def create_acl(session: Session, spec: dict[str, Any]) -> None:
    binding = _binding(spec)
    futures = session.admin().create_acls([binding], request_timeout=TIMEOUT_S)
    session.wait(futures[binding], "cannot create the ACL")


def delete_acl(session: Session, spec: dict[str, Any]) -> int:
    """Deletes exactly the binding shown on the page; answers how many were deleted."""
    from confluent_kafka.admin import AclBindingFilter  # type: ignore[attr-defined]  # re-exported without __all__

    b = _binding(spec)
    binding_filter = AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host,
                                      b.operation, b.permission_type)
    futures = session.admin().delete_acls([binding_filter], request_timeout=TIMEOUT_S)
    return len(session.wait(futures[binding_filter], "cannot delete the ACL"))
