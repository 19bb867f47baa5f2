"""The client configuration of every command: `--command-config client.properties` and `-X key=value`.

Kafka's tools read a Java .properties file of client settings (`--command-config`);
rpk and kcat take `-X key=value`. Both become librdkafka keys here, in one place:
the file first, each `-X` over it, then the Java client's spellings that librdkafka
does not know are translated:

- `sasl.jaas.config=...PlainLoginModule|ScramLoginModule required username="u" password="p";`
  becomes `sasl.username` / `sasl.password` (explicit ones win);
- `ssl.truststore.location` of a PEM file becomes `ssl.ca.location`, a PEM
  `ssl.keystore.location` becomes `ssl.certificate.location` + `ssl.key.location`
  (JKS stores are refused with how to export them; PKCS#12 keystores librdkafka reads);
- `ssl.endpoint.identification.algorithm=` (empty: Java's "off") becomes `none`;
- `ssl.truststore.type` / `ssl.keystore.type` / `client.dns.lookup` are dropped.

Kafka's config providers (KIP-297, KIP-887) resolve first when `config.providers`
names them: `${env:NAME}`, `${file:/path/x.properties:key}`, `${dir:/mounted/secret:key}`,
so a file can name a Kubernetes Secret's mounted key instead of holding the password.

Values of secret keys (passwords, JAAS configs) never appear in a message.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path


class ClientConfigError(ValueError):
    """A mistake in the client configuration, as one sentence that names where it is."""


@dataclass(frozen=True, slots=True)
class ClientProperties:
    """librdkafka keys and, per key, where the user wrote it (for error messages)."""

    values: dict[str, str] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # values hold passwords
        return f"ClientProperties({sorted(self.values)})"

    def origin(self, key: str) -> str:
        return self.origins.get(key, "the client configuration")

    def secrets(self) -> list[str]:
        """The values a message must never show."""
        return [v for k, v in self.values.items() if is_secret(k) and v]


def is_secret(key: str) -> bool:
    key = key.lower()
    return "password" in key or "secret" in key or key.endswith("jaas.config") or key in (
        "ssl.key.pem", "ssl_key", "sasl.oauthbearer.config")


def redact(text: str, secrets: list[str]) -> str:
    """`text` with every secret value starred out (values under 4 characters would star
    out pieces of words; no message quotes a value that short whole anyway)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


# -- Java .properties ------------------------------------------------------------

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, logical line) of java.util.Properties: a line ending in an odd
    number of backslashes continues on the next, whose leading whitespace is skipped."""
    out: list[tuple[int, str]] = []
    pending: str | None = None
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.lstrip(" \t\f")
        if pending is None:
            if not line or line[0] in "#!":
                continue
            start = number
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:
            pending = (pending or "") + line[:-1]
            continue
        out.append((start, (pending or "") + line))
        pending = None
    if pending is not None:
        out.append((start, pending))
    return out


def _unescape(text: str, where: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c != "\\" or i + 1 >= len(text):
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "u":
            digits = text[i + 2:i + 6]
            if len(digits) != 4 or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise ClientConfigError(f"{where}: a \\u escape needs four hex digits")
            out.append(chr(int(digits, 16)))
            i += 6
        else:
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
    return "".join(out)


def parse_properties(text: str, source: str) -> ClientProperties:
    """java.util.Properties.load, a little stricter: a line must be `key=value`, `key: value`
    or `key value` (a lone word is a mistake, not a key with an empty value). Values are
    trimmed, as Kafka's ConfigDef trims them."""
    values: dict[str, str] = {}
    origins: dict[str, str] = {}
    for number, line in _logical_lines(text):
        where = f"{source} line {number}"
        match = re.match(r"((?:\\.|[^=:\s\\])+)\s*(?:([=:])\s*|\s+)?(.*)$", line, re.DOTALL)
        if match is None or (match.group(2) is None and not match.group(3)):
            shown = line if len(line) < 40 else line[:37] + "..."
            raise ClientConfigError(f"{where} is not key=value: {shown!r}")
        key = _unescape(match.group(1), where)
        values[key] = _unescape(match.group(3), where).strip()
        origins[key] = where
    return ClientProperties(values, origins)


def read_properties(path: Path) -> ClientProperties:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ClientConfigError(f"the --command-config file {path} does not exist") from None
    except IsADirectoryError:
        raise ClientConfigError(f"the --command-config file {path} is a directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise ClientConfigError(f"cannot read the --command-config file {path}: {reason}") from None
    return parse_properties(text, str(path))


def parse_overrides(items: list[str]) -> ClientProperties:
    """`-X key=value`, repeatable; the last one of a key wins."""
    values: dict[str, str] = {}
    origins: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            shown = "<secret>" if is_secret(key) else item
            raise ClientConfigError(f"-X {shown!r} is not key=value")
        values[key] = value.strip()
        origins[key] = f"-X {key}"
    return ClientProperties(values, origins)


# -- config providers (KIP-297) --------------------------------------------------

_PROVIDER_CLASSES = {
    "org.apache.kafka.common.config.provider.EnvVarConfigProvider": "env",
    "org.apache.kafka.common.config.provider.FileConfigProvider": "file",
    "org.apache.kafka.common.config.provider.DirectoryConfigProvider": "dir",
}
_VARIABLE = re.compile(r"\$\{([^}:]*?):(?:([^}]*?):)?([^}]*?)\}")  # Kafka's ConfigTransformer pattern


def _providers(props: ClientProperties) -> dict[str, str]:
    """Provider name -> kind (env, file, dir), from config.providers and their classes."""
    names = [n.strip() for n in props.values.get("config.providers", "").split(",") if n.strip()]
    found: dict[str, str] = {}
    for name in names:
        key = f"config.providers.{name}.class"
        cls = props.values.get(key)
        if cls is None:
            raise ClientConfigError(f"{props.origin('config.providers')}: config provider {name} has no {key}")
        if cls not in _PROVIDER_CLASSES:
            raise ClientConfigError(f"{props.origin(key)}: config provider class {cls} is not one of "
                                    f"{', '.join(sorted(_PROVIDER_CLASSES))}")
        found[name] = _PROVIDER_CLASSES[cls]
    return found


def _lookup(kind: str, path: str | None, key: str, where: str) -> str:
    if kind == "env":
        if key not in os.environ:
            raise ClientConfigError(f"{where}: the environment variable {key} is not set")
        return os.environ[key]
    if not path:
        raise ClientConfigError(f"{where}: a ${{{kind}:...}} variable needs a path and a key")
    if kind == "dir":
        file = Path(path) / key
        if "/" in key or key in ("", ".", ".."):
            raise ClientConfigError(f"{where}: {key!r} is not a file name in {path}")
        try:
            return file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            raise ClientConfigError(f"{where}: cannot read {file}") from None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise ClientConfigError(f"{where}: cannot read {path}") from None
    inner = parse_properties(text, path)
    if key not in inner.values:
        raise ClientConfigError(f"{where}: {path} has no key {key}")
    return inner.values[key]


def resolve_providers(props: ClientProperties) -> ClientProperties:
    """Replace ${provider:[path:]key} with what the provider reads; drop config.providers*."""
    providers = _providers(props)
    values: dict[str, str] = {}
    for key, value in props.values.items():
        if key == "config.providers" or key.startswith("config.providers."):
            continue

        def substitute(match: re.Match[str], key: str = key) -> str:
            name = match.group(1)
            if name not in providers:
                return match.group(0)  # Kafka leaves variables of unknown providers as they are
            return _lookup(providers[name], match.group(2), match.group(3), props.origin(key))

        values[key] = _VARIABLE.sub(substitute, value) if providers else value
    return ClientProperties(values, {k: v for k, v in props.origins.items() if k in values})


# -- the Java client's keys ------------------------------------------------------

_LOGIN_MODULES = {"PlainLoginModule": ("PLAIN",), "ScramLoginModule": ("SCRAM-SHA-256", "SCRAM-SHA-512")}
_DROPPED = ("client.dns.lookup",)  # librdkafka always tries every address of a name


def _is_pem(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return b"-----BEGIN " in f.read(4096)
    except OSError:
        return False


def _store_file(props: ClientProperties, key: str) -> str:
    path = props.values[key]
    if not Path(path).is_file():
        raise ClientConfigError(f"{props.origin(key)}: {key} {path} does not exist")
    return path


def translate(props: ClientProperties) -> ClientProperties:
    """Java client keys to librdkafka's (see the module docstring)."""
    values = dict(props.values)
    origins = dict(props.origins)

    def move(old: str, new: str, value: str) -> None:
        if new not in values:
            values[new] = value
            origins[new] = props.origin(old)

    jaas = values.pop("sasl.jaas.config", None)
    if jaas is not None:
        from odradek.config import ConfigError
        from odradek.security.sasl import parse_jaas_config

        where = props.origin("sasl.jaas.config")
        try:
            modules = parse_jaas_config(jaas)
        except ConfigError as exc:
            raise ClientConfigError(f"{where}: {exc}") from None
        module = next((m for m in modules if m.class_name.rsplit(".", 1)[-1] in _LOGIN_MODULES), None)
        if module is None:
            names = ", ".join(m.class_name.rsplit(".", 1)[-1] for m in modules) or "no login module"
            raise ClientConfigError(f"{where}: sasl.jaas.config has {names}; odradek's clients (librdkafka) "
                                    "take PlainLoginModule or ScramLoginModule there, or set "
                                    "sasl.username/sasl.password (and sasl.oauthbearer.*) directly")
        if "username" not in module.options or "password" not in module.options:
            raise ClientConfigError(f"{where}: sasl.jaas.config's {module.class_name.rsplit('.', 1)[-1]} "
                                    "needs username=\"...\" and password=\"...\"")
        mechanism = (values.get("sasl.mechanism") or values.get("sasl.mechanisms") or "").upper()
        kinds = _LOGIN_MODULES[module.class_name.rsplit(".", 1)[-1]]
        if mechanism and mechanism not in kinds:
            raise ClientConfigError(f"{where}: sasl.jaas.config has a {module.class_name.rsplit('.', 1)[-1]}, "
                                    f"which does not log in with sasl.mechanism {mechanism}")
        for key in ("username", "password"):  # an explicit sasl.username / sasl.password (-X) wins
            if f"sasl.{key}" not in values:
                values[f"sasl.{key}"], origins[f"sasl.{key}"] = module.options[key], where

    truststore_type = values.pop("ssl.truststore.type", "").upper()
    if "ssl.truststore.location" in values:
        path = _store_file(props, "ssl.truststore.location")
        if truststore_type not in ("", "PEM") or not _is_pem(path):
            raise ClientConfigError(
                f"{props.origin('ssl.truststore.location')}: ssl.truststore.location {path} is not a PEM file; "
                "librdkafka reads CA certificates from PEM: export them (keytool -exportcert -rfc -keystore "
                f"{path} -alias <ca> > ca.pem) and set ssl.ca.location=ca.pem")
        move("ssl.truststore.location", "ssl.ca.location", values.pop("ssl.truststore.location"))
        values.pop("ssl.truststore.password", None)  # a PEM truststore has no password

    keystore_type = values.pop("ssl.keystore.type", "").upper()
    if "ssl.keystore.location" in values and keystore_type != "PKCS12":
        path = _store_file(props, "ssl.keystore.location")
        if keystore_type not in ("", "PEM") or not _is_pem(path):
            raise ClientConfigError(
                f"{props.origin('ssl.keystore.location')}: ssl.keystore.location {path} is neither PEM nor "
                "PKCS12 (ssl.keystore.type); convert it with keytool -importkeystore -deststoretype PKCS12")
        location = values.pop("ssl.keystore.location")
        move("ssl.keystore.location", "ssl.certificate.location", location)
        move("ssl.keystore.location", "ssl.key.location", location)
        values.pop("ssl.keystore.password", None)  # a PEM keystore's key has ssl.key.password

    if values.get("ssl.endpoint.identification.algorithm", None) == "":
        values["ssl.endpoint.identification.algorithm"] = "none"  # Java's empty value switches it off
    for key in _DROPPED:
        values.pop(key, None)
    return ClientProperties(values, {k: v for k, v in origins.items() if k in values})


# librdkafka reports a missing file of these as an OpenSSL error ("BIO lib"); say it plainly
_FILE_KEYS = ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location", "ssl.keystore.location",
              "ssl.crl.location")


def _check_files(props: ClientProperties) -> None:
    for key in _FILE_KEYS:
        path = props.values.get(key)
        if path and path != "probe" and not Path(path).exists():  # probe: the system's CA store
            raise ClientConfigError(f"{props.origin(key)}: {key} {path} does not exist")


def load(command_config: Path | None, overrides: list[str]) -> ClientProperties:
    """The file, then each -X over it, providers resolved, Java keys translated."""
    base = read_properties(command_config) if command_config is not None else ClientProperties()
    extra = parse_overrides(overrides)
    merged = ClientProperties({**base.values, **extra.values}, {**base.origins, **extra.origins})
    props = translate(resolve_providers(merged))
    _check_files(props)
    return props


_PROPERTY_IN_ERROR = re.compile(r'property:? "([^"]+)"')


def explain_rejection(message: str, props: ClientProperties) -> str:
    """librdkafka's refusal of a key or value, as one sentence naming where the user wrote it."""
    message = redact(message.strip().rstrip("."), props.secrets())
    match = _PROPERTY_IN_ERROR.search(message)
    if match is not None and match.group(1) in props.origins:
        return f"{props.origin(match.group(1))}: {message}"
    return f"invalid client configuration: {message}"
