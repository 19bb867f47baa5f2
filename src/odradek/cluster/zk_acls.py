"""ACLs in ZooKeeper, in the layout of Kafka's AclAuthorizer, so every broker sees them.

    /kafka-acl/<ResourceType>/<name>                      LITERAL patterns (and the `*` wildcard)
    /kafka-acl-extended/prefixed/<ResourceType>/<name>    PREFIXED patterns
        {"version": 1, "acls": [{"principal": "User:alice", "permissionType": "Allow",
                                 "operation": "Read", "host": "*"}]}
    /kafka-acl-changes/acl_changes_<seq>                  "Topic:orders" (a literal resource changed)
    /kafka-acl-extended-changes/acl_changes_<seq>         {"version": 1, "resourceType": "Topic",
                                                           "name": "app-", "patternType": "Prefixed"}

A change is a read-modify-write of the resource's znode at the version read (another
broker's concurrent change makes it read again), followed by a sequential change
notification. Every broker watches the two change paths and re-reads the resources
named there (Kafka's ZkNodeChangeNotificationListener); notifications older than 15
minutes are purged by whoever sees them. A `/` or `%` in a name is percent-encoded in
the znode name (`.` and `..` too), the only names ZooKeeper could not hold.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from kazoo.exceptions import (  # type: ignore[import-untyped]
    BadVersionError,
    KazooException,
    NodeExistsError,
    NoNodeError,
)

from odradek.cluster.zk import ZkError, ZkMetadataStore
from odradek.security.acl_store import entries_from_json, entries_to_json
from odradek.security.authorizer import (
    Entries,
    OnAclChange,
    PatternType,
    ResourcePattern,
    ResourceType,
    from_kafka_name,
    kafka_name,
)

log = logging.getLogger("odradek.zk.acls")

LITERAL_ROOT = "/kafka-acl"
PREFIXED_ROOT = "/kafka-acl-extended/prefixed"
LITERAL_CHANGES = "/kafka-acl-changes"
EXTENDED_CHANGES = "/kafka-acl-extended-changes"
CHANGE_PREFIX = "acl_changes_"
CHANGE_EXPIRATION_MS = 15 * 60 * 1000  # Kafka's ZkNodeChangeNotificationListener default
MAX_WRITE_ATTEMPTS = 50



def _encode(name: str) -> str:
    if name in (".", ".."):
        return name.replace(".", "%2E")
    return name.replace("%", "%25").replace("/", "%2F")


def resource_path(pattern: ResourcePattern) -> str:
    root = LITERAL_ROOT if pattern.pattern_type == PatternType.LITERAL else PREFIXED_ROOT
    return f"{root}/{kafka_name(pattern.resource_type)}/{_encode(pattern.name)}"


def change_notification(pattern: ResourcePattern) -> tuple[str, bytes]:
    """Where the change of `pattern` is announced, and what the notification says."""
    if pattern.pattern_type == PatternType.LITERAL:
        return LITERAL_CHANGES, f"{kafka_name(pattern.resource_type)}:{pattern.name}".encode()
    return EXTENDED_CHANGES, json.dumps({
        "version": 1, "resourceType": kafka_name(pattern.resource_type), "name": pattern.name,
        "patternType": kafka_name(pattern.pattern_type)}).encode()


def parse_notification(root: str, raw: bytes) -> ResourcePattern:
    """The resource a change notification names; ValueError or KeyError if unreadable."""
    if root == LITERAL_CHANGES:
        kind, sep, name = raw.decode().partition(":")
        if not sep:
            raise ValueError(f"{raw!r} is not ResourceType:name")
        return ResourcePattern(from_kafka_name(ResourceType, kind), name, PatternType.LITERAL)
    d = json.loads(raw)
    return ResourcePattern(from_kafka_name(ResourceType, str(d["resourceType"])), str(d["name"]),
                           from_kafka_name(PatternType, str(d["patternType"])))


class ZkAclStore:
    """The AclStore of cluster mode, over the broker's ZooKeeper session."""

    def __init__(self, store: ZkMetadataStore) -> None:
        self.store = store
        self.ops = store.ops

    # -- reading -------------------------------------------------------------

    def load(self) -> dict[ResourcePattern, Entries]:
        acls: dict[ResourcePattern, Entries] = {}
        try:
            for root, pattern_type in ((LITERAL_ROOT, PatternType.LITERAL), (PREFIXED_ROOT, PatternType.PREFIXED)):
                for type_name in self._children(root):
                    try:
                        resource_type = from_kafka_name(ResourceType, type_name)
                    except ValueError:
                        log.warning("ignoring %s/%s: not a resource type", root, type_name)
                        continue
                    for child in self._children(f"{root}/{type_name}"):
                        pattern = ResourcePattern(resource_type, unquote(child), pattern_type)
                        entries = self._read(resource_path(pattern))[0]
                        if entries:
                            acls[pattern] = entries
        except KazooException as exc:
            raise ZkError(f"cannot read the ACLs from ZooKeeper: {exc!r}") from None
        return acls

    def _children(self, path: str) -> list[str]:
        try:
            return self.ops.get_children(path)
        except NoNodeError:
            return []

    def _read(self, path: str, get: Callable[[str], tuple[bytes, Any]] | None = None) -> tuple[Entries, int | None]:
        """A resource's entries and its znode's version (None: no znode)."""
        try:
            raw, stat = (get or self.ops.get)(path)
        except NoNodeError:
            return frozenset(), None
        try:
            return entries_from_json(raw), int(stat.version)
        except (ValueError, KeyError, TypeError) as exc:
            raise ZkError(f"{path} holds unreadable ACLs ({exc})") from None

    # -- writing -------------------------------------------------------------

    def update(self, pattern: ResourcePattern, change: Callable[[Entries], Entries]) -> Entries:
        path = resource_path(pattern)
        try:
            for _ in range(MAX_WRITE_ATTEMPTS):
                current, version = self._read(path)
                new = change(current)
                if new == current:
                    return current
                try:
                    if not new:
                        self.ops.delete(path, version=version if version is not None else -1)
                    elif version is None:
                        self.ops.create(path, entries_to_json(new), makepath=True)
                    else:
                        self.ops.set(path, entries_to_json(new), version)
                except (BadVersionError, NodeExistsError, NoNodeError):
                    continue  # another broker changed it in between: read again
                root, data = change_notification(pattern)
                self.ops.create(f"{root}/{CHANGE_PREFIX}", data, makepath=True, sequence=True)
                return new
        except KazooException as exc:
            raise ZkError(f"cannot write the ACLs of {pattern} to ZooKeeper: {exc!r}") from None
        raise ZkError(f"the ACLs of {pattern} kept changing under {MAX_WRITE_ATTEMPTS} attempts to write them")

    # -- watching --------------------------------------------------------------

    def watch(self, on_change: OnAclChange) -> None:
        """Call `on_change(pattern, entries)` (on a ZooKeeper thread) for every change any
        broker announces from now on; register before load() so none is missed."""
        for root in (LITERAL_CHANGES, EXTENDED_CHANGES):
            self.ops.ensure_path(root)
            self._watch(root, on_change)

    def _watch(self, root: str, on_change: OnAclChange) -> None:
        seen: set[str] | None = None

        def changed(children: list[str]) -> None:
            nonlocal seen
            if seen is None:  # registering: load() reads what is there now
                seen = set(children)
                for child in children:
                    self._purge_if_old(root, child)
                return
            done = set(seen)
            for child in sorted(c for c in children if c not in done):  # sequence order
                try:
                    self._notified(root, child, on_change)
                except KazooException as exc:  # connection trouble: the watch fires again on reconnect
                    log.debug("reading ACL change %s/%s: %r", root, child, exc)
                    break
                done.add(child)
            seen = done & set(children)

        self.store.zk.ChildrenWatch(root, changed)

    def _notified(self, root: str, child: str, on_change: OnAclChange) -> None:
        try:
            raw, stat = self.store.zk.get(f"{root}/{child}")
        except NoNodeError:
            return
        try:
            pattern = parse_notification(root, raw)
            entries = self._read(resource_path(pattern), self.store.zk.get)[0]
        except (ValueError, KeyError, ZkError) as exc:
            log.warning("ignoring ACL change %s/%s: %s", root, child, exc)
        else:
            on_change(pattern, entries)
        if time.time() * 1000 - stat.ctime > CHANGE_EXPIRATION_MS:
            self._delete_quietly(f"{root}/{child}")

    def _purge_if_old(self, root: str, child: str) -> None:
        try:
            _, stat = self.store.zk.get(f"{root}/{child}")
        except KazooException:  # NoNodeError among them
            return
        if time.time() * 1000 - stat.ctime > CHANGE_EXPIRATION_MS:
            self._delete_quietly(f"{root}/{child}")

    def _delete_quietly(self, path: str) -> None:
        try:
            self.store.zk.delete(path)
        except KazooException:  # gone already (NoNodeError), or ZooKeeper away: the next one purges it
            pass
