"""DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554): SCRAM users.

The rules and messages are Kafka's (ZkAdminManager): describe lists users that
have a SCRAM credential (all of them for a null or empty list), RESOURCE_NOT_FOUND
for a named user without one, DUPLICATE_RESOURCE for a user named twice. Alter
checks every user first: an empty name or too few (< 4096) or too many (> 16384)
iterations is UNACCEPTABLE_CREDENTIAL, an unknown mechanism UNSUPPORTED_SASL_MECHANISM,
the same user and mechanism twice DUPLICATE_RESOURCE, deleting a credential that does
not exist RESOURCE_NOT_FOUND; each remaining user is changed at once (upserts and
deletions together) and answered on its own. The client salts the password
(SaltedPassword = Hi(password, salt, iterations)); the broker keeps only the salt,
StoredKey and ServerKey derived from it. odradek also refuses salts shorter than 12
bytes and a SaltedPassword of the wrong length for its hash (the SCRAM exchange
could never succeed with them).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.security.authorizer import AclOperation, ResourceType
from odradek.security.credentials import (
    MAX_ITERATIONS,
    MECHANISM_TYPES,
    MIN_ITERATIONS,
    SCRAM_MECHANISMS,
    TYPE_OF_MECHANISM,
    CredentialError,
    CredentialNotFound,
    ScramCredential,
    credential_from_salted_password,
)
from odradek.server.dispatcher import RequestContext

log = logging.getLogger("odradek.handlers")

MIN_SALT_BYTES = 12
_NOT_FOUND_DESCRIBE = "Attempt to describe a user credential that does not exist"
_NOT_FOUND_DELETE = "Attempt to delete a user credential that does not exist"
_UNKNOWN_MECHANISM = "Unknown SCRAM mechanism"
_NOT_AUTHORIZED = "Cluster authorization failed."


async def describe_user_scram_credentials(ctx: RequestContext, request: Any) -> Any:
    if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.CLUSTER):  # KafkaApis: DESCRIBE on the cluster
        denied = ErrorCode.cluster_authorization_failed
        return ctx.respond(error_code=denied, error_message=_NOT_AUTHORIZED, results=[
            {"user": u.name, "error_code": denied, "error_message": _NOT_AUTHORIZED, "credential_infos": []}
            for u in request.users or ()])
    users = ctx.broker.credentials.users()
    results: list[dict[str, Any]] = []

    def describe(user: str) -> dict[str, Any]:
        infos = [{"mechanism": TYPE_OF_MECHANISM[m], "iterations": c.iterations}
                 for m, c in sorted(users.get(user, {}).items(), key=lambda item: TYPE_OF_MECHANISM[item[0]])]
        return {"user": user, "error_code": ErrorCode.none, "error_message": None, "credential_infos": infos}

    names = [u.name for u in request.users or ()]
    if not names:
        results = [describe(user) for user in sorted(users) if users[user]]
    else:
        counts = Counter(names)
        duplicated = [name for name, n in counts.items() if n > 1]
        for name in duplicated:
            results.append({"user": name, "error_code": ErrorCode.duplicate_resource, "credential_infos": [],
                            "error_message": f"Cannot describe SCRAM credentials for the same user twice "
                                             f"in a single request: {name}"})
        for name in dict.fromkeys(names):
            if name in duplicated:
                continue
            if users.get(name):
                results.append(describe(name))
            else:
                results.append({"user": name, "error_code": ErrorCode.resource_not_found, "credential_infos": [],
                                "error_message": f"{_NOT_FOUND_DESCRIBE}: {name}"})
    return ctx.respond(throttle_time=0, error_code=ErrorCode.none, error_message=None, results=results)


def _upsertion_problem(upsertion: Any) -> tuple[ErrorCode, str] | None:
    mechanism = MECHANISM_TYPES.get(upsertion.mechanism)
    if not upsertion.name:
        return ErrorCode.unacceptable_credential, "Username must not be empty"
    if mechanism is None:
        return ErrorCode.unsupported_sasl_mechanism, _UNKNOWN_MECHANISM
    if upsertion.iterations > MAX_ITERATIONS:
        return ErrorCode.unacceptable_credential, "Too many iterations"
    if upsertion.iterations < MIN_ITERATIONS:
        return ErrorCode.unacceptable_credential, "Too few iterations"
    if len(upsertion.salt) < MIN_SALT_BYTES:
        return ErrorCode.unacceptable_credential, f"Salt must be at least {MIN_SALT_BYTES} bytes"
    size = hashlib.new(SCRAM_MECHANISMS[mechanism]).digest_size
    if len(upsertion.salted_password) != size:
        return ErrorCode.unacceptable_credential, f"Salted password must be {size} bytes for {mechanism}"
    return None


def _deletion_problem(deletion: Any) -> tuple[ErrorCode, str] | None:
    if not deletion.name:
        return ErrorCode.unacceptable_credential, "Username must not be empty"
    if deletion.mechanism not in MECHANISM_TYPES:
        return ErrorCode.unsupported_sasl_mechanism, _UNKNOWN_MECHANISM
    return None


async def alter_user_scram_credentials(ctx: RequestContext, request: Any) -> Any:
    if not ctx.authorized(AclOperation.ALTER, ResourceType.CLUSTER):  # KafkaApis: ALTER on the cluster
        return ctx.respond(results=[
            {"user": name, "error_code": ErrorCode.cluster_authorization_failed, "error_message": _NOT_AUTHORIZED}
            for name in dict.fromkeys(item.name for item in (*request.deletions, *request.upsertions))])
    store = ctx.broker.credentials
    results: list[dict[str, Any]] = []

    def result(user: str, code: ErrorCode, message: str | None = None) -> None:
        results.append({"user": user, "error_code": code, "error_message": message})

    # the first problem of each user fails all of that user's changes
    invalid: dict[str, tuple[ErrorCode, str]] = {}
    for item, problem in [*((u, _upsertion_problem(u)) for u in request.upsertions),
                          *((d, _deletion_problem(d)) for d in request.deletions)]:
        if problem is not None and item.name not in invalid:
            invalid[item.name] = problem
    for user, (code, message) in invalid.items():
        result(user, code, message)

    pairs = Counter((item.name, item.mechanism) for item in (*request.upsertions, *request.deletions))
    duplicated = list(dict.fromkeys(name for (name, _), n in pairs.items() if n > 1 and name not in invalid))
    for user in duplicated:
        result(user, ErrorCode.duplicate_resource, "A user credential cannot be altered twice in the same request")

    skip = set(invalid) | set(duplicated)
    upserts: dict[str, dict[str, ScramCredential]] = defaultdict(dict)
    deletions: dict[str, set[str]] = defaultdict(set)
    for u in request.upsertions:
        if u.name not in skip:
            mechanism = MECHANISM_TYPES[u.mechanism]
            upserts[u.name][mechanism] = credential_from_salted_password(
                mechanism, bytes(u.salt), bytes(u.salted_password), int(u.iterations))
    for d in request.deletions:
        if d.name not in skip:
            deletions[d.name].add(MECHANISM_TYPES[d.mechanism])
    for user in dict.fromkeys([*upserts, *deletions]):
        try:
            await store.alter(user, upserts.get(user, {}), deletions.get(user, set()))
        except CredentialNotFound:
            result(user, ErrorCode.resource_not_found, _NOT_FOUND_DELETE)
            continue
        except (CredentialError, OSError) as exc:
            log.warning("AlterUserScramCredentials: cannot store the credentials of %r: %s", user, exc)
            result(user, ErrorCode.unknown_server_error, f"Cannot store the credentials: {exc}")
            continue
        changed = [f"+{m}" for m in sorted(upserts.get(user, {}))] + [f"-{m}" for m in sorted(deletions.get(user, ()))]
        log.info("SCRAM credentials of user %r changed by %s: %s", user, ctx.session.principal, " ".join(changed))
        result(user, ErrorCode.none)
    return ctx.respond(throttle_time=0, results=results)
