"""`odradek deploy`: render the manifests, deploy to any Kubernetes, or to a new GKE cluster."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Annotated, Any

import typer
from rich.console import Console

deploy_app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                         help="Deploy odradek to Kubernetes: render, k8s (any cluster), gke (create + deploy).")
out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)

OverlayOpt = Annotated[str, typer.Option("--overlay", help="single, cluster, single-external or cluster-external")]
ImageOpt = Annotated[str | None, typer.Option("--image", help="container image of the broker (default odradek:0.1.0)")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="seconds to wait for the brokers to be ready")]
UseKubectlOpt = Annotated[bool, typer.Option("--use-kubectl", help="apply with `kubectl apply --server-side`")]
PollOpt = Annotated[float, typer.Option("--poll", hidden=True, envvar="ODRADEK_DEPLOY_POLL")]
K8sHostOpt = Annotated[str | None, typer.Option("--k8s-host", hidden=True, envvar="ODRADEK_K8S_HOST")]
GkeEndpointOpt = Annotated[str | None, typer.Option("--gke-endpoint", hidden=True, envvar="ODRADEK_GKE_ENDPOINT")]
ExposeOpt = Annotated[bool, typer.Option(
    "--expose", help="a load balancer per broker, SASL_SSL only (the overlay's -external variant)")]
CaFileOpt = Annotated[str, typer.Option(
    "--ca-file", help="where to write the CA certificate clients trust (external overlays)")]


def _fail(exc: BaseException) -> typer.Exit:
    err.print(f"[red]error:[/] {exc}", markup=True)
    return typer.Exit(1)


def _require(*modules: str) -> None:
    """The deploy clients are an extra; say how to get them instead of a traceback."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            err.print(f"[red]error:[/] {name} is not installed; run `pip install 'odradek[deploy]'`")
            raise typer.Exit(1) from None


def _objects(overlay: str, image: str | None) -> list[dict[str, Any]]:
    from odradek.deploy.render import render

    return render(overlay, image=image)


def _print_apply_requests(objects: list[dict[str, Any]], host: str) -> None:
    from odradek.deploy.k8s import FIELD_MANAGER, object_path
    from odradek.deploy.render import to_yaml

    for obj in objects:
        out.print(f"PATCH {host}{object_path(obj)}?fieldManager={FIELD_MANAGER}&force=true  "
                  "(Content-Type: application/apply-patch+yaml)")
        out.print(to_yaml([obj]).rstrip(), markup=False)
        out.print("---")


def _exposed(overlay: str, expose: bool) -> str:
    """--expose picks the external variant of an overlay (single -> single-external)."""
    return f"{overlay}-external" if expose and not overlay.endswith("-external") else overlay


def _finish(result: Any, ca_file: str) -> None:
    if result.external:
        from odradek.deploy.secrets import client_properties

        out.print(f"bootstrap servers (load balancers, SASL_SSL): [bold]{result.bootstrap}[/]")
        if result.access is not None:
            try:
                with open(ca_file, "wb") as f:
                    f.write(result.access.ca_pem)
            except OSError as exc:
                raise _fail(OSError(f"cannot write the CA certificate to {ca_file}: {exc.strerror}")) from None
            out.print(f"wrote the CA certificate clients trust to {ca_file}")
            out.print("client.properties (odradek ... --command-config client.properties, kcat -F, librdkafka; "
                      "Kafka's Java tools take the same with sasl.jaas.config and ssl.truststore.location):")
            out.print("\n".join(client_properties(result.bootstrap, result.access, ca_file, result.namespace)),
                      markup=False)
    else:
        out.print(f"bootstrap servers (inside the cluster): [bold]{result.bootstrap}[/]")
        out.print(f"try it: kubectl -n {result.namespace} exec -it odradek-0 -- odradek produce "
                  f"-b 127.0.0.1:9092 demo")


@deploy_app.command("render")
def render_cmd(overlay: OverlayOpt = "single", image: ImageOpt = None) -> None:
    """Print the Kubernetes manifests of an overlay (kubectl kustomize, or the shipped copy)."""
    _require("yaml")
    from odradek.deploy.render import RenderError, to_yaml

    try:
        out.print(to_yaml(_objects(overlay, image)).rstrip(), markup=False)
    except RenderError as exc:
        raise _fail(exc) from None


@deploy_app.command("k8s")
def k8s_cmd(
    overlay: OverlayOpt = "single",
    expose: ExposeOpt = False,
    image: ImageOpt = None,
    context: Annotated[str | None, typer.Option("--context", help="kubeconfig context (default: current)")] = None,
    kubeconfig: Annotated[str | None, typer.Option("--kubeconfig", help="kubeconfig file")] = None,
    use_kubectl: UseKubectlOpt = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the requests, send nothing")] = False,
    delete: Annotated[bool, typer.Option("--delete", help="delete the overlay's objects instead")] = False,
    timeout: TimeoutOpt = 900.0,
    poll: PollOpt = 5.0,
    k8s_host: K8sHostOpt = None,
    ca_file: CaFileOpt = "odradek-ca.pem",
) -> None:
    """Deploy to an existing Kubernetes cluster from your kubeconfig."""
    _require("yaml", "kubernetes")
    from odradek.deploy import k8s
    from odradek.deploy.render import RenderError, namespace_of

    overlay = _exposed(overlay, expose)
    try:
        objects = _objects(overlay, image)
        if dry_run:
            host = k8s_host or "https://<kubeconfig server>"
            if delete:
                for obj in reversed(objects):
                    out.print(f"DELETE {host}{k8s.object_path(obj)}", markup=False)
            else:
                _print_apply_requests(objects, host)
                _print_secret_note(objects)
            return
        api = k8s.client_for(k8s_host) if k8s_host else k8s.client_from_kubeconfig(context, kubeconfig)
        kube = k8s.Kube(api)
        if delete:
            k8s.undeploy(kube, objects, err)
            return
        kubectl_args = [a for a in (f"--context={context}" if context else None,
                                    f"--kubeconfig={kubeconfig}" if kubeconfig else None) if a]
        apply_with = (lambda objs: k8s.kubectl_apply(objs, kubectl_args)) if use_kubectl else None
        result = k8s.deploy(kube, objects, err, namespace=namespace_of(objects), timeout=timeout, poll=poll,
                            apply_with=apply_with)
    except (RenderError, k8s.KubeError) as exc:
        raise _fail(exc) from None
    _finish(result, ca_file)


def _print_secret_note(objects: list[dict[str, Any]]) -> None:
    from odradek.deploy.k8s import external_services
    from odradek.deploy.secrets import ADMIN_SECRET, TLS_SECRET

    if external_services(objects):
        out.print(f"# then, once the load balancers have addresses: the Secrets {ADMIN_SECRET} and {TLS_SECRET} "
                  "when missing (a random password; a CA and a certificate for those addresses)", markup=False)


@deploy_app.command("gke")
def gke_cmd(
    project: Annotated[str, typer.Option("--project", help="Google Cloud project id")],
    zone: Annotated[str, typer.Option("--zone", help="zone of the cluster, e.g. europe-west1-b")],
    cluster: Annotated[str, typer.Option("--cluster", help="GKE cluster name")] = "odradek",
    nodes: Annotated[int | None, typer.Option(
        "--nodes", min=1, help="nodes in the pool (default: 1 single, 3 cluster)")] = None,
    machine_type: Annotated[str, typer.Option("--machine-type", help="node machine type")] = "e2-standard-2",
    overlay: OverlayOpt = "single",
    expose: ExposeOpt = False,
    image: ImageOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print every request and manifest, send nothing")] = False,
    delete: Annotated[bool, typer.Option("--delete", help="delete the GKE cluster (and everything on it)")] = False,
    use_kubectl: UseKubectlOpt = False,
    timeout: TimeoutOpt = 900.0,
    poll: PollOpt = 10.0,
    gke_endpoint: GkeEndpointOpt = None,
    k8s_host: K8sHostOpt = None,
    ca_file: CaFileOpt = "odradek-ca.pem",
) -> None:
    """Create (or reuse) a GKE cluster and deploy odradek to it; --delete tears it down.
    With --expose each broker gets a load balancer (SASL_SSL only) and the client
    properties to connect are printed."""
    _require("yaml", "kubernetes", "google.cloud.container_v1")
    from odradek.deploy import k8s
    from odradek.deploy.gke import ClusterSpec, Gke, GkeError, dry_run_delete, dry_run_requests
    from odradek.deploy.render import DEFAULT_IMAGE, RenderError, namespace_of

    overlay = _exposed(overlay, expose)
    n = nodes if nodes is not None else (1 if overlay.startswith("single") else 3)
    spec = ClusterSpec(project=project, zone=zone, name=cluster, nodes=n, machine_type=machine_type)
    try:
        if dry_run:
            requests = dry_run_delete(spec, gke_endpoint) if delete else dry_run_requests(spec, gke_endpoint)
            for method, url, body in requests:
                out.print(f"{method} {url}", markup=False)
                if body is not None:
                    out.print(json.dumps(body, indent=2), markup=False)
            if not delete:
                objects = _objects(overlay, image)
                _print_apply_requests(objects, k8s_host or "https://<cluster endpoint>")
                _print_secret_note(objects)
            return
        objects = _objects(overlay, image)
        if not delete and "/" not in (image or DEFAULT_IMAGE).split(":")[0]:
            err.print(f"note: image {image or DEFAULT_IMAGE} is not in a registry GKE can pull from; "
                      "push it (see README.md, Deploy to GKE) and pass --image")
        gke = Gke(spec, err, endpoint=gke_endpoint, poll=poll, timeout=max(timeout, 1800.0))
        if delete:
            gke.delete_cluster()
            out.print(f"deleted GKE cluster {cluster}")
            return
        access = gke.ensure_cluster()
        token = gke.token()
        api = k8s.client_for(k8s_host, token) if k8s_host else k8s.client_for(access.host, token, access.ca_cert_pem)
        apply_with = None
        if use_kubectl:
            if access.ca_cert_pem is None or token is None:
                raise GkeError("--use-kubectl needs the cluster CA and a Google token")
            cfg = _write_kubeconfig(k8s.kubeconfig_yaml(access.host, access.ca_cert_pem, token, cluster))
            apply_with = lambda objs: k8s.kubectl_apply(objs, [f"--kubeconfig={cfg}"])
        try:
            result = k8s.deploy(k8s.Kube(api), objects, err, namespace=namespace_of(objects), timeout=timeout,
                                poll=poll, apply_with=apply_with)
        finally:
            if use_kubectl:
                os.unlink(cfg)  # it holds a bearer token
    except (GkeError, RenderError, k8s.KubeError) as exc:
        raise _fail(exc) from None
    _finish(result, ca_file)
    out.print(f"kubectl access: gcloud container clusters get-credentials {cluster} --zone {zone} "
              f"--project {project}")


def _write_kubeconfig(text: str) -> str:
    fd, path = tempfile.mkstemp(prefix="odradek-kubeconfig-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path

