"""Apply rendered manifests to a Kubernetes cluster and wait for the brokers.

Objects go out with server-side apply (PATCH, application/apply-patch+yaml,
fieldManager=odradek, force=true) through the official `kubernetes` client's
ApiClient: the same request `kubectl apply --server-side` sends, so a second
deploy updates in place instead of failing with AlreadyExists.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kubernetes.client import ApiClient, Configuration
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from odradek.deploy.render import Manifest, to_yaml
from odradek.deploy.secrets import SecuredAccess, ensure_secrets

FIELD_MANAGER = "odradek"
ADVERTISE_MANAGER = "odradek-advertise"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
EXTERNAL_LABEL = "odradek.io/external"
BROKER_STATEFULSET = "odradek"
KAFKA_PORT = 9092

# (apiVersion, kind) -> (plural, namespaced): the kinds our overlays contain.
_RESOURCES: dict[tuple[str, str], tuple[str, bool]] = {
    ("v1", "Namespace"): ("namespaces", False),
    ("v1", "ConfigMap"): ("configmaps", True),
    ("v1", "Secret"): ("secrets", True),
    ("v1", "Service"): ("services", True),
    ("apps/v1", "StatefulSet"): ("statefulsets", True),
    ("policy/v1", "PodDisruptionBudget"): ("poddisruptionbudgets", True),
}


class KubeError(RuntimeError):
    """A Kubernetes API failure, worded as one sentence for the CLI."""


def object_path(obj: Manifest) -> str:
    """The REST path of one object, e.g. /apis/apps/v1/namespaces/odradek/statefulsets/odradek."""
    key = (obj["apiVersion"], obj["kind"])
    if key not in _RESOURCES:
        raise KubeError(f"odradek does not know how to apply a {obj['kind']} ({obj['apiVersion']})")
    plural, namespaced = _RESOURCES[key]
    prefix = "/api/v1" if obj["apiVersion"] == "v1" else f"/apis/{obj['apiVersion']}"
    meta = obj["metadata"]
    ns = f"/namespaces/{meta.get('namespace', 'default')}" if namespaced else ""
    return f"{prefix}{ns}/{plural}/{meta['name']}"


def describe(obj: Manifest) -> str:
    """`StatefulSet odradek/odradek` for progress lines."""
    meta = obj["metadata"]
    where = f"{meta['namespace']}/" if "namespace" in meta else ""
    return f"{obj['kind']} {where}{meta['name']}"


class Kube:
    """A thin layer over the kubernetes ApiClient: JSON in, JSON out, one-sentence errors."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    def request(self, method: str, path: str, body: Any = None, query: list[tuple[str, Any]] | None = None,
                content_type: str | None = None) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        _m, url, hdrs, data, _post = self.api.param_serialize(
            method=method, resource_path=path, query_params=query or [], header_params=headers, body=body,
            auth_settings=["BearerToken"])
        try:
            resp = self.api.call_api(method, url, header_params=hdrs, body=data, _request_timeout=30)
            resp.read()  # type: ignore[no-untyped-call]
        except Exception as exc:  # noqa: BLE001 - urllib3 errors: refused, TLS, timeouts
            raise KubeError(f"cannot reach the Kubernetes API at {self.api.configuration.host}: "
                            f"{_transport_reason(exc)}") from None
        text = (resp.data or b"").decode("utf-8", "replace")
        if not 200 <= resp.status <= 299:
            raise KubeError(_status_sentence(method, path, resp.status, text))
        return json.loads(text) if text.strip() else {}

    def apply(self, obj: Manifest, manager: str = FIELD_MANAGER) -> dict[str, Any]:
        """Server-side apply: create the object or update the fields `manager` owns."""
        return self.request("PATCH", object_path(obj), body=obj, content_type=APPLY_CONTENT_TYPE,
                            query=[("fieldManager", manager), ("force", "true")])

    def get(self, obj: Manifest, missing_ok: bool = False) -> dict[str, Any]:
        try:
            return self.request("GET", object_path(obj))
        except KubeError as exc:
            if missing_ok and "(404)" in str(exc):
                return {}
            raise

    def delete(self, obj: Manifest) -> None:
        try:
            self.request("DELETE", object_path(obj))
        except KubeError as exc:
            if "(404)" not in str(exc):
                raise


def _transport_reason(exc: BaseException) -> str:
    """Why urllib3 gave up, in a few words (MaxRetryError wraps the real cause)."""
    reason = getattr(exc, "reason", None) or exc
    text = str(reason)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return "its TLS certificate is not signed by the cluster CA (certificate verify failed)"
    if isinstance(reason, BaseException) and "refused" in text.lower():
        return "connection refused"
    return type(reason).__name__


def _status_sentence(method: str, path: str, status: int, text: str) -> str:
    try:
        message = json.loads(text).get("message") or text.strip()
    except ValueError:
        message = text.strip()[:200]
    if status in (401, 403):
        return f"the Kubernetes API refused {method} {path} ({status}): {message}"
    return f"Kubernetes API {method} {path} failed ({status}): {message}"


def client_from_kubeconfig(context: str | None = None, config_file: str | None = None) -> ApiClient:
    """An ApiClient for a kubeconfig context (the current one by default)."""
    from kubernetes import config as kube_config
    from kubernetes.config.config_exception import ConfigException

    if config_file and not os.path.exists(config_file):
        raise KubeError(f"the kubeconfig file {config_file} does not exist")
    try:
        client: ApiClient = kube_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=config_file, context=context)
        return client
    except (ConfigException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KubeError(f"cannot load the kubeconfig: {first}") from None


def client_for(host: str, token: str | None = None, ca_cert_pem: bytes | None = None) -> ApiClient:
    """An ApiClient for an API server address with a bearer token and the cluster CA."""
    cfg = Configuration()
    cfg.host = host
    if token:
        cfg.api_key = {"BearerToken": token}
        cfg.api_key_prefix = {"BearerToken": "Bearer"}
    if ca_cert_pem:
        fd, path = tempfile.mkstemp(prefix="odradek-ca-", suffix=".pem")
        with os.fdopen(fd, "wb") as f:
            f.write(ca_cert_pem)
        cfg.ssl_ca_cert = path
        atexit.register(_remove, path)  # urllib3 reads it by name, so it lives until exit
    return ApiClient(cfg)


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def kubectl_apply(objects: list[Manifest], kubectl_args: list[str]) -> None:
    """`kubectl apply --server-side` of the rendered objects (for --use-kubectl)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise KubeError("--use-kubectl was given but kubectl is not on PATH")
    cmd = [kubectl, *kubectl_args, "apply", "--server-side", f"--field-manager={FIELD_MANAGER}",
           "--force-conflicts", "-f", "-"]
    proc = subprocess.run(cmd, input=to_yaml(objects), check=False, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise KubeError(f"kubectl apply failed: {last}")


def kubeconfig_yaml(server: str, ca_cert_pem: bytes, token: str, name: str) -> str:
    """A one-context kubeconfig for kubectl, holding a short-lived token (GKE)."""
    import base64

    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": name,
        "clusters": [{"name": name, "cluster": {
            "server": server, "certificate-authority-data": base64.b64encode(ca_cert_pem).decode()}}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
    }
    return json.dumps(doc)


@dataclass
class DeployResult:
    namespace: str
    bootstrap: str
    external: bool
    access: SecuredAccess | None = None  # the external overlays' SASL_SSL login: username and CA


def statefulsets(objects: Iterable[Manifest]) -> list[Manifest]:
    return [o for o in objects if o["kind"] == "StatefulSet"]


def external_services(objects: Iterable[Manifest]) -> list[Manifest]:
    return [o for o in objects if o["kind"] == "Service"
            and o["metadata"].get("labels", {}).get(EXTERNAL_LABEL) == "true"]


def wait_ready(kube: Kube, objects: list[Manifest], console: Console, timeout: float, poll: float) -> None:
    """Poll each StatefulSet until readyReplicas reaches spec.replicas, with a progress bar each."""
    sets = statefulsets(objects)
    deadline = time.monotonic() + timeout
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} ready"), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        tasks = {describe(s): progress.add_task(describe(s), total=s["spec"].get("replicas", 1)) for s in sets}
        pending = list(sets)
        while pending:
            for s in list(pending):
                live = kube.get(s)
                want = live.get("spec", {}).get("replicas", s["spec"].get("replicas", 1))
                status = live.get("status", {})
                ready = int(status.get("readyReplicas", 0) or 0)
                updated = int(status.get("updatedReplicas", want) or 0)
                observed = int(status.get("observedGeneration", 0) or 0)
                current = observed >= int(live.get("metadata", {}).get("generation", 0) or 0)
                progress.update(tasks[describe(s)], completed=min(ready, want), total=want)
                if current and ready >= want and updated >= want:
                    pending.remove(s)
            if not pending:
                break
            if time.monotonic() > deadline:
                names = ", ".join(describe(s) for s in pending)
                raise KubeError(f"{names} not ready after {timeout:.0f} s; see `kubectl get pods -n "
                                f"{pending[0]['metadata'].get('namespace', 'default')}`")
            time.sleep(poll)


def wait_load_balancers(kube: Kube, services: list[Manifest], console: Console, timeout: float,
                        poll: float) -> dict[str, str]:
    """Pod name -> `IP:PORT` (the Service's port) once every external Service has a load balancer address."""
    deadline = time.monotonic() + timeout
    found: dict[str, str] = {}
    with console.status("waiting for load balancer addresses"):
        while True:
            for svc in services:
                ingress = kube.get(svc).get("status", {}).get("loadBalancer", {}).get("ingress") or []
                if ingress:
                    addr = ingress[0].get("ip") or ingress[0].get("hostname")
                    pod = svc["spec"]["selector"]["statefulset.kubernetes.io/pod-name"]
                    found[pod] = f"{addr}:{svc['spec']['ports'][0].get('port', KAFKA_PORT)}"
            if len(found) == len(services):
                return found
            if time.monotonic() > deadline:
                raise KubeError(f"no load balancer address after {timeout:.0f} s for "
                                f"{len(services) - len(found)} of {len(services)} external Services")
            time.sleep(poll)


def advertise_external(kube: Kube, namespace: str, addresses: dict[str, str], secrets_changed: bool = False) -> bool:
    """Write the load balancer addresses for the brokers to advertise; restart them if they
    changed, or when `secrets_changed` (a broker reads its Secrets at start only)."""
    cm: Manifest = {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "odradek-advertise", "namespace": namespace},
                    "data": dict(sorted(addresses.items()))}
    current = kube.get(cm, missing_ok=True).get("data") or {}
    if current == cm["data"] and not secrets_changed:
        return False
    if current != cm["data"]:
        kube.apply(cm, manager=ADVERTISE_MANAGER)  # not "odradek": re-applying the overlay keeps it
    digest = hashlib.sha256(json.dumps([cm["data"], time.time() if secrets_changed else 0],
                                       sort_keys=True).encode()).hexdigest()[:16]
    restart = {"apiVersion": "apps/v1", "kind": "StatefulSet",
               "metadata": {"name": BROKER_STATEFULSET, "namespace": namespace}}
    kube.request("PATCH", object_path(restart), content_type="application/strategic-merge-patch+json",
                 body={"spec": {"template": {"metadata": {"annotations": {"odradek.io/advertise": digest}}}}})
    return True


def deploy(kube: Kube, objects: list[Manifest], console: Console, *, namespace: str,
           timeout: float = 900.0, poll: float = 5.0,
           apply_with: Callable[[list[Manifest]], None] | None = None) -> DeployResult:
    """Apply the objects, wait for the StatefulSets, wire external addresses, name the bootstrap."""
    if apply_with is not None:
        apply_with(objects)
        console.print(f"applied {len(objects)} objects with kubectl")
    else:
        for obj in objects:
            kube.apply(obj)
            console.print(f"applied {describe(obj)}")
    external = external_services(objects)
    if not external:
        wait_ready(kube, objects, console, timeout, poll)
        return DeployResult(namespace, f"odradek.{namespace}.svc.cluster.local:{KAFKA_PORT}", False)
    # The brokers wait for their Secrets, and the certificate names the load balancer
    # addresses: addresses first, then the Secrets, then the brokers are ready.
    addresses = wait_load_balancers(kube, external, console, timeout, poll)
    hosts = sorted({address.rsplit(":", 1)[0] for address in addresses.values()})
    access = ensure_secrets(kube, namespace, hosts, console)
    if advertise_external(kube, namespace, addresses, secrets_changed=bool(access.created)):
        console.print("brokers restart to advertise their load balancer addresses and read their Secrets")
        time.sleep(min(poll, 2.0))  # let the controller see the new template before we poll
    wait_ready(kube, objects, console, timeout, poll)
    return DeployResult(namespace, ",".join(addresses[k] for k in sorted(addresses)), True, access)


def undeploy(kube: Kube, objects: list[Manifest], console: Console) -> None:
    """Delete the overlay's objects (the Namespace last; PVCs go with the Namespace)."""
    for obj in reversed(objects):
        kube.delete(obj)
        console.print(f"deleted {describe(obj)}")
