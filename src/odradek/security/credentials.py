"""SCRAM credentials (Kafka's ScramCredential) and the stores that keep them.

Kafka never stores a SCRAM password: per user and mechanism it keeps the salt,
the iteration count, StoredKey = H(HMAC(SaltedPassword, "Client Key")) and
ServerKey = HMAC(SaltedPassword, "Server Key") (RFC 5802). The admin client
salts the password itself and sends SaltedPassword (AlterUserScramCredentials,
KIP-554), so the password never reaches the broker either. The text form is
Kafka's own, `salt=<b64>,stored_key=<b64>,server_key=<b64>,iterations=4096`,
and a user's entry is the JSON Kafka writes to ZooKeeper's `/config/users/<user>`:
`{"version":1,"config":{"SCRAM-SHA-512":"salt=...,..."}}`.

`CredentialStore` is what the SASL mechanisms and the admin handlers ask.
`MemoryCredentialStore` keeps users in a dict, `FileCredentialStore` in one
JSON file of the data dir (single-node mode, written atomically). The ZooKeeper
store of cluster mode lives with the ZooKeeper client (cluster/): it subclasses
`MemoryCredentialStore`, feeds it from watches and writes through ZooKeeper.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SCRAM_MECHANISMS: dict[str, str] = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
# AlterUserScramCredentials / DescribeUserScramCredentials number the mechanisms (Kafka's ScramMechanism)
MECHANISM_TYPES: dict[int, str] = {1: "SCRAM-SHA-256", 2: "SCRAM-SHA-512"}
TYPE_OF_MECHANISM: dict[str, int] = {name: kind for kind, name in MECHANISM_TYPES.items()}
MIN_ITERATIONS = 4096  # Kafka's ScramMechanism.minIterations, for both mechanisms
MAX_ITERATIONS = 16384  # AlterUserScramCredentials refuses more (Kafka's ZkAdminManager)


class CredentialError(ValueError):
    """A credential that cannot be read or stored; one sentence."""


class CredentialNotFound(KeyError):
    """A deletion names a (user, mechanism) that has no credential."""


@dataclass(frozen=True, slots=True)
class ScramCredential:
    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int

    def __repr__(self) -> str:  # keys are as good as a password against this broker: never print them
        return f"ScramCredential(iterations={self.iterations})"

    def to_text(self) -> str:
        """Kafka's ScramCredentialUtils.credentialToString."""
        b64 = base64.b64encode
        return (f"salt={b64(self.salt).decode()},stored_key={b64(self.stored_key).decode()},"
                f"server_key={b64(self.server_key).decode()},iterations={self.iterations}")

    @classmethod
    def from_text(cls, text: str) -> ScramCredential:
        fields: dict[str, str] = {}
        for item in text.split(","):
            key, sep, value = item.partition("=")
            if not sep:
                raise CredentialError("a SCRAM credential is salt=...,stored_key=...,server_key=...,iterations=N")
            fields[key.strip()] = value.strip()
        try:
            return cls(
                base64.b64decode(fields["salt"], validate=True),
                base64.b64decode(fields["stored_key"], validate=True),
                base64.b64decode(fields["server_key"], validate=True),
                int(fields["iterations"]),
            )
        except (KeyError, ValueError, binascii.Error) as exc:
            raise CredentialError(f"unreadable SCRAM credential ({type(exc).__name__}: {exc})") from None


def credential_from_salted_password(
    mechanism: str, salt: bytes, salted_password: bytes, iterations: int
) -> ScramCredential:
    """What AlterUserScramCredentials stores: the keys derived from the client's SaltedPassword."""
    digest = SCRAM_MECHANISMS[mechanism]
    client_key = hmac.new(salted_password, b"Client Key", digest).digest()
    stored_key = hashlib.new(digest, client_key).digest()
    server_key = hmac.new(salted_password, b"Server Key", digest).digest()
    return ScramCredential(salt, stored_key, server_key, iterations)


def salted_password(mechanism: str, password: str, salt: bytes, iterations: int) -> bytes:
    """RFC 5802's Hi(): PBKDF2 with the mechanism's HMAC (what an admin client sends)."""
    return hashlib.pbkdf2_hmac(SCRAM_MECHANISMS[mechanism], password.encode(), salt, iterations)


def make_credential(mechanism: str, password: str, iterations: int = MIN_ITERATIONS,
                    salt: bytes | None = None) -> ScramCredential:
    salt = salt if salt is not None else secrets.token_bytes(32)
    return credential_from_salted_password(
        mechanism, salt, salted_password(mechanism, password, salt, iterations), iterations
    )


Users = dict[str, dict[str, ScramCredential]]


def encode_user_config(credentials: Mapping[str, ScramCredential]) -> bytes:
    """Kafka's `/config/users/<user>` znode: the user's entity config, one entry per mechanism."""
    config = {mechanism: cred.to_text() for mechanism, cred in sorted(credentials.items())}
    return json.dumps({"version": 1, "config": config}).encode()


def decode_user_config(raw: bytes) -> dict[str, ScramCredential]:
    """The SCRAM entries of a user's entity config (quota entries and others are skipped)."""
    try:
        config = json.loads(raw or b"{}").get("config") or {}
    except (ValueError, AttributeError) as exc:
        raise CredentialError(f"unreadable user config ({exc})") from None
    if not isinstance(config, dict):
        raise CredentialError("a user config's \"config\" is not an object")
    return {str(k): ScramCredential.from_text(str(v)) for k, v in config.items() if k in SCRAM_MECHANISMS}


def apply_change(
    current: Mapping[str, ScramCredential], upserts: Mapping[str, ScramCredential], deletions: set[str]
) -> dict[str, ScramCredential]:
    """A user's credentials after one AlterUserScramCredentials; a deletion of a mechanism the
    user does not have raises CredentialNotFound (Kafka answers RESOURCE_NOT_FOUND)."""
    missing = sorted(m for m in deletions if m not in current)
    if missing:
        raise CredentialNotFound(", ".join(missing))
    updated = {m: c for m, c in current.items() if m not in deletions}
    updated.update(upserts)
    return updated


class CredentialStore:
    """The SCRAM users of the cluster. Lookups are synchronous (a login must not wait);
    changes are async because the ZooKeeper store writes over the network."""

    def credential(self, user: str, mechanism: str) -> ScramCredential | None:
        raise NotImplementedError

    def users(self) -> Users:
        """A snapshot: user -> mechanism -> credential."""
        raise NotImplementedError

    async def alter(self, user: str, upserts: Mapping[str, ScramCredential], deletions: set[str]) -> None:
        """Upsert and delete credentials of one user at once (CredentialNotFound, CredentialError)."""
        raise NotImplementedError


class MemoryCredentialStore(CredentialStore):
    """Users in a dict that is replaced, never mutated, so readers on other threads need no lock."""

    def __init__(self, users: Users | None = None) -> None:
        self._users: Users = dict(users or {})
        self._lock = asyncio.Lock()
        self._replace_lock = threading.Lock()  # watches replace users from other threads

    def credential(self, user: str, mechanism: str) -> ScramCredential | None:
        return self._users.get(user, {}).get(mechanism)

    def users(self) -> Users:
        return self._users

    def replace_user(self, user: str, credentials: Mapping[str, ScramCredential] | None) -> None:
        """Set (or with None/empty, drop) one user's credentials in the cache."""
        with self._replace_lock:
            users = dict(self._users)
            if credentials:
                users[user] = dict(credentials)
            else:
                users.pop(user, None)
            self._users = users

    async def alter(self, user: str, upserts: Mapping[str, ScramCredential], deletions: set[str]) -> None:
        async with self._lock:
            updated = apply_change(self._users.get(user, {}), upserts, deletions)
            self._persist(user, updated)
            self.replace_user(user, updated)

    def _persist(self, user: str, credentials: Mapping[str, ScramCredential]) -> None:
        """Write the change durably before the cache shows it (nothing to write in memory)."""


FILE_NAME = "scram-credentials.json"


class FileCredentialStore(MemoryCredentialStore):
    """Single-node mode: `<data dir>/scram-credentials.json`, `{"version": 1, "users":
    {"alice": {"SCRAM-SHA-512": "salt=...,stored_key=...,server_key=...,iterations=4096"}}}`,
    replaced atomically (temporary file, fsync, rename, fsync of the directory) and readable
    by its owner only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(self._read(path))

    @staticmethod
    def _read(path: Path) -> Users:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise CredentialError(f"cannot read {path}: {exc.strerror}") from None
        try:
            doc = json.loads(raw)
            entries = doc["users"]
            return {
                str(user): {m: ScramCredential.from_text(str(text)) for m, text in mechanisms.items()
                            if m in SCRAM_MECHANISMS}
                for user, mechanisms in entries.items()
            }
        except (ValueError, KeyError, TypeError, AttributeError, CredentialError) as exc:
            raise CredentialError(f"{path} is not a readable SCRAM credential file ({exc})") from None

    def _persist(self, user: str, credentials: Mapping[str, ScramCredential]) -> None:
        users = {**self._users, user: dict(credentials)}
        doc = {
            "version": 1,
            "users": {
                name: {m: c.to_text() for m, c in sorted(creds.items())}
                for name, creds in sorted(users.items()) if creds
            },
        }
        write_atomically(self.path, json.dumps(doc, indent=1).encode())


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data`: a crash leaves the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

