"""The first SCRAM user of a fresh deployment, created at start when it does not exist.

A secured cluster needs one user before anyone can log in to create the others.
Kafka's KRaft brokers get it from `kafka-storage format --add-scram`; a ZooKeeper
Kafka from kafka-configs.sh talking to ZooKeeper. odradek reads it from the
environment (a Kubernetes Secret's keys, say):

    ODRADEK_INITIAL_SCRAM_USER=admin
    ODRADEK_INITIAL_SCRAM_PASSWORD=...
    ODRADEK_INITIAL_SCRAM_MECHANISMS=SCRAM-SHA-512        (default; comma-separated)

At start, each mechanism the user has no credential for is created (salted and
hashed as AlterUserScramCredentials would store it) in the broker's credential
store: the data dir's file, or ZooKeeper's /config/users in cluster mode. A
credential that exists is left alone, so a password changed later through
AlterUserScramCredentials stays changed. Making the user a super user is
`super.users`' job, not this module's. `odradek serve` registers the start hook.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from odradek.config import ConfigError
from odradek.security.credentials import (
    SCRAM_MECHANISMS,
    CredentialError,
    CredentialStore,
    ScramCredential,
    make_credential,
)

log = logging.getLogger("odradek.security")

ENV_USER = "ODRADEK_INITIAL_SCRAM_USER"
ENV_PASSWORD = "ODRADEK_INITIAL_SCRAM_PASSWORD"
ENV_MECHANISMS = "ODRADEK_INITIAL_SCRAM_MECHANISMS"
ENV_NAMES = (ENV_USER, ENV_PASSWORD, ENV_MECHANISMS)
ITERATIONS = 8192


@dataclass(frozen=True, slots=True)
class InitialUser:
    name: str
    password: str = field(repr=False)
    mechanisms: tuple[str, ...]


def initial_user(environ: Mapping[str, str] | None = None) -> InitialUser | None:
    """The user the environment asks for, or None; a half-given one is a ConfigError."""
    env = os.environ if environ is None else environ
    name = env.get(ENV_USER, "").strip()
    password = env.get(ENV_PASSWORD, "")
    if not name and not password:
        return None
    if not name:
        raise ConfigError(f"{ENV_PASSWORD} is set but {ENV_USER} is not")
    if not password:
        raise ConfigError(f"{ENV_USER}={name} needs a non-empty {ENV_PASSWORD}")
    mechanisms = tuple(m.strip().upper() for m in env.get(ENV_MECHANISMS, "SCRAM-SHA-512").split(",") if m.strip())
    unknown = [m for m in mechanisms if m not in SCRAM_MECHANISMS]
    if unknown or not mechanisms:
        raise ConfigError(f"{ENV_MECHANISMS} must list {' and/or '.join(SCRAM_MECHANISMS)}, "
                          f"not {', '.join(unknown) or 'nothing'}")
    return InitialUser(name, password, mechanisms)


async def ensure(store: CredentialStore, user: InitialUser) -> list[str]:
    """Create the credentials `user` lacks; the mechanisms created."""
    missing = [m for m in user.mechanisms if store.credential(user.name, m) is None]
    if not missing:
        return []
    # PBKDF2 with 8192 iterations takes milliseconds; off the loop all the same
    made: dict[str, ScramCredential] = dict(zip(missing, await asyncio.gather(*(
        asyncio.to_thread(make_credential, m, user.password, ITERATIONS) for m in missing)), strict=True))
    await store.alter(user.name, made, set())
    return missing


async def _create(broker: Any, user: InitialUser) -> None:
    try:
        created = await ensure(broker.credentials, user)
    except CredentialError as exc:
        log.error("could not create the initial SCRAM user %s: %s", user.name, exc)
        return
    if created:
        log.info("created the initial SCRAM user %s (%s)", user.name, ", ".join(created))


def _start(server: Any) -> list[asyncio.Task[None]]:
    try:
        user = initial_user()
    except ConfigError as exc:  # `odradek serve` checks it before starting; an embedded broker logs it
        log.error("no initial SCRAM user: %s", exc)
        return []
    if user is None:
        return []
    return [asyncio.get_running_loop().create_task(_create(server.broker, user))]


def register() -> None:
    """Add the start hook to the server (once)."""
    from odradek.server import app

    if _start not in app.START_HOOKS:
        app.START_HOOKS.append(_start)
