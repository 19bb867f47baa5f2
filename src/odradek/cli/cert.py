"""`odradek cert dev`: a local CA, the broker's PEM keystore and truststore, client certificates.

For trying TLS and SASL_SSL out on one machine (security/devcerts.py writes the
files with the `cryptography` package). It prints the broker's server.properties
lines and the client.properties to use with them. Never for production: the CA
key is written next to the certificates, unencrypted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from odradek.cli.common import fail

cert_app = typer.Typer(no_args_is_help=True, help="Certificates for trying TLS out: dev.")


@cert_app.command()
def dev(
    directory: Annotated[Path, typer.Option("--dir", help="where to write the files")] = Path("odradek-certs"),
    host: Annotated[list[str] | None, typer.Option(
        "--host", help="a name or IP the broker certificate is valid for (repeatable; "
                       "default 127.0.0.1 and localhost)")] = None,
    client: Annotated[list[str] | None, typer.Option(
        "--client", help="also a client certificate with this common name, for mTLS (repeatable)")] = None,
    port: Annotated[int, typer.Option("--port", help="the SASL_SSL port in the printed broker settings")] = 9093,
    force: Annotated[bool, typer.Option("--force", help="replace a CA already in --dir")] = False,
) -> None:
    """Write a dev CA, broker keystore/truststore and client certificates; print the settings to use."""
    from odradek.security.devcerts import write_dev_certificates

    hosts = list(host or ["127.0.0.1", "localhost"])
    if (directory / "ca.pem").exists() and not force:
        fail(f"{directory} already holds a CA (ca.pem); certificates signed by it would stop being trusted. "
             "Use another --dir, or --force to replace it", 2)
    try:
        made = write_dev_certificates(directory, hosts=hosts, clients=list(client or []))
    except OSError as exc:
        fail(f"cannot write the certificates to {directory}: {exc.strerror or exc}")
    base = directory.resolve()
    listen = hosts[0] if hosts[0] not in ("localhost",) else "127.0.0.1"
    out = Console(soft_wrap=True, highlight=False)
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    err.print(f"wrote a dev CA, the broker keystore and truststore{' and client certificates' if client else ''} "
              f"to {base} (valid for {', '.join(hosts)}; never use them in production)")
    broker = [
        f"listeners=PLAINTEXT://127.0.0.1:9092,SASL_SSL://{listen}:{port}",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={made.keystore.resolve()}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={made.truststore.resolve()}",
        "sasl.enabled.mechanisms=SCRAM-SHA-512",
        "authorizer.class.name=kafka.security.authorizer.AclAuthorizer",
        "super.users=User:admin",
    ]
    out.print("# broker: server.properties (odradek serve --config server.properties)", markup=False)
    out.print("\n".join(broker), markup=False)
    out.print("# the first admin user: start the broker with ODRADEK_INITIAL_SCRAM_USER=admin and "
              "ODRADEK_INITIAL_SCRAM_PASSWORD=<a password> (created when missing)", markup=False)
    out.print("", markup=False)
    out.print("# client: client.properties (odradek ... --command-config client.properties, kcat -F, "
              "librdkafka)", markup=False)
    out.print("\n".join([
        f"bootstrap.servers={listen}:{port}",
        "security.protocol=SASL_SSL",
        "sasl.mechanism=SCRAM-SHA-512",
        "sasl.username=admin",
        "sasl.password=<the admin password>",
        f"ssl.ca.location={(base / 'ca.pem')}",
    ]), markup=False)
    for name, cert in made.clients.items():
        out.print("", markup=False)
        out.print(f"# mTLS client {name} (principal User:{cert.subject}; an SSL listener with "
                  "ssl.client.auth=required)", markup=False)
        out.print("\n".join([
            "security.protocol=SSL",
            f"ssl.ca.location={base / 'ca.pem'}",
            f"ssl.certificate.location={cert.cert_path.resolve()}",
            f"ssl.key.location={cert.key_path.resolve()}",
        ]), markup=False)
