"""`odradek console`: the web console (odradek.console) for any Kafka cluster.

It listens on loopback unless told otherwise: a non-loopback --listen is refused
without --expose, since whoever reaches the console acts on the cluster with its
client configuration. With a SASL configuration that names no user, the page asks for
credentials and each login acts as that principal.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from odradek.cli.common import (
    BootstrapOption,
    Client,
    ClientPropertyOption,
    CommandConfigOption,
    connect,
    fail,
)

if TYPE_CHECKING:
    from odradek.config import BrokerConfig

DEFAULT_LISTEN = "127.0.0.1:8080"


def parse_listen(text: str, expose: bool) -> tuple[str, int]:
    """HOST:PORT of the console, refused (one sentence, exit 2) when it is not loopback and
    --expose was not given."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        fail(f"--listen {text!r} is not HOST:PORT, such as {DEFAULT_LISTEN}", 2)
    if not expose and not is_loopback(host):
        fail(f"--listen {text} is not a loopback address: anyone who reaches the console acts on the cluster "
             "with its credentials; add --expose to serve it there anyway", 2)
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def console(
    bootstrap: str = BootstrapOption,
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT of the console (loopback unless --expose)")]
    = DEFAULT_LISTEN,
    expose: Annotated[bool, typer.Option("--expose", help="allow a --listen address that is not loopback")] = False,
    command_config: Path | None = CommandConfigOption,
    client_property: list[str] | None = ClientPropertyOption,
    parent_pid: Annotated[int | None, typer.Option("--parent-pid", hidden=True)] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
) -> None:
    """A web console for any Kafka cluster: topics, messages, groups, transactions, users and ACLs."""
    from odradek.console.session import SASL_MECHANISMS, login_properties, needs_login
    from odradek.console.web import Console, serve

    host, port = parse_listen(listen, expose)
    client = connect(bootstrap, command_config, client_property)
    # TLS files and the SASL mechanism are checked now, not at the first page (a login's own
    # credentials stand in with a placeholder user; nothing connects here)
    if needs_login(client.properties):
        mechanism = (client.properties.values.get("sasl.mechanism") or client.properties.values.get(
            "sasl.mechanisms") or "SCRAM-SHA-512").upper()
        if mechanism not in SASL_MECHANISMS:
            fail(f"the console logs in with {', '.join(SASL_MECHANISMS)}, not sasl.mechanism {mechanism}", 2)
        Client(client.bootstrap, login_properties(client.properties, "check", "", mechanism)).wire_security()
    else:
        client.wire_security()
        client.admin()  # librdkafka checks the configuration now
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state = Console(client.bootstrap, client.properties, loopback_only=is_loopback(host))
    try:
        asyncio.run(serve(state, host, port, parent_pid))
    except OSError as exc:
        fail(f"cannot listen on {listen}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        pass


def start_beside_broker(config: BrokerConfig, listen: str) -> subprocess.Popen[bytes]:
    """`odradek serve --console HOST:PORT`: the console in a process of its own (its clients'
    threads and its HTTP work stay off the broker's event loop), connected to the broker's
    first PLAINTEXT listener, else its first SASL_PLAINTEXT one (the page then asks who logs
    in). It watches the broker's pid and ends with it. The address must be loopback."""
    import os
    import sys

    from odradek.config import ConfigError
    from odradek.security.listeners import parse_listeners

    parse_listen(listen, expose=False)
    try:
        listeners = parse_listeners(config)
    except ConfigError as exc:
        fail(str(exc), 2)
    chosen = next((item for item in listeners if item.security_protocol == "PLAINTEXT"), None) or next(
        (item for item in listeners if item.security_protocol == "SASL_PLAINTEXT"), None)
    if chosen is None:
        fail("--console needs a PLAINTEXT or SASL_PLAINTEXT listener; for TLS listeners run `odradek console` "
             "with a client configuration (--command-config)", 2)
    bootstrap = f"{chosen.advertised_host}:{chosen.advertised_port}"
    args = [sys.executable, "-m", "odradek", "console", "-b", bootstrap, "--listen", listen,
            "--parent-pid", str(os.getpid())]
    if chosen.security_protocol == "SASL_PLAINTEXT":
        mechanisms = [m.strip().upper() for m in str(config.sasl_enabled_mechanisms).split(",") if m.strip()]
        mechanism = next((m for m in mechanisms if m.startswith("SCRAM-") or m == "PLAIN"), "SCRAM-SHA-512")
        args += ["-X", "security.protocol=SASL_PLAINTEXT", "-X", f"sasl.mechanism={mechanism}"]
    return subprocess.Popen(args)
