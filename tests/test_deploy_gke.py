"""`odradek deploy gke|k8s` against a local HTTP server standing in for the GKE and
Kubernetes APIs: the exact requests, failed operations, errors, and --dry-run.

The CLI runs as a real subprocess; ODRADEK_GKE_ENDPOINT / ODRADEK_K8S_HOST point
its google-cloud-container (REST transport, anonymous credentials) and kubernetes
clients at the server below.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml

from odradek.deploy.k8s import object_path
from odradek.deploy.render import render

ROOT = Path(__file__).resolve().parent.parent
PROJECT, ZONE = "demo-project", "europe-west1-b"
PARENT = f"/v1/projects/{PROJECT}/locations/{ZONE}"
DEPLOY_CMD = [sys.executable, "-m", "odradek", "deploy"]
CA_PEM = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


class FakeApis:
    """GKE (/v1/...) and the Kubernetes API server (/api, /apis) in one HTTP server."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.clusters: dict[str, dict[str, Any]] = {}
        self.objects: dict[str, dict[str, Any]] = {}
        self.operation_error: str | None = None
        self.gke_error: tuple[int, str, str] | None = None  # (http status, grpc status, message)
        self.create_conflict = False
        self.lb_ip = "203.0.113.7"
        self.cluster_endpoint = "127.0.0.1"  # what get_cluster reports as the Kubernetes API address
        self.ca_pem = CA_PEM
        self.access_token = "ya29.odradek-test"
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                req = {"method": self.command, "path": parts.path, "query": dict(parse_qsl(parts.query)),
                       "content_type": self.headers.get("Content-Type"),
                       "authorization": self.headers.get("Authorization"),
                       "body": _decode(raw, self.headers.get("Content-Type"))}
                fake.requests.append(req)
                status, body = fake.route(req)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _serve

        return Handler

    # --- GKE ---------------------------------------------------------------------
    def route(self, req: dict[str, Any]) -> tuple[int, Any]:
        path = req["path"]
        if path == "/token":  # Google's OAuth token endpoint (a service account's token_uri)
            return 200, {"access_token": self.access_token, "expires_in": 3600, "token_type": "Bearer"}
        if path.startswith("/v1/"):
            return self.gke(req["method"], path, req["body"])
        return self.kube(req["method"], path, req["body"], req["content_type"])

    def gke(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if self.gke_error is not None:
            code, status, message = self.gke_error
            return code, {"error": {"code": code, "status": status, "message": message}}
        if method == "POST" and path == f"{PARENT}/clusters":
            if self.create_conflict:
                return 409, {"error": {"code": 409, "status": "ALREADY_EXISTS", "message": "Already exists"}}
            name = body["cluster"]["name"]
            self.clusters[name] = {"name": name, "status": "RUNNING", "endpoint": self.cluster_endpoint,
                                   "masterAuth": {"clusterCaCertificate": base64.b64encode(self.ca_pem).decode()}}
            return 200, {"name": "operation-create-1", "operationType": "CREATE_CLUSTER", "status": "RUNNING"}
        if method == "GET" and path.startswith(f"{PARENT}/operations/"):
            op: dict[str, Any] = {"name": path.rsplit("/", 1)[1], "status": "DONE"}
            if self.operation_error:
                op["error"] = {"code": 8, "message": self.operation_error}
                op["statusMessage"] = self.operation_error
            return 200, op
        if path.startswith(f"{PARENT}/clusters/"):
            name = path.rsplit("/", 1)[1]
            if name not in self.clusters:
                return 404, {"error": {"code": 404, "status": "NOT_FOUND", "message": f"Not found: {name}."}}
            if method == "DELETE":
                del self.clusters[name]
                return 200, {"name": "operation-delete-1", "operationType": "DELETE_CLUSTER",
                             "status": "RUNNING"}
            return 200, self.clusters[name]
        return 404, {"error": {"code": 404, "status": "NOT_FOUND", "message": "no such route"}}

    # --- Kubernetes ----------------------------------------------------------------
    def kube(self, method: str, path: str, body: Any, content_type: str | None) -> tuple[int, Any]:
        if method == "PATCH" and content_type == "application/apply-patch+yaml":
            obj = copy.deepcopy(body)
            previous = self.objects.get(path, {})
            if "data" in previous and "data" not in obj:  # server-side apply keeps fields other managers own
                obj["data"] = previous["data"]
            obj["metadata"]["generation"] = previous.get("metadata", {}).get("generation", 0) + 1
            self.objects[path] = obj
            return 200, obj
        if method == "PATCH":  # strategic merge of template annotations (restart)
            obj = self.objects[path]
            obj["metadata"]["generation"] += 1
            ann = obj["spec"]["template"].setdefault("metadata", {}).setdefault("annotations", {})
            ann.update(body["spec"]["template"]["metadata"]["annotations"])
            return 200, obj
        if method == "GET" and path == "/version":
            return 200, {"major": "1", "minor": "32", "gitVersion": "v1.32.0"}
        if method == "GET":
            if path not in self.objects:
                return 404, {"kind": "Status", "code": 404, "message": f"{path} not found"}
            obj = copy.deepcopy(self.objects[path])
            if obj["kind"] == "StatefulSet":
                n = obj["spec"]["replicas"]
                obj["status"] = {"replicas": n, "readyReplicas": n, "updatedReplicas": n,
                                 "observedGeneration": obj["metadata"]["generation"]}
            if obj["kind"] == "Service" and obj["spec"].get("type") == "LoadBalancer":
                obj["status"] = {"loadBalancer": {"ingress": [{"ip": self.lb_ip}]}}
            return 200, obj
        if method == "DELETE":
            self.objects.pop(path, None)
            return 200, {"kind": "Status", "status": "Success"}
        return 405, {"kind": "Status", "code": 405, "message": "unsupported"}


def _decode(raw: bytes, content_type: str | None) -> Any:
    if not raw:
        return None
    if (content_type or "").startswith("application/x-www-form-urlencoded"):
        return dict(parse_qsl(raw.decode()))
    return json.loads(raw)


@pytest.fixture
def fake() -> Iterator[FakeApis]:
    apis = FakeApis()
    apis.thread.start()
    yield apis
    apis.server.shutdown()
    apis.server.server_close()


def odradek_deploy(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "ODRADEK_", "KUBECONFIG"))}
    full_env = {**base, "ODRADEK_DEPLOY_POLL": "0.05", "COLUMNS": "200", **(env or {})}
    return subprocess.run([*DEPLOY_CMD, *args], check=False, capture_output=True, text=True,
                          timeout=120, env=full_env, cwd=ROOT)


def gke_env(fake: FakeApis) -> dict[str, str]:
    return {"ODRADEK_GKE_ENDPOINT": fake.url, "ODRADEK_K8S_HOST": fake.url}


def assert_one_sentence(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_gke_creates_the_cluster_then_applies_every_manifest(fake: FakeApis) -> None:
    proc = odradek_deploy("gke", "--project", PROJECT, "--zone", ZONE, "--cluster", "kafka1",
                          "--machine-type", "e2-standard-4", "--image", "europe-docker.pkg.dev/p/r/odradek:1",
                          env=gke_env(fake))
    assert proc.returncode == 0, proc.stderr
    gke = [r for r in fake.requests if r["path"].startswith("/v1/")]
    assert [(r["method"], r["path"]) for r in gke] == [
        ("GET", f"{PARENT}/clusters/kafka1"),
        ("POST", f"{PARENT}/clusters"),
        ("GET", f"{PARENT}/operations/operation-create-1"),
        ("GET", f"{PARENT}/clusters/kafka1"),
    ]
    body = gke[1]["body"]
    assert list(body) == ["cluster"], "the parent is in the URL"
    cluster = body["cluster"]
    assert cluster["releaseChannel"] == {"channel": 2}, "REGULAR, as the REST transport sends enums"
    assert cluster["resourceLabels"] == {"app": "odradek"}
    assert cluster["name"] == "kafka1"
    assert "initialNodeCount" not in cluster, "node count lives in the node pool only"
    [pool] = cluster["nodePools"]
    assert pool["initialNodeCount"] == 1, "the single overlay needs one node"
    assert pool["config"]["machineType"] == "e2-standard-4"
    assert pool["config"]["oauthScopes"] == ["https://www.googleapis.com/auth/cloud-platform"]
    assert pool["management"] == {"autoUpgrade": True, "autoRepair": True}

    expected = render("single", image="europe-docker.pkg.dev/p/r/odradek:1")
    applies = [r for r in fake.requests if r["method"] == "PATCH"]
    assert [r["body"] for r in applies] == expected, "every rendered object, in order, unchanged"
    assert all(r["query"] == {"fieldManager": "odradek", "force": "true"} for r in applies)
    assert applies[0]["path"] == "/api/v1/namespaces/odradek"
    assert "/apis/apps/v1/namespaces/odradek/statefulsets/odradek" in [r["path"] for r in applies]
    assert "/apis/policy/v1/namespaces/odradek/poddisruptionbudgets/odradek" in [r["path"] for r in applies]
    sts = next(r["body"] for r in applies if r["body"]["kind"] == "StatefulSet")
    assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == "europe-docker.pkg.dev/p/r/odradek:1"
    assert ("GET", "/apis/apps/v1/namespaces/odradek/statefulsets/odradek") in [
        (r["method"], r["path"]) for r in fake.requests]
    assert "odradek.odradek.svc.cluster.local:9092" in proc.stdout


def test_gke_reuses_an_existing_cluster(fake: FakeApis) -> None:
    fake.clusters["odradek"] = {"name": "odradek", "status": "RUNNING", "endpoint": "127.0.0.1",
                                "masterAuth": {"clusterCaCertificate": base64.b64encode(CA_PEM).decode()}}
    proc = odradek_deploy("gke", "--project", PROJECT, "--zone", ZONE, "--overlay", "cluster",
                          "--image", "gcr.io/p/odradek:1", env=gke_env(fake))
    assert proc.returncode == 0, proc.stderr
    assert not [r for r in fake.requests if r["method"] == "POST"]
    assert "reusing GKE cluster odradek" in proc.stderr
    kinds = [(r["body"]["kind"], r["body"]["metadata"]["name"]) for r in fake.requests if r["method"] == "PATCH"]
    assert ("StatefulSet", "zookeeper") in kinds and ("StatefulSet", "odradek") in kinds


def test_gke_failed_operation_is_one_sentence(fake: FakeApis) -> None:
    fake.operation_error = "Insufficient regional quota to satisfy request: resource \"CPUS\"."
    proc = odradek_deploy("gke", "--project", PROJECT, "--zone", ZONE, "--image", "gcr.io/p/o:1",
                          env=gke_env(fake))
    assert_one_sentence(proc, "creating cluster odradek failed", "Insufficient regional quota")
    assert not [r for r in fake.requests if r["method"] == "PATCH"], "nothing applied after a failure"


@pytest.mark.parametrize(("http", "status", "message", "sentence"), [
    (403, "PERMISSION_DENIED", "Kubernetes Engine API has not been used in project 1 before or it is disabled.",
     "the Kubernetes Engine API is not enabled in project demo-project"),
    (403, "PERMISSION_DENIED", "Required 'container.clusters.get' permission", "permission denied"),
    (429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Requests'", "quota exceeded"),
])
def test_gke_api_errors_are_one_sentence(fake: FakeApis, http: int, status: str, message: str,
                                         sentence: str) -> None:
    fake.gke_error = (http, status, message)
    proc = odradek_deploy("gke", "--project", PROJECT, "--zone", ZONE, "--image", "gcr.io/p/o:1",
                          env=gke_env(fake))
    assert_one_sentence(proc, sentence)


def test_gke_cluster_exists_conflict_is_one_sentence(fake: FakeApis) -> None:
    fake.create_conflict = True
    proc = odradek_deploy("gke", "--project", PROJECT, "--zone", ZONE, "--image", "gcr.io/p/o:1",
                          env=gke_env(fake))
    assert_one_sentence(proc, "cluster odradek already exists")


def test_gke_without_credentials_is_one_sentence(tmp_path: Path) -> None:
    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "missing.json"), "HOME": str(tmp_path),
           "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"), "GCE_METADATA_HOST": "127.0.0.1:9",
           "GCE_METADATA_IP": "127.0.0.1:9"}
    proc = odradek_deploy("gke", "--project", PROJECT, "--zone", ZONE, "--image", "gcr.io/p/o:1", env=env)
    assert_one_sentence(proc, "credentials")


def test_gke_delete_deletes_the_cluster(fake: FakeApis) -> None:
    fake.clusters["odradek"] = {"name": "odradek", "status": "RUNNING", "endpoint": "127.0.0.1"}
    proc = odradek_deploy("gke", "--project", PROJECT, "--zone", ZONE, "--delete", env=gke_env(fake))
    assert proc.returncode == 0, proc.stderr
    assert [(r["method"], r["path"]) for r in fake.requests] == [
        ("DELETE", f"{PARENT}/clusters/odradek"), ("GET", f"{PARENT}/operations/operation-delete-1")]
    again = odradek_deploy("gke", "--project", PROJECT, "--zone", ZONE, "--delete", env=gke_env(fake))
    assert_one_sentence(again, "there is no cluster odradek")


def test_gke_dry_run_prints_every_request_and_manifest_without_credentials(tmp_path: Path) -> None:
    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "missing.json"), "HOME": str(tmp_path)}
    proc = odradek_deploy("gke", "--project", PROJECT, "--zone", ZONE, "--nodes", "4", "--overlay", "cluster",
                          "--dry-run", env=env)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert f"POST https://container.googleapis.com{PARENT}/clusters" in text
    start = text.index("{", text.index("POST "))
    body, _ = json.JSONDecoder().raw_decode(text[start:])
    pool = body["cluster"]["nodePools"][0]
    assert pool["initialNodeCount"] == 4 and pool["config"]["machineType"] == "e2-standard-2"
    for obj in render("cluster"):
        assert f"kind: {obj['kind']}" in text
        assert f"name: {obj['metadata']['name']}" in text
    assert text.count("PATCH https://<cluster endpoint>/") == len(render("cluster"))


SECRETS = "/api/v1/namespaces/odradek/secrets"


def secret_data(fake: FakeApis, name: str) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in fake.objects[f"{SECRETS}/{name}"]["data"].items()}


def test_k8s_external_overlay_advertises_the_load_balancer_addresses(fake: FakeApis, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    proc = odradek_deploy("k8s", "--overlay", "cluster-external", "--image", "gcr.io/p/o:1", "--ca-file",
                          str(ca_file), env={"ODRADEK_K8S_HOST": fake.url})
    assert proc.returncode == 0, proc.stderr
    cm = fake.objects["/api/v1/namespaces/odradek/configmaps/odradek-advertise"]
    assert cm["data"] == {f"odradek-{i}": f"{fake.lb_ip}:9093" for i in range(3)}, "the SASL_SSL listener's port"
    restarts = [r for r in fake.requests if r["content_type"] == "application/strategic-merge-patch+json"]
    assert [r["path"] for r in restarts] == ["/apis/apps/v1/namespaces/odradek/statefulsets/odradek"]
    assert f"{fake.lb_ip}:9093" in proc.stdout
    lb = [o for o in fake.objects.values() if o["kind"] == "Service" and o["spec"].get("type") == "LoadBalancer"]
    assert sorted(o["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] for o in lb) == [
        "odradek-0", "odradek-1", "odradek-2"]


def test_external_deploy_makes_the_secrets_once_and_prints_the_client_properties(fake: FakeApis,
                                                                                tmp_path: Path) -> None:
    from cryptography import x509

    from odradek.deploy.secrets import covers

    ca_file = tmp_path / "ca.pem"
    proc = odradek_deploy("k8s", "--overlay", "single-external", "--image", "gcr.io/p/o:1", "--ca-file",
                          str(ca_file), env={"ODRADEK_K8S_HOST": fake.url})
    assert proc.returncode == 0, proc.stderr
    admin, tls = secret_data(fake, "odradek-admin"), secret_data(fake, "odradek-tls")
    assert admin["username"] == b"admin" and len(admin["password"]) >= 24
    password = admin["password"].decode()
    assert password not in proc.stdout + proc.stderr, "the password is never printed"
    secret_patches = [r for r in fake.requests if r["path"].startswith(SECRETS) and r["method"] == "PATCH"]
    assert all(r["query"]["fieldManager"] == "odradek-secrets" for r in secret_patches)
    leaf = x509.load_pem_x509_certificates(tls["keystore.pem"])[0]
    assert b"PRIVATE KEY" in tls["keystore.pem"] and tls["ca.pem"] == tls["truststore.pem"]
    assert covers(tls["keystore.pem"], [fake.lb_ip, "odradek-0.odradek-headless.odradek.svc.cluster.local"])
    assert leaf.issuer == x509.load_pem_x509_certificate(tls["ca.pem"]).subject
    assert ca_file.read_bytes() == tls["ca.pem"], "the CA written where --ca-file says"
    for line in (f"bootstrap.servers={fake.lb_ip}:9093", "security.protocol=SASL_SSL", "sasl.mechanism=SCRAM-SHA-512",
                 "sasl.username=admin", f"ssl.ca.location={ca_file}",
                 "kubectl -n odradek get secret odradek-admin -o jsonpath='{.data.password}' | base64 -d"):
        assert line in proc.stdout, line
    # the printed properties, with the password filled in, are what `odradek --command-config` reads
    from odradek.cli.client_config import parse_properties

    text = proc.stdout[proc.stdout.index("bootstrap.servers="):].replace("<that password>", password)
    props = parse_properties(text, "client.properties").values
    assert props["sasl.password"] == password and props["ssl.ca.location"] == str(ca_file)

    # a second deploy keeps both Secrets (and so the password and the CA), and restarts nothing
    fake.requests.clear()
    again = odradek_deploy("k8s", "--overlay", "single-external", "--image", "gcr.io/p/o:1", "--ca-file",
                           str(ca_file), env={"ODRADEK_K8S_HOST": fake.url})
    assert again.returncode == 0, again.stderr
    assert not [r for r in fake.requests if r["path"].startswith(SECRETS) and r["method"] != "GET"]
    assert not [r for r in fake.requests if r["content_type"] == "application/strategic-merge-patch+json"]
    assert secret_data(fake, "odradek-admin") == admin and ca_file.read_bytes() == tls["ca.pem"]

    # a new load balancer address: a certificate made anew for it, and the brokers restart
    fake.lb_ip = "203.0.113.99"
    moved = odradek_deploy("k8s", "--overlay", "single-external", "--image", "gcr.io/p/o:1", "--ca-file",
                           str(ca_file), env={"ODRADEK_K8S_HOST": fake.url})
    assert moved.returncode == 0, moved.stderr
    assert covers(secret_data(fake, "odradek-tls")["keystore.pem"], ["203.0.113.99"])
    assert secret_data(fake, "odradek-admin") == admin, "the password stays"
    assert [r for r in fake.requests if r["content_type"] == "application/strategic-merge-patch+json"]


def test_external_deploy_uses_secrets_someone_else_made(fake: FakeApis, tmp_path: Path) -> None:
    from odradek.deploy.secrets import make_tls

    tls = make_tls(["kafka.example.com"])
    fake.objects[f"{SECRETS}/odradek-tls"] = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "odradek-tls"},
                                              "data": {k: base64.b64encode(v).decode() for k, v in tls.items()}}
    fake.objects[f"{SECRETS}/odradek-admin"] = {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "odradek-admin"},
        "data": {"username": base64.b64encode(b"root").decode(), "password": base64.b64encode(b"s3cret-pw").decode()}}
    proc = odradek_deploy("k8s", "--overlay", "single-external", "--image", "gcr.io/p/o:1", "--ca-file",
                          str(tmp_path / "ca.pem"), env={"ODRADEK_K8S_HOST": fake.url})
    assert proc.returncode == 0, proc.stderr
    assert not [r for r in fake.requests if r["path"].startswith(SECRETS) and r["method"] == "PATCH"]
    assert "sasl.username=root" in proc.stdout and "s3cret-pw" not in proc.stdout + proc.stderr
    assert "is not valid for 203.0.113.7" in proc.stderr, "a warning, not a replacement"
    assert (tmp_path / "ca.pem").read_bytes() == tls["ca.pem"]
    fake.objects[f"{SECRETS}/odradek-admin"]["data"]["password"] = base64.b64encode(b'has"quote').decode()
    assert_one_sentence(odradek_deploy("k8s", "--overlay", "single-external", "--image", "gcr.io/p/o:1",
                                       "--ca-file", str(tmp_path / "ca.pem"), env={"ODRADEK_K8S_HOST": fake.url}),
                        "double quote")


def test_gke_expose_deploys_the_external_overlay_and_prints_how_to_connect(fake: FakeApis, tmp_path: Path) -> None:
    proc = odradek_deploy("gke", "--project", PROJECT, "--zone", ZONE, "--expose", "--image", "gcr.io/p/o:1",
                          "--ca-file", str(tmp_path / "ca.pem"), env=gke_env(fake))
    assert proc.returncode == 0, proc.stderr
    applied = [r["body"] for r in fake.requests if r["method"] == "PATCH"
               and r["content_type"] == "application/apply-patch+yaml" and r["query"]["fieldManager"] == "odradek"]
    assert applied == render("single-external", image="gcr.io/p/o:1")
    assert f"bootstrap.servers={fake.lb_ip}:9093" in proc.stdout and "security.protocol=SASL_SSL" in proc.stdout
    assert (tmp_path / "ca.pem").read_bytes() == secret_data(fake, "odradek-tls")["ca.pem"]
    dry = odradek_deploy("gke", "--project", PROJECT, "--zone", ZONE, "--overlay", "cluster", "--expose",
                         "--dry-run", env={"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "none.json")})
    assert dry.returncode == 0, dry.stderr
    assert "odradek-2-external" in dry.stdout and "the Secrets odradek-admin and odradek-tls" in dry.stdout


def test_k8s_unreachable_api_server_is_one_sentence() -> None:
    proc = odradek_deploy("k8s", env={"ODRADEK_K8S_HOST": "http://127.0.0.1:9"})
    assert_one_sentence(proc, "cannot reach the Kubernetes API", "connection refused")


def test_render_prints_the_same_manifests_with_or_without_kubectl(tmp_path: Path) -> None:
    with_kubectl = odradek_deploy("render", "--overlay", "cluster", "--image", "gcr.io/p/o:2")
    assert with_kubectl.returncode == 0, with_kubectl.stderr
    no_kubectl = odradek_deploy("render", "--overlay", "cluster", "--image", "gcr.io/p/o:2",
                                env={"PATH": str(Path(sys.executable).parent)})
    assert no_kubectl.returncode == 0, no_kubectl.stderr
    assert with_kubectl.stdout == no_kubectl.stdout
    docs = [d for d in yaml.safe_load_all(with_kubectl.stdout) if d]
    assert docs == render("cluster", image="gcr.io/p/o:2")
    bad = odradek_deploy("render", "--overlay", "huge")
    assert_one_sentence(bad, "unknown overlay 'huge'")


def test_k8s_delete_dry_run_lists_deletes_namespace_last() -> None:
    proc = odradek_deploy("k8s", "--delete", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert all(line.startswith("DELETE https://<kubeconfig server>/") for line in lines)
    assert lines[-1].endswith("/api/v1/namespaces/odradek") and len(lines) == len(render("single"))


def self_signed(common_name: str) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a CA that is also the server certificate for 127.0.0.1."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def service_account_file(tmp_path: Path, token_uri: str) -> Path:
    """A service-account key whose token_uri is the stand-in: a real google.auth credential flow."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": PROJECT, "private_key_id": "k1", "private_key": pem,
        "client_email": f"deployer@{PROJECT}.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": token_uri}))
    return path


@pytest.fixture
def tls_kube(tmp_path: Path) -> Iterator[tuple[FakeApis, bytes]]:
    """A Kubernetes API stand-in over HTTPS, with its certificate (the cluster CA)."""
    import ssl

    cert, key = self_signed("kubernetes")
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    apis = FakeApis()
    apis.server.socket = ctx.wrap_socket(apis.server.socket, server_side=True)
    apis.thread.start()
    yield apis, cert
    apis.server.shutdown()
    apis.server.server_close()


def test_gke_sends_a_google_token_and_trusts_only_the_cluster_ca(fake: FakeApis, tls_kube: tuple[FakeApis, bytes],
                                                                  tmp_path: Path) -> None:
    kube, cert = tls_kube
    fake.cluster_endpoint = f"127.0.0.1:{kube.server.server_address[1]}"
    fake.ca_pem = cert
    env = {"ODRADEK_GKE_ENDPOINT": fake.url,
           "GOOGLE_APPLICATION_CREDENTIALS": str(service_account_file(tmp_path, f"{fake.url}/token"))}
    proc = odradek_deploy("gke", "--project", PROJECT, "--zone", ZONE, "--image", "gcr.io/p/o:1", env=env)
    assert proc.returncode == 0, proc.stderr
    gke = [r for r in fake.requests if r["path"].startswith("/v1/")]
    assert gke and all((r["authorization"] or "").startswith("Bearer ") for r in gke), "GKE calls are authorized"
    token_requests = [r for r in fake.requests if r["path"] == "/token"]
    assert token_requests and token_requests[-1]["body"]["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    applied = [r for r in kube.requests if r["method"] == "PATCH"]
    assert [r["body"] for r in applied] == render("single", image="gcr.io/p/o:1")
    assert {r["authorization"] for r in kube.requests} == {"Bearer ya29.odradek-test"}, \
        "the Kubernetes API gets the Google access token"

    # The same deploy against a cluster whose CA is not the server's certificate: refused, one sentence.
    other, _ = self_signed("not-the-cluster")
    fake.clusters.clear()
    fake.ca_pem = other
    kube.requests.clear()
    proc = odradek_deploy("gke", "--project", PROJECT, "--zone", ZONE, "--image", "gcr.io/p/o:1", env=env)
    assert_one_sentence(proc, "cannot reach the Kubernetes API at https://127.0.0.1:", "certificate verify failed")
    assert not kube.requests, "nothing was sent to a server the cluster CA does not vouch for"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_gke_use_kubectl_hands_kubectl_a_working_kubeconfig_and_removes_it(
        fake: FakeApis, tls_kube: tuple[FakeApis, bytes], tmp_path: Path) -> None:
    # A kubectl in front of the real one: it records how odradek calls it and checks the
    # kubeconfig with the real kubectl (`get --raw /version` over TLS with the token). It
    # applies nothing: a real `kubectl apply` needs the API server's OpenAPI documents,
    # which the stand-in does not serve, so the objects are put in place beforehand.
    kube, cert = tls_kube
    fake.cluster_endpoint = f"127.0.0.1:{kube.server.server_address[1]}"
    fake.ca_pem = cert
    expected = render("single", image="gcr.io/p/o:1")
    for obj in copy.deepcopy(expected):
        obj["metadata"]["generation"] = 1
        kube.objects[object_path(obj)] = obj
    rec, bin_dir = tmp_path / "rec", tmp_path / "bin"
    rec.mkdir()
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(
        "#!/bin/sh\n"
        f'[ "$1" = kustomize ] && exec {shutil.which("kubectl")} "$@"\n'
        'for a in "$@"; do echo "$a"; done > "$REC/args"\n'
        'cat > "$REC/stdin.yaml"\n'
        'cp "${1#--kubeconfig=}" "$REC/kubeconfig"\n'
        f'exec {shutil.which("kubectl")} "$1" get --raw /version > "$REC/version"\n')
    (bin_dir / "kubectl").chmod(0o755)
    env = {"ODRADEK_GKE_ENDPOINT": fake.url, "REC": str(rec), "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "GOOGLE_APPLICATION_CREDENTIALS": str(service_account_file(tmp_path, f"{fake.url}/token"))}
    proc = odradek_deploy("gke", "--project", PROJECT, "--zone", ZONE, "--image", "gcr.io/p/o:1",
                          "--use-kubectl", env=env)
    assert proc.returncode == 0, proc.stderr
    args = (rec / "args").read_text().splitlines()
    assert args[0].startswith("--kubeconfig=") and args[1:] == [
        "apply", "--server-side", "--field-manager=odradek", "--force-conflicts", "-f", "-"]
    assert not Path(args[0].split("=", 1)[1]).exists(), "the kubeconfig holding the token is removed"
    assert [d for d in yaml.safe_load_all((rec / "stdin.yaml").read_text()) if d] == expected
    assert json.loads((rec / "version").read_text())["gitVersion"] == "v1.32.0"
    versions = [r for r in kube.requests if r["path"] == "/version"]
    assert versions and {r["authorization"] for r in versions} == {"Bearer ya29.odradek-test"}
    assert not [r for r in kube.requests if r["method"] == "PATCH"], "kubectl did the applying, not the client"
    assert f"applied {len(expected)} objects with kubectl" in proc.stderr


def test_k8s_kubeconfig_mistakes_are_one_sentence(tmp_path: Path) -> None:
    missing = odradek_deploy("k8s", "--kubeconfig", str(tmp_path / "nope.yaml"))
    assert_one_sentence(missing, f"the kubeconfig file {tmp_path / 'nope.yaml'} does not exist")
    empty = odradek_deploy("k8s", env={"KUBECONFIG": str(tmp_path / "none"), "HOME": str(tmp_path)})
    assert_one_sentence(empty, "cannot load the kubeconfig")
