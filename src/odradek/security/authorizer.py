"""The authorizer (Kafka's AclAuthorizer / StandardAuthorizer): "may this principal do this?".

An ACL binds a resource pattern (TOPIC `orders`, LITERAL; GROUP `app-`, PREFIXED; the
literal wildcard `*`) to an entry: a principal (`User:alice`, or `User:*` for anyone), a
host (an IP address or `*`), an operation and ALLOW or DENY. Kafka's rules, followed here:

- a super user (`super.users`) may do everything, whatever the ACLs say;
- the ACLs that apply to a resource are the literal ones of its name, the literal
  wildcard `*` of its type and every PREFIXED pattern its name starts with;
- a matching DENY wins over any ALLOW; a DENY matches its own operation or ALL only;
- an ALLOW of READ, WRITE, DELETE or ALTER also allows DESCRIBE, ALTER_CONFIGS also
  allows DESCRIBE_CONFIGS, ALL allows everything;
- when no ACL at all (of any principal) applies to the resource, the answer is
  `allow.everyone.if.no.acl.found` (false by default: denied).

The ACLs live in an `AclStore` (a file in the data dir on a single node, ZooKeeper's
`/kafka-acl` in cluster mode); this module keeps the in-memory view the checks read, and
knows no socket, handler or ZooKeeper. Codes and names are Kafka's (the wire's int8
codes; `Topic`, `Read`, `Allow` in ZooKeeper's JSON).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol, TypeVar

from odradek.security import KafkaPrincipal

# Both of Kafka's class names switch it on (ZooKeeper-era and KRaft-era).
AUTHORIZER_CLASS_NAMES = (
    "kafka.security.authorizer.AclAuthorizer",
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
)
CLUSTER_NAME = "kafka-cluster"  # the one CLUSTER resource's name (Resource.CLUSTER_NAME)
WILDCARD = "*"  # a literal resource name or host that matches every name or host
WILDCARD_PRINCIPAL = "User:*"


class ResourceType(IntEnum):
    UNKNOWN = 0
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5
    DELEGATION_TOKEN = 6
    USER = 7


class PatternType(IntEnum):
    UNKNOWN = 0
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


class AclOperation(IntEnum):
    UNKNOWN = 0
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12
    CREATE_TOKENS = 13
    DESCRIBE_TOKENS = 14


class AclPermissionType(IntEnum):
    UNKNOWN = 0
    ANY = 1
    DENY = 2
    ALLOW = 3


E = TypeVar("E", ResourceType, PatternType, AclOperation, AclPermissionType)


def from_code(kind: type[E], code: int) -> E:
    """Kafka's `fromCode`: a code it does not know is UNKNOWN."""
    try:
        return kind(code)
    except ValueError:
        return kind(0)


def kafka_name(value: IntEnum) -> str:
    """SecurityUtils' PascalCase names (`TransactionalId`, `DescribeConfigs`, `Allow`), as
    ZooKeeper's ACL JSON and paths write them."""
    return "".join(part.capitalize() for part in value.name.split("_"))


def from_kafka_name(kind: type[E], name: str) -> E:
    """The member of `kind` named `name` in PascalCase or upper case; ValueError otherwise."""
    for member in kind:
        if name in (kafka_name(member), member.name):
            return member
    raise ValueError(f"{name!r} is not a {kind.__name__}")


# The operations an ALLOW of each operation also grants (Kafka's implied operations).
_IMPLIED_BY: dict[AclOperation, frozenset[AclOperation]] = {
    AclOperation.DESCRIBE: frozenset({AclOperation.DESCRIBE, AclOperation.READ, AclOperation.WRITE,
                                      AclOperation.DELETE, AclOperation.ALTER}),
    AclOperation.DESCRIBE_CONFIGS: frozenset({AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS}),
}

# AclEntry.supportedOperations: what KIP-430's authorized-operations bit fields cover.
SUPPORTED_OPERATIONS: dict[ResourceType, tuple[AclOperation, ...]] = {
    ResourceType.TOPIC: (AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DESCRIBE,
                         AclOperation.DELETE, AclOperation.ALTER, AclOperation.DESCRIBE_CONFIGS,
                         AclOperation.ALTER_CONFIGS),
    ResourceType.GROUP: (AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DELETE,
                         AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS),
    ResourceType.CLUSTER: (AclOperation.CREATE, AclOperation.CLUSTER_ACTION, AclOperation.DESCRIBE_CONFIGS,
                           AclOperation.ALTER_CONFIGS, AclOperation.IDEMPOTENT_WRITE, AclOperation.ALTER,
                           AclOperation.DESCRIBE),
    ResourceType.TRANSACTIONAL_ID: (AclOperation.DESCRIBE, AclOperation.WRITE),
    ResourceType.DELEGATION_TOKEN: (AclOperation.DESCRIBE,),
    ResourceType.USER: (AclOperation.CREATE_TOKENS, AclOperation.DESCRIBE_TOKENS),
}


@dataclass(frozen=True, slots=True, order=True)
class ResourcePattern:
    resource_type: ResourceType
    name: str
    pattern_type: PatternType

    def __str__(self) -> str:
        return f"{kafka_name(self.resource_type)}:{kafka_name(self.pattern_type).upper()}:{self.name}"


@dataclass(frozen=True, slots=True, order=True)
class AccessControlEntry:
    principal: str  # `User:alice`, `User:*`
    host: str  # an IP address or `*`
    operation: AclOperation
    permission_type: AclPermissionType


@dataclass(frozen=True, slots=True, order=True)
class AclBinding:
    pattern: ResourcePattern
    entry: AccessControlEntry

    def __str__(self) -> str:
        e = self.entry
        return (f"{e.principal} {kafka_name(e.permission_type)} {kafka_name(e.operation)} "
                f"from {e.host} on {self.pattern}")


@dataclass(frozen=True, slots=True)
class AclBindingFilter:
    """DescribeAcls / DeleteAcls filters: None or ANY match everything; MATCH (patterns only)
    finds every pattern that applies to a resource name, as the authorizer would."""

    resource_type: ResourceType = ResourceType.ANY
    name: str | None = None
    pattern_type: PatternType = PatternType.ANY
    principal: str | None = None
    host: str | None = None
    operation: AclOperation = AclOperation.ANY
    permission_type: AclPermissionType = AclPermissionType.ANY

    def unknown_part(self) -> str | None:
        """Why Kafka refuses this filter (an UNKNOWN code in it), or None."""
        if self.resource_type == ResourceType.UNKNOWN or self.pattern_type == PatternType.UNKNOWN:
            return "Unknown patternFilter."
        if self.operation == AclOperation.UNKNOWN or self.permission_type == AclPermissionType.UNKNOWN:
            return "Unknown entryFilter."
        return None

    def matches_pattern(self, pattern: ResourcePattern) -> bool:
        """ResourcePatternFilter.matches."""
        if self.resource_type not in (ResourceType.ANY, pattern.resource_type):
            return False
        if self.pattern_type not in (PatternType.ANY, PatternType.MATCH, pattern.pattern_type):
            return False
        if self.name is None:
            return True
        if self.pattern_type in (PatternType.ANY, pattern.pattern_type):
            return self.name == pattern.name
        if pattern.pattern_type == PatternType.LITERAL:  # MATCH
            return self.name == pattern.name or pattern.name == WILDCARD
        return self.name.startswith(pattern.name)

    def matches_entry(self, entry: AccessControlEntry) -> bool:
        """AccessControlEntryFilter.matches."""
        return ((self.principal is None or self.principal == entry.principal)
                and (self.host is None or self.host == entry.host)
                and self.operation in (AclOperation.ANY, entry.operation)
                and self.permission_type in (AclPermissionType.ANY, entry.permission_type))

    def matches(self, binding: AclBinding) -> bool:
        return self.matches_pattern(binding.pattern) and self.matches_entry(binding.entry)


class AclError(Exception):
    """An ACL Kafka refuses or could not store; `code` is the Kafka error's name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def validate_binding(binding: AclBinding) -> None:
    """The checks Kafka makes before it stores an ACL (AclApis, AclControlManager.validateNewAcl);
    raises AclError('invalid_request', ...)."""
    pattern, entry = binding.pattern, binding.entry
    if pattern.resource_type in (ResourceType.UNKNOWN, ResourceType.ANY):
        raise AclError("invalid_request", f"Invalid resourceType {pattern.resource_type.name}")
    if pattern.pattern_type not in (PatternType.LITERAL, PatternType.PREFIXED):
        raise AclError("invalid_request", f"Invalid patternType {pattern.pattern_type.name}")
    if entry.operation in (AclOperation.UNKNOWN, AclOperation.ANY):
        raise AclError("invalid_request", f"Invalid operation {entry.operation.name}")
    if entry.permission_type not in (AclPermissionType.ALLOW, AclPermissionType.DENY):
        raise AclError("invalid_request", f"Invalid permissionType {entry.permission_type.name}")
    if pattern.resource_type == ResourceType.CLUSTER and pattern.name != CLUSTER_NAME:
        raise AclError("invalid_request", f"The only valid name for the CLUSTER resource is {CLUSTER_NAME}")
    if not pattern.name:
        raise AclError("invalid_request", "Invalid empty resource name")
    try:
        KafkaPrincipal.parse(entry.principal)
    except ValueError:
        raise AclError("invalid_request", "expected a string in format principalType:principalName "
                       f"but got {entry.principal}") from None
    if not entry.host:
        raise AclError("invalid_request", "Invalid empty host")


Entries = frozenset[AccessControlEntry]
OnAclChange = Callable[[ResourcePattern, Entries], None]  # a store's news of one resource's entries


class AclStore(Protocol):
    """Where ACLs persist. `update` reads one resource's entries from the store itself (not
    a cache: another broker may have changed them), applies `change`, writes the result
    (none left: the resource is removed) and returns it; raises OSError or the store's own
    error (a ZkError is a ConnectionError) when it cannot."""

    def load(self) -> dict[ResourcePattern, Entries]: ...

    def update(self, pattern: ResourcePattern, change: Callable[[Entries], Entries]) -> Entries: ...


class MemoryAclStore:
    """ACLs that last as long as the process (`storage=memory`, and unit tests)."""

    def __init__(self) -> None:
        self._acls: dict[ResourcePattern, Entries] = {}
        self._lock = threading.Lock()

    def load(self) -> dict[ResourcePattern, Entries]:
        return dict(self._acls)

    def update(self, pattern: ResourcePattern, change: Callable[[Entries], Entries]) -> Entries:
        with self._lock:
            new = change(self._acls.get(pattern, frozenset()))
            if new:
                self._acls[pattern] = new
            else:
                self._acls.pop(pattern, None)
            return new


@dataclass(frozen=True, slots=True)
class _Index:
    """What the checks read, rebuilt on every change (ACLs change rarely, checks run per request)."""

    literal: dict[tuple[ResourceType, str], tuple[AccessControlEntry, ...]]
    prefixed: dict[ResourceType, tuple[tuple[str, tuple[AccessControlEntry, ...]], ...]]

    @classmethod
    def of(cls, acls: dict[ResourcePattern, Entries]) -> _Index:
        literal: dict[tuple[ResourceType, str], tuple[AccessControlEntry, ...]] = {}
        prefixed: dict[ResourceType, list[tuple[str, tuple[AccessControlEntry, ...]]]] = defaultdict(list)
        for pattern, entries in acls.items():
            if pattern.pattern_type == PatternType.LITERAL:
                literal[(pattern.resource_type, pattern.name)] = tuple(sorted(entries))
            elif pattern.pattern_type == PatternType.PREFIXED:
                prefixed[pattern.resource_type].append((pattern.name, tuple(sorted(entries))))
        return cls(literal, {k: tuple(v) for k, v in prefixed.items()})

    def matching(self, resource_type: ResourceType, name: str) -> list[AccessControlEntry]:
        """Every entry of every pattern that applies to the resource `name`."""
        found = list(self.literal.get((resource_type, name), ()))
        if name != WILDCARD:
            found.extend(self.literal.get((resource_type, WILDCARD), ()))
        for prefix, entries in self.prefixed.get(resource_type, ()):
            if name.startswith(prefix):
                found.extend(entries)
        return found


class Authorizer:
    """The ACLs of a broker and Kafka's checks over them.

    Checks read an immutable index swapped in whole, so they need no lock; changes (the
    ACL APIs, on an executor thread; another broker's change, on a ZooKeeper thread) are
    serialized by `_lock`."""

    def __init__(self, store: AclStore, *, super_users: Iterable[str] = (),
                 allow_everyone_if_no_acl_found: bool = False) -> None:
        self.store = store
        self.super_users = frozenset(s.strip() for s in super_users if s.strip())
        self.allow_everyone_if_no_acl_found = allow_everyone_if_no_acl_found
        self._lock = threading.RLock()
        self._acls: dict[ResourcePattern, Entries] = {}
        self._index = _Index.of({})

    def load(self) -> None:
        """Read every ACL from the store (start-up)."""
        acls = self.store.load()
        with self._lock:
            self._acls = {p: e for p, e in acls.items() if e}
            self._index = _Index.of(self._acls)

    def apply(self, pattern: ResourcePattern, entries: Entries) -> None:
        """The entries of one resource as they are now (a store's watch: another broker's change)."""
        with self._lock:
            acls = dict(self._acls)
            if entries:
                acls[pattern] = entries
            else:
                acls.pop(pattern, None)
            self._acls = acls
            self._index = _Index.of(acls)

    # -- checks ----------------------------------------------------------------

    def is_super_user(self, principal: KafkaPrincipal) -> bool:
        return str(principal) in self.super_users

    def authorize(self, principal: KafkaPrincipal, host: str, operation: AclOperation,
                  resource_type: ResourceType, name: str) -> bool:
        """May `principal`, connected from `host`, do `operation` on the resource `name`?"""
        if str(principal) in self.super_users:
            return True
        entries = self._index.matching(resource_type, name)
        if not entries:
            return self.allow_everyone_if_no_acl_found
        principals = (str(principal), WILDCARD_PRINCIPAL)
        implied = _IMPLIED_BY.get(operation)
        allowed = False
        for entry in entries:
            if entry.principal not in principals or entry.host not in (WILDCARD, host):
                continue
            if entry.permission_type == AclPermissionType.DENY:
                if entry.operation in (AclOperation.ALL, operation):
                    return False
            elif not allowed:
                allowed = (entry.operation in (AclOperation.ALL, operation)
                           or (implied is not None and entry.operation in implied))
        return allowed

    def authorize_by_resource_type(self, principal: KafkaPrincipal, host: str, operation: AclOperation,
                                   resource_type: ResourceType) -> bool:
        """Kafka's Authorizer.authorizeByResourceType: may the principal do `operation` on at
        least one resource of the type (KIP-679: WRITE on any topic allows an idempotent
        producer)? An ALLOW counts unless a DENY covers every name it allows."""
        if self.authorize(principal, host, operation, resource_type, "hardcode"):
            return True  # super users, and allow.everyone.if.no.acl.found with no ACL there
        principals = (str(principal), WILDCARD_PRINCIPAL)
        deny_literal: set[str] = set()
        deny_prefixed: set[str] = set()
        allow: list[tuple[PatternType, str]] = []
        for pattern, entries in self._acls.items():
            if pattern.resource_type != resource_type:
                continue
            for entry in entries:
                if (entry.principal not in principals or entry.host not in (WILDCARD, host)
                        or entry.operation not in (operation, AclOperation.ALL)):
                    continue
                if entry.permission_type == AclPermissionType.DENY:
                    if pattern.pattern_type == PatternType.LITERAL and pattern.name == WILDCARD:
                        return False
                    (deny_literal if pattern.pattern_type == PatternType.LITERAL else deny_prefixed).add(
                        pattern.name)
                elif entry.permission_type == AclPermissionType.ALLOW:
                    if pattern.pattern_type == PatternType.LITERAL and pattern.name == WILDCARD:
                        return True
                    allow.append((pattern.pattern_type, pattern.name))
        for pattern_type, name in allow:
            if pattern_type == PatternType.LITERAL and name in deny_literal:
                continue
            if not any(name[:i] in deny_prefixed for i in range(1, len(name) + 1)):
                return True
        return False

    def authorized_operations(self, principal: KafkaPrincipal, host: str, resource_type: ResourceType,
                              name: str) -> int:
        """KIP-430's bit field: bit n set when operation code n is allowed on the resource."""
        bits = 0
        for operation in SUPPORTED_OPERATIONS.get(resource_type, ()):
            if self.authorize(principal, host, operation, resource_type, name):
                bits |= 1 << operation
        return bits

    # -- the ACL APIs ------------------------------------------------------------

    def acls(self, acl_filter: AclBindingFilter) -> list[AclBinding]:
        """DescribeAcls: every stored ACL the filter matches, in a stable order."""
        return sorted(AclBinding(pattern, entry) for pattern, entries in self._acls.items()
                      if acl_filter.matches_pattern(pattern)
                      for entry in entries if acl_filter.matches_entry(entry))

    def create_acls(self, bindings: list[AclBinding]) -> list[AclError | None]:
        """CreateAcls: each binding's result, None when stored (creating an existing ACL is
        no error). Bindings of one resource are written together."""
        results: list[AclError | None] = [None] * len(bindings)
        by_pattern: dict[ResourcePattern, list[int]] = defaultdict(list)
        for i, binding in enumerate(bindings):
            try:
                validate_binding(binding)
            except AclError as exc:
                results[i] = exc
                continue
            by_pattern[binding.pattern].append(i)
        for pattern, indexes in by_pattern.items():
            added = frozenset(bindings[i].entry for i in indexes)

            def add(current: Entries, added: Entries = added) -> Entries:
                return current | added

            try:
                self._update(pattern, add)
            except (OSError, ValueError) as exc:
                for i in indexes:
                    results[i] = AclError("unknown_server_error", f"Failed to create ACL: {exc}")
        return results

    def delete_acls(self, filters: list[AclBindingFilter]) -> list[tuple[AclError | None, list[
            tuple[AclBinding, AclError | None]]]]:
        """DeleteAcls: per filter, its error (an UNKNOWN part) or the ACLs it matched, each
        with the error that kept it (None: deleted)."""
        results: list[tuple[AclError | None, list[tuple[AclBinding, AclError | None]]]] = []
        for acl_filter in filters:
            why = acl_filter.unknown_part()
            if why is not None:
                results.append((AclError("invalid_request", why), []))
                continue
            matched: list[tuple[AclBinding, AclError | None]] = []
            for pattern in sorted(p for p in self._acls if acl_filter.matches_pattern(p)):
                gone: list[AccessControlEntry] = []

                def remove(current: Entries, acl_filter: AclBindingFilter = acl_filter,
                           gone: list[AccessControlEntry] = gone) -> Entries:
                    gone[:] = sorted(e for e in current if acl_filter.matches_entry(e))
                    return current - frozenset(gone)

                try:
                    self._update(pattern, remove)
                except (OSError, ValueError) as exc:
                    error = AclError("unknown_server_error", f"Failed to delete ACL: {exc}")
                    matched.extend((AclBinding(pattern, e), error) for e in sorted(self._acls.get(pattern, ()))
                                   if acl_filter.matches_entry(e))
                    continue
                matched.extend((AclBinding(pattern, e), None) for e in gone)
            results.append((None, matched))
        return results

    def _update(self, pattern: ResourcePattern, change: Callable[[Entries], Entries]) -> None:
        with self._lock:  # one writer at a time, and its view applied before the next one
            self.apply(pattern, self.store.update(pattern, change))


def authorizer_enabled(class_name: str) -> bool:
    """`authorizer.class.name`: empty is no authorizer; Kafka's two class names switch it on;
    anything else is a mistake (ValueError, one sentence)."""
    name = class_name.strip()
    if not name:
        return False
    if name in AUTHORIZER_CLASS_NAMES:
        return True
    raise ValueError(f"authorizer.class.name must be empty or one of {', '.join(AUTHORIZER_CLASS_NAMES)}, "
                     f"not {name!r}")


def parse_super_users(text: str) -> list[str]:
    """`super.users=User:admin;User:bob` (semicolon-separated, as Kafka)."""
    users = [item.strip() for item in text.split(";") if item.strip()]
    for user in users:
        KafkaPrincipal.parse(user)  # ValueError for a malformed one
    return users
