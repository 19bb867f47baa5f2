"""`odradek user ...`: SCRAM users (create, update, list, delete), as `kafka-configs.sh --entity-type users`.

Through Kafka's own APIs (AlterUserScramCredentials / DescribeUserScramCredentials,
KIP-554) with confluent-kafka's AdminClient, so they work against any Kafka 2.7+.
The client salts the password itself and sends only SaltedPassword; the password
is read from --password, --password-stdin or a prompt and never printed.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from odradek.cli.common import Client, fail
from odradek.cli.options import OPTION_GROUP, Connection, with_option_groups

user_app = typer.Typer(no_args_is_help=True, help="SCRAM users: create, update, list, delete.")

MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
MIN_ITERATIONS, MAX_ITERATIONS = 4096, 16384  # what Kafka's brokers accept (ScramMechanism, ZkAdminManager)
DESCRIBE_USER_SCRAM_CREDENTIALS = 50  # api key (KIP-554)
MECHANISM_TYPES = {1: "SCRAM-SHA-256", 2: "SCRAM-SHA-512"}  # Kafka's ScramMechanism type bytes

MechanismOpt = Annotated[str, typer.Option("--mechanism", help="SCRAM-SHA-256 or SCRAM-SHA-512")]
IterationsOpt = Annotated[int, typer.Option("--iterations", help=f"{MIN_ITERATIONS}-{MAX_ITERATIONS}")]
PasswordOpt = Annotated[str | None, typer.Option(
    "--password", help="the password (visible to other local users in ps; prefer --password-stdin or the prompt)")]
PasswordStdinOpt = Annotated[bool, typer.Option("--password-stdin", help="read the password from standard input")]


def _mechanism(name: str) -> Any:
    from confluent_kafka.admin import ScramMechanism  # type: ignore[attr-defined]  # re-exported without __all__

    wanted = name.upper().replace("_", "-")
    if wanted not in MECHANISMS:
        fail(f"--mechanism must be {' or '.join(MECHANISMS)}, not {name!r}", 2)
    return ScramMechanism[wanted.replace("-", "_")]


def _mechanism_name(mechanism: Any) -> str:
    return str(getattr(mechanism, "name", mechanism)).replace("_", "-")


def _password(password: str | None, password_stdin: bool) -> str:
    if password is not None and password_stdin:
        fail("give --password or --password-stdin, not both", 2)
    if password_stdin:
        text = sys.stdin.readline().rstrip("\r\n")
    elif password is not None:
        text = password
    elif sys.stdin.isatty():
        text = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    else:
        fail("no password: give --password-stdin (and pipe it in), --password, or run in a terminal", 2)
    if not text:
        fail("the password is empty", 2)
    return text


def _describe(client: Client, users: list[str] | None, what: str) -> dict[str, list[tuple[str, int]]]:
    """user -> [(mechanism, iterations)] through DescribeUserScramCredentials (all users with
    None), spoken over the wire: librdkafka 2.x frees a stack string when the answer has a
    top-level error (CLUSTER_AUTHORIZATION_FAILED) and the process dies."""
    from kio.schema.errors import ErrorCode

    body = {"users": None if users is None else [{"name": u} for u in users]}
    response = client.call(DESCRIBE_USER_SCRAM_CREDENTIALS, 0, body, what)
    if response.error_code != ErrorCode.none:
        fail(f"{what}: {_error(response.error_code, response.error_message)}")
    found: dict[str, list[tuple[str, int]]] = {}
    for result in response.results:
        if result.error_code == ErrorCode.resource_not_found:
            continue  # a named user without a SCRAM credential
        if result.error_code != ErrorCode.none:
            fail(f"{what}: {_error(result.error_code, result.error_message)}")
        found[str(result.user)] = sorted(
            (MECHANISM_TYPES.get(int(info.mechanism), f"mechanism {info.mechanism}"), int(info.iterations))
            for info in result.credential_infos)
    return found


def _error(code: Any, message: str | None) -> str:
    name = code.name.upper()
    return f"{message.rstrip('.')} ({name})" if message else name


def _existing(client: Client, name: str) -> list[str]:
    """The mechanisms `name` has a credential for (none when the broker knows no such user)."""
    return [m for m, _ in _describe(client, [name], f"cannot describe SCRAM user {name}").get(name, [])]


def _upsert(client: Client, name: str, secret: str, mechanism: str, iterations: int, what: str) -> None:
    from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported without __all__
        ScramCredentialInfo,
        UserScramCredentialUpsertion,
    )

    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        fail(f"--iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}", 2)
    info = ScramCredentialInfo(_mechanism(mechanism), iterations)
    futures = client.admin().alter_user_scram_credentials([UserScramCredentialUpsertion(name, info, secret.encode())])
    client.result(futures[name], f"cannot {what} SCRAM user {name}")


def create_or_update(
    ctx: typer.Context,
    name: str,
    password: PasswordOpt = None,
    password_stdin: PasswordStdinOpt = False,
    mechanism: MechanismOpt = "SCRAM-SHA-512",
    iterations: IterationsOpt = 8192,
    connection: Connection = OPTION_GROUP,
) -> None:
    """`user create` and `user update`: one command under two names, create refusing a user that
    already has a credential of this mechanism."""
    mech = _mechanism_name(_mechanism(mechanism))
    secret = _password(password, password_stdin)
    client = connection.client()
    if ctx.info_name == "create":
        if mech in _existing(client, name):
            fail(f"user {name} already has a {mech} credential; `odradek user update` changes its password")
        _upsert(client, name, secret, mech, iterations, "create")
        Console().print(f"created {mech} user [bold]{name}[/]")
    else:
        _upsert(client, name, secret, mech, iterations, "update")
        Console().print(f"updated the {mech} password of [bold]{name}[/]")


user_app.command("create", help="Create a SCRAM user (refused when it already has a credential of this mechanism).")(
    with_option_groups(create_or_update))
user_app.command("update", help="Set a SCRAM user's password (created when missing, as kafka-configs.sh --alter does).")(
    with_option_groups(create_or_update))


@user_app.command("list")
@with_option_groups
def list_users(connection: Connection = OPTION_GROUP) -> None:
    """Users with a SCRAM credential, their mechanisms and iteration counts."""
    client = connection.client()
    table = Table("USER", "MECHANISM", "ITERATIONS")
    for name, credentials in sorted(_describe(client, None, "cannot list SCRAM users").items()):
        for mechanism, iterations in credentials:
            table.add_row(name, mechanism, str(iterations))
    Console().print(table)


@user_app.command()
@with_option_groups
def delete(
    name: str,
    mechanism: Annotated[str | None, typer.Option(
        "--mechanism", help="only this mechanism's credential (default: all of the user's)")] = None,
    connection: Connection = OPTION_GROUP,
) -> None:
    """Delete a SCRAM user's credentials (its ACLs stay; `odradek acl delete --principal User:NAME`)."""
    from confluent_kafka.admin import UserScramCredentialDeletion  # type: ignore[attr-defined]  # no __all__

    client = connection.client()
    have = _existing(client, name)
    wanted = [_mechanism_name(_mechanism(mechanism))] if mechanism else have
    missing = [m for m in wanted if m not in have]
    if not have or missing:
        fail(f"user {name} has no {missing[0] if missing else 'SCRAM'} credential")
    deletions = [UserScramCredentialDeletion(name, _mechanism(m)) for m in wanted]
    futures = client.admin().alter_user_scram_credentials(deletions)
    client.result(futures[name], f"cannot delete SCRAM user {name}")
    Console().print(f"deleted the {', '.join(wanted)} credential(s) of [bold]{name}[/]")
