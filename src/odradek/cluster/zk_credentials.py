"""SCRAM users of cluster mode in ZooKeeper, where Kafka keeps them: `/config/users/<user>`.

Each znode is the user's entity config as Kafka writes it,
`{"version":1,"config":{"SCRAM-SHA-512":"salt=...,stored_key=...,server_key=...,iterations=4096"}}`,
under the user name sanitized as Kafka's Sanitizer does (URL-encoded; `*` and `~`
percent-encoded). Every broker watches the children of /config/users and each
user's data, so a user created through any broker can log in on all of them.
Other entries of the same config (quotas) are kept untouched. A change is a
compare-and-set on the znode version, retried when another broker wrote first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

from kazoo.exceptions import BadVersionError, KazooException, NodeExistsError, NoNodeError  # type: ignore[import-untyped]

from odradek.cluster.zk import ZkMetadataStore
from odradek.security.credentials import (
    SCRAM_MECHANISMS,
    CredentialError,
    MemoryCredentialStore,
    ScramCredential,
    apply_change,
    decode_user_config,
)

log = logging.getLogger("odradek.zk")

USERS_PATH = "/config/users"


def sanitize(user: str) -> str:
    """Kafka's Sanitizer.sanitize: Java's URLEncoder, then `*` -> %2A and `+` (a space) -> %20;
    Python's quote already writes those two so, and differs only in leaving `~` alone."""
    return quote(user, safe="").replace("~", "%7E")


def desanitize(node: str) -> str:
    return unquote(node)


class ZkCredentialStore(MemoryCredentialStore):
    """The cache of MemoryCredentialStore, fed by ZooKeeper watches; changes written to ZooKeeper."""

    def __init__(self, store: ZkMetadataStore) -> None:
        super().__init__()
        self.store = store
        self._watched: set[str] = set()
        self._watch_lock = threading.Lock()
        store.ops.ensure_path(USERS_PATH)
        store.zk.ChildrenWatch(USERS_PATH, self._children_changed)

    # -- watches (kazoo's threads) ---------------------------------------------

    def _children_changed(self, children: list[str]) -> None:
        with self._watch_lock:
            new = set(children) - self._watched
            self._watched |= new
        for node in new:
            self.store.zk.DataWatch(f"{USERS_PATH}/{node}",
                                    lambda data, stat, event=None, node=node: self._user_changed(node, data))

    def _user_changed(self, node: str, data: bytes | None) -> bool | None:
        user = desanitize(node)
        if data is None:
            self.replace_user(user, None)
            with self._watch_lock:
                self._watched.discard(node)
            return False  # the znode is gone: stop watching it
        try:
            self.replace_user(user, decode_user_config(data))
        except CredentialError as exc:
            log.warning("ignoring the SCRAM credentials in %s/%s: %s", USERS_PATH, node, exc)
        return None

    # -- changes ---------------------------------------------------------------

    async def alter(self, user: str, upserts: Mapping[str, ScramCredential], deletions: set[str]) -> None:
        loop = asyncio.get_running_loop()
        updated = await loop.run_in_executor(self.store.executor, self._write, user, dict(upserts), set(deletions))
        self.replace_user(user, updated)  # this broker answers with the change already visible

    def _write(self, user: str, upserts: dict[str, ScramCredential], deletions: set[str]) -> dict[str, ScramCredential]:
        ops = self.store.ops
        path = f"{USERS_PATH}/{sanitize(user)}"
        while True:
            try:
                raw, stat = ops.get(path)
                version = stat.version
            except NoNodeError:
                raw, version = b"", -1
            config = _config_of(raw, path)
            current = decode_user_config(raw) if raw else {}
            updated = apply_change(current, upserts, deletions)
            others = {k: v for k, v in config.items() if k not in SCRAM_MECHANISMS}
            doc = {"version": 1, "config": {**others, **{m: c.to_text() for m, c in sorted(updated.items())}}}
            payload = json.dumps(doc).encode()
            try:
                if version < 0:
                    ops.create(path, payload, makepath=True)
                else:
                    ops.set(path, payload, version=version)
            except (NodeExistsError, BadVersionError):
                continue  # another broker changed this user meanwhile: apply ours to theirs
            except KazooException as exc:
                raise CredentialError(f"ZooKeeper refused the change of {path}: {exc!r}") from None
            return updated


def _config_of(raw: bytes, path: str) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        config = json.loads(raw).get("config") or {}
    except (ValueError, AttributeError):
        raise CredentialError(f"{path} is not a user config Kafka could read") from None
    if not isinstance(config, dict):
        raise CredentialError(f"{path} is not a user config Kafka could read")
    return config
