"""ACLs on disk for a single node: `<data dir>/acls.json`, rewritten atomically.

The JSON is the one Kafka's AclAuthorizer keeps per resource under ZooKeeper's
`/kafka-acl` (`{"principal": "User:alice", "permissionType": "Allow", "operation":
"Read", "host": "*"}`), with each entry's resource beside it. Every change writes a new
file, fsyncs it and renames it over the old one, so a crash leaves the old ACLs or the
new ones, never a torn file. Cluster mode keeps them in ZooKeeper instead
(cluster/zk_acls.py), with the same entry JSON.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from odradek.security.authorizer import (
    AccessControlEntry,
    AclOperation,
    AclPermissionType,
    Entries,
    PatternType,
    ResourcePattern,
    ResourceType,
    from_kafka_name,
    kafka_name,
)

ACL_FILE = "acls.json"


def entry_to_json(entry: AccessControlEntry) -> dict[str, str]:
    """One entry as AclAuthorizer writes it in ZooKeeper."""
    return {"principal": entry.principal, "permissionType": kafka_name(entry.permission_type),
            "operation": kafka_name(entry.operation), "host": entry.host}


def entry_from_json(d: dict[str, Any]) -> AccessControlEntry:
    """The reverse of entry_to_json; ValueError or KeyError for a malformed one."""
    return AccessControlEntry(str(d["principal"]), str(d["host"]),
                              from_kafka_name(AclOperation, str(d["operation"])),
                              from_kafka_name(AclPermissionType, str(d["permissionType"])))


def entries_to_json(entries: Entries) -> bytes:
    """A resource's entries as one `/kafka-acl/<type>/<name>` znode holds them."""
    return json.dumps({"version": 1, "acls": [entry_to_json(e) for e in sorted(entries)]}).encode()


def entries_from_json(raw: bytes) -> Entries:
    if not raw:
        return frozenset()
    return frozenset(entry_from_json(d) for d in json.loads(raw).get("acls", []))


class FileAclStore:
    """The single node's AclStore; the broker process is its only writer."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / ACL_FILE
        self._acls: dict[ResourcePattern, Entries] = {}
        self._lock = threading.Lock()

    def load(self) -> dict[ResourcePattern, Entries]:
        """Read the file (none yet: no ACLs); OSError, in one sentence, for an unreadable one."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raw = b""
        acls: dict[ResourcePattern, set[AccessControlEntry]] = {}
        if raw:
            try:
                for d in json.loads(raw)["acls"]:
                    pattern = ResourcePattern(from_kafka_name(ResourceType, str(d["resourceType"])),
                                              str(d["name"]),
                                              from_kafka_name(PatternType, str(d["patternType"])))
                    acls.setdefault(pattern, set()).add(entry_from_json(d))
            except (ValueError, KeyError, TypeError) as exc:
                raise OSError(f"{self.path} is not a readable ACL file ({type(exc).__name__}: {exc})") from None
        with self._lock:
            self._acls = {p: frozenset(e) for p, e in acls.items()}
            return dict(self._acls)

    def update(self, pattern: ResourcePattern, change: Callable[[Entries], Entries]) -> Entries:
        with self._lock:
            current = self._acls.get(pattern, frozenset())
            new = change(current)
            if new == current:
                return current
            acls = dict(self._acls)
            if new:
                acls[pattern] = new
            else:
                acls.pop(pattern, None)
            self._write(acls)
            self._acls = acls
            return new

    def _write(self, acls: dict[ResourcePattern, Entries]) -> None:
        rows = [
            {"resourceType": kafka_name(p.resource_type), "patternType": kafka_name(p.pattern_type),
             "name": p.name, **entry_to_json(e)}
            for p in sorted(acls) for e in sorted(acls[p])
        ]
        data = json.dumps({"version": 1, "acls": rows}, indent=1).encode()
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself survives a power cut
        finally:
            os.close(fd)
