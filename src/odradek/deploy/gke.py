"""Create (or reuse) and delete a GKE cluster with google-cloud-container.

The ClusterManagerClient speaks REST here (transport="rest"): the same JSON
requests `gcloud container clusters create` sends, which makes them printable for
--dry-run and lets a test stand a plain HTTP server in for the GKE API
(ODRADEK_GKE_ENDPOINT=http://127.0.0.1:PORT, anonymous credentials unless
GOOGLE_APPLICATION_CREDENTIALS names some).
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

GKE_ENDPOINT = "container.googleapis.com"
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


class GkeError(RuntimeError):
    """A GKE failure, worded as one sentence for the CLI."""


@dataclass
class ClusterSpec:
    """What `odradek deploy gke` asks GKE for: one zonal cluster, one node pool."""

    project: str
    zone: str
    name: str = "odradek"
    nodes: int = 1
    machine_type: str = "e2-standard-2"
    disk_size_gb: int = 50
    labels: dict[str, str] = field(default_factory=lambda: {"app": "odradek"})

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.zone}"

    @property
    def cluster_path(self) -> str:
        return f"{self.parent}/clusters/{self.name}"

    def cluster_body(self) -> dict[str, Any]:
        """The Cluster message as the REST API takes it (camelCase JSON)."""
        return {
            "name": self.name,
            "resourceLabels": dict(self.labels),
            "releaseChannel": {"channel": "REGULAR"},
            "nodePools": [{
                "name": "default-pool",
                "initialNodeCount": self.nodes,
                "config": {
                    "machineType": self.machine_type,
                    "diskSizeGb": self.disk_size_gb,
                    "oauthScopes": list(SCOPES),
                    "labels": dict(self.labels),
                },
                "management": {"autoUpgrade": True, "autoRepair": True},
            }],
        }


@dataclass
class ClusterAccess:
    """Where the cluster's Kubernetes API is and how to trust it."""

    host: str
    ca_cert_pem: bytes | None


def dry_run_requests(spec: ClusterSpec, endpoint: str | None = None) -> list[tuple[str, str, Any]]:
    """(method, URL, body) of every GKE request a real run makes, in order."""
    base = _base_url(endpoint)
    return [
        ("GET", f"{base}/v1/{spec.cluster_path}", None),
        ("POST", f"{base}/v1/{spec.parent}/clusters", {"cluster": spec.cluster_body()}),
        ("GET", f"{base}/v1/{spec.parent}/operations/<operation>  (repeated until status DONE)", None),
        ("GET", f"{base}/v1/{spec.cluster_path}", None),
    ]


def dry_run_delete(spec: ClusterSpec, endpoint: str | None = None) -> list[tuple[str, str, Any]]:
    base = _base_url(endpoint)
    return [("DELETE", f"{base}/v1/{spec.cluster_path}", None),
            ("GET", f"{base}/v1/{spec.parent}/operations/<operation>  (repeated until status DONE)", None)]


def _base_url(endpoint: str | None) -> str:
    endpoint = endpoint or GKE_ENDPOINT
    return endpoint.rstrip("/") if "://" in endpoint else f"https://{endpoint}"


class Gke:
    """create/reuse/delete one cluster; every google error becomes a GkeError sentence."""

    def __init__(self, spec: ClusterSpec, console: Console, endpoint: str | None = None,
                 poll: float = 10.0, timeout: float = 1800.0) -> None:
        self.spec = spec
        self.console = console
        self.endpoint = endpoint
        self.poll = poll
        self.timeout = timeout
        # A plain-http endpoint is a local stand-in for GKE: anonymous, unless credentials
        # are named explicitly (then they are used as they would be against Google).
        self.anonymous = bool(endpoint and endpoint.startswith("http://")
                              and not os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"))
        self._client: Any = None
        self._credentials: Any = None

    # --- clients and credentials -------------------------------------------------
    def credentials(self) -> Any:
        """Application default credentials (anonymous against a plain-http test endpoint)."""
        if self._credentials is None:
            if self.anonymous:
                from google.auth.credentials import AnonymousCredentials

                self._credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
            else:
                import google.auth
                from google.auth.exceptions import DefaultCredentialsError

                try:
                    self._credentials, _ = google.auth.default(scopes=SCOPES)
                except DefaultCredentialsError:
                    raise GkeError("no Google Cloud credentials found; run `gcloud auth application-default "
                                   "login` or set GOOGLE_APPLICATION_CREDENTIALS") from None
        return self._credentials

    def client(self) -> Any:
        if self._client is None:
            from google.cloud import container_v1

            options = {"api_endpoint": self.endpoint} if self.endpoint else None
            self._client = container_v1.ClusterManagerClient(
                credentials=self.credentials(), transport="rest", client_options=options)
        return self._client

    def token(self) -> str | None:
        """A fresh OAuth access token for the Kubernetes API (GKE accepts Google tokens)."""
        creds = self.credentials()
        if self.anonymous:
            return None
        import google.auth.transport.requests
        from google.auth.exceptions import RefreshError

        try:
            creds.refresh(google.auth.transport.requests.Request())
        except RefreshError as exc:
            raise GkeError(f"cannot refresh the Google Cloud credentials: {_first_line(exc)}") from None
        return str(creds.token)

    # --- operations -------------------------------------------------------------
    def ensure_cluster(self) -> ClusterAccess:
        """Reuse the cluster when it exists, else create it and wait; return its API access."""
        from google.api_core import exceptions as gexc

        cluster = self._call(self.client().get_cluster, name=self.spec.cluster_path, missing_ok=True)
        if cluster is None:
            self.console.print(f"creating GKE cluster {self.spec.name} in {self.spec.zone} "
                               f"({self.spec.nodes} x {self.spec.machine_type})")
            from google.cloud import container_v1

            body = container_v1.Cluster.from_json(json.dumps(self.spec.cluster_body()))
            try:
                op = self._call(self.client().create_cluster, parent=self.spec.parent, cluster=body)
            except gexc.Conflict:
                raise GkeError(f"cluster {self.spec.name} already exists in {self.spec.parent} but could "
                               "not be read; it may still be being created or deleted, try again "
                               "in a few minutes") from None
            self.wait_operation(op, f"creating cluster {self.spec.name}")
            cluster = self._call(self.client().get_cluster, name=self.spec.cluster_path)
        else:
            self.console.print(f"reusing GKE cluster {self.spec.name} in {self.spec.zone}")
        cluster = self._wait_running(cluster)
        ca = cluster.master_auth.cluster_ca_certificate
        return ClusterAccess(host=f"https://{cluster.endpoint}",
                             ca_cert_pem=base64.b64decode(ca) if ca else None)

    def delete_cluster(self) -> None:
        op = self._call(self.client().delete_cluster, name=self.spec.cluster_path, missing_ok=True)
        if op is None:
            raise GkeError(f"there is no cluster {self.spec.name} in project {self.spec.project}, "
                           f"zone {self.spec.zone}")
        self.console.print(f"deleting GKE cluster {self.spec.name}")
        self.wait_operation(op, f"deleting cluster {self.spec.name}")

    def wait_operation(self, op: Any, what: str) -> None:
        """Poll get_operation until DONE; a DONE operation with an error is a GkeError."""
        from google.cloud import container_v1

        done = container_v1.Operation.Status.DONE
        deadline = time.monotonic() + self.timeout
        name = f"{self.spec.parent}/operations/{op.name}"
        with self.console.status(f"{what} (operation {op.name})"):
            while op.status != done:
                if time.monotonic() > deadline:
                    raise GkeError(f"{what} did not finish in {self.timeout:.0f} s (operation {op.name})")
                time.sleep(self.poll)
                op = self._call(self.client().get_operation, name=name)
        message = (op.error.message if op.error and op.error.code else "") or op.status_message
        if message:
            raise GkeError(f"{what} failed: {message}")

    def _wait_running(self, cluster: Any) -> Any:
        from google.cloud import container_v1

        status = container_v1.Cluster.Status
        deadline = time.monotonic() + self.timeout
        while cluster.status == status.PROVISIONING or cluster.status == status.RECONCILING:
            if time.monotonic() > deadline:
                raise GkeError(f"cluster {self.spec.name} is still {cluster.status.name} after "
                               f"{self.timeout:.0f} s")
            time.sleep(self.poll)
            cluster = self._call(self.client().get_cluster, name=self.spec.cluster_path)
        if cluster.status in (status.STOPPING, status.ERROR):
            detail = f": {cluster.status_message}" if cluster.status_message else ""
            raise GkeError(f"cluster {self.spec.name} is {cluster.status.name}{detail}")
        if not cluster.endpoint:
            raise GkeError(f"cluster {self.spec.name} has no API endpoint yet")
        return cluster

    def _call(self, method: Any, missing_ok: bool = False, **kwargs: Any) -> Any:
        """One GKE API call; google's exceptions become one sentence each."""
        from google.api_core import exceptions as gexc
        from google.auth.exceptions import DefaultCredentialsError, RefreshError

        where = f"project {self.spec.project}, zone {self.spec.zone}"
        try:
            return method(**kwargs)
        except gexc.NotFound:
            if missing_ok:
                return None
            raise GkeError(f"not found in {where}: cluster {self.spec.name}") from None
        except gexc.Conflict:  # AlreadyExists over REST
            raise
        except gexc.Forbidden as exc:  # PermissionDenied over REST
            text = _first_line(exc)
            if "SERVICE_DISABLED" in text or "has not been used" in text or "is disabled" in text:
                raise GkeError(f"the Kubernetes Engine API is not enabled in project {self.spec.project}; "
                               "run `gcloud services enable container.googleapis.com`") from None
            raise GkeError(f"permission denied in {where}: {text}") from None
        except gexc.TooManyRequests as exc:  # ResourceExhausted over REST
            raise GkeError(f"quota exceeded in {where}: {_first_line(exc)}; ask for more quota or use "
                           "fewer or smaller nodes (--nodes, --machine-type)") from None
        except gexc.Unauthorized as exc:
            raise GkeError(f"GKE rejected the credentials: {_first_line(exc)}") from None
        except gexc.BadRequest as exc:
            raise GkeError(f"GKE rejected the request: {_first_line(exc)}") from None
        except gexc.GoogleAPICallError as exc:
            raise GkeError(f"GKE API call failed in {where}: {_first_line(exc)}") from None
        except (DefaultCredentialsError, RefreshError) as exc:
            raise GkeError(f"no usable Google Cloud credentials: {_first_line(exc)}") from None
        except OSError as exc:  # requests' ConnectionError is an OSError
            raise GkeError(f"cannot reach the GKE API at {self.endpoint or GKE_ENDPOINT}: "
                           f"{type(exc).__name__}") from None


def _first_line(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    lines = str(message).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
