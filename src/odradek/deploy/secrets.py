"""The Secrets of the external overlays: the first admin user and the brokers' TLS keystore.

The external overlays (components/external) listen SASL_SSL on their load balancers
and read two Secrets that are never part of the rendered manifests:

- `odradek-admin` (`username`, `password`): the first SCRAM user, which each broker
  creates at start when it is missing (server/initial_scram_user.py), the super user,
  and the brokers' own inter-broker login;
- `odradek-tls` (`keystore.pem`, `truststore.pem`, `ca.pem`): Kafka's PEM keystore
  for the SASL_SSL listener, and the CA that clients trust.

`ensure_secrets` creates what is missing once the load balancers have addresses
(a random password; a CA and a broker certificate valid for the load balancer
addresses and the pods' DNS names, made with security/devcerts.py, the CA key
thrown away). Secrets someone else made are used as they are; a certificate this
module made that no longer covers the load balancer addresses is made anew.
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from rich.console import Console

from odradek.deploy.render import Manifest

ADMIN_SECRET = "odradek-admin"
TLS_SECRET = "odradek-tls"
DEFAULT_ADMIN = "admin"
GENERATED_LABEL = "odradek.io/generated"  # "true" on the Secrets this module made
SECRETS_MANAGER = "odradek-secrets"  # field manager: re-applying the overlay never touches them
HEADLESS_SERVICE = "odradek-headless"
CLIENT_SERVICE = "odradek"


@dataclass
class SecuredAccess:
    """What a client needs besides the bootstrap address: the username and the CA."""

    username: str
    ca_pem: bytes = field(repr=False)
    created: list[str] = field(default_factory=list)  # the Secrets made (or made anew) by this run


def secret_manifest(name: str, namespace: str, data: dict[str, bytes]) -> Manifest:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/part-of": "odradek", GENERATED_LABEL: "true"}},
            "data": {key: base64.b64encode(value).decode() for key, value in sorted(data.items())}}


def broker_hosts(namespace: str, external: list[str]) -> list[str]:
    """What the broker certificate must be valid for: the load balancer addresses, then
    every pod's and the client Service's DNS names, then loopback."""
    domain = f"{namespace}.svc.cluster.local"
    return [*external, f"*.{HEADLESS_SERVICE}.{domain}", f"{CLIENT_SERVICE}.{domain}", "localhost", "127.0.0.1"]


def make_tls(hosts: list[str]) -> dict[str, bytes]:
    """A new CA and a broker keystore for `hosts`, as the odradek-tls Secret's keys."""
    from odradek.security.devcerts import write_broker_keystore, write_ca

    with tempfile.TemporaryDirectory(prefix="odradek-tls-") as tmp:
        directory = Path(tmp)
        ca = write_ca(directory, name="odradek CA (odradek deploy)")
        keystore = write_broker_keystore(ca, directory / "keystore.pem", hosts)
        ca_pem = ca.cert_path.read_bytes()
        return {"keystore.pem": keystore.read_bytes(), "truststore.pem": ca_pem, "ca.pem": ca_pem}


def covers(keystore_pem: bytes, hosts: list[str]) -> bool:
    """Whether the first certificate of a PEM keystore is valid for every host."""
    try:
        cert = x509.load_pem_x509_certificates(keystore_pem)[0]
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, IndexError, x509.ExtensionNotFound):
        return False
    dns = set(names.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    for host in hosts:
        try:
            if str(ipaddress.ip_address(host)) not in ips:
                return False
        except ValueError:
            wildcard = "*." + host.split(".", 1)[1] if "." in host else None
            if host not in dns and wildcard not in dns:
                return False
    return True


def _data(secret: dict[str, Any]) -> dict[str, bytes]:
    return {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}


def _generated(secret: dict[str, Any]) -> bool:
    return (secret.get("metadata", {}).get("labels") or {}).get(GENERATED_LABEL) == "true"


def ensure_secrets(kube: Any, namespace: str, external: list[str], console: Console) -> SecuredAccess:
    """Create the admin and TLS Secrets when missing; the username and the CA clients trust."""
    from odradek.deploy.k8s import KubeError

    created: list[str] = []
    admin_ref = secret_manifest(ADMIN_SECRET, namespace, {})
    admin = _data(kube.get(admin_ref, missing_ok=True))
    if not admin:
        admin = {"username": DEFAULT_ADMIN.encode(), "password": secrets.token_urlsafe(24).encode()}
        kube.apply(secret_manifest(ADMIN_SECRET, namespace, admin), manager=SECRETS_MANAGER)
        created.append(ADMIN_SECRET)
        console.print(f"created Secret {namespace}/{ADMIN_SECRET}: the first SCRAM user, "
                      f"{DEFAULT_ADMIN}, with a random password")
    missing = [key for key in ("username", "password") if not admin.get(key)]
    if missing:
        raise KubeError(f"Secret {namespace}/{ADMIN_SECRET} has no {' or '.join(missing)}; the brokers read "
                        "their first SCRAM user from its keys username and password")
    if any(c in admin["password"] for c in b'"\\') or any(c in admin["username"] for c in b'"\\'):
        raise KubeError(f"Secret {namespace}/{ADMIN_SECRET} holds a double quote or backslash, which the brokers' "
                        "inter-broker login (sasl.jaas.config) cannot carry; choose another password")

    hosts = broker_hosts(namespace, external)
    tls_ref = secret_manifest(TLS_SECRET, namespace, {})
    live = kube.get(tls_ref, missing_ok=True)
    tls = _data(live)
    if tls and not _generated(live):
        if not covers(tls.get("keystore.pem", b""), external):
            console.print(f"warning: the certificate in Secret {namespace}/{TLS_SECRET} is not valid for "
                          f"{', '.join(external)}; clients that check the broker's name will refuse it")
    elif not tls or not covers(tls.get("keystore.pem", b""), hosts):
        tls = make_tls(hosts)
        kube.apply(secret_manifest(TLS_SECRET, namespace, tls), manager=SECRETS_MANAGER)
        created.append(TLS_SECRET)
        console.print(f"created Secret {namespace}/{TLS_SECRET}: a new CA and a broker certificate for "
                      f"{', '.join(external)} and the pods' DNS names")
    ca = tls.get("ca.pem") or tls.get("truststore.pem")
    if not ca or not tls.get("keystore.pem"):
        raise KubeError(f"Secret {namespace}/{TLS_SECRET} needs keystore.pem (key and certificate chain, PEM) "
                        "and ca.pem or truststore.pem")
    return SecuredAccess(admin["username"].decode(), ca, created)


def client_properties(bootstrap: str, access: SecuredAccess, ca_file: str, namespace: str) -> list[str]:
    """The client.properties lines for the load balancers (librdkafka's and odradek's keys)."""
    return [
        f"bootstrap.servers={bootstrap}",
        "security.protocol=SASL_SSL",
        "sasl.mechanism=SCRAM-SHA-512",
        f"sasl.username={access.username}",
        (f"# the password: kubectl -n {namespace} get secret {ADMIN_SECRET} "
         "-o jsonpath='{.data.password}' | base64 -d"),
        "sasl.password=<that password>",
        f"ssl.ca.location={ca_file}",
    ]
