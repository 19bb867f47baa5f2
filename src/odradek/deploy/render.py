"""Render the kustomize overlays under deploy/k8s into Kubernetes objects.

`kubectl kustomize` does the rendering when kubectl is on PATH. Without kubectl the
pre-rendered copies in deploy/k8s/rendered/ are used; a test keeps them equal to
what `kubectl kustomize` prints, so both paths give the same objects. Regenerate
them with `python -m odradek.deploy.render --write` after editing a manifest.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

K8S_DIR = Path(__file__).resolve().parent / "k8s"
RENDERED_DIR = K8S_DIR / "rendered"
OVERLAYS = ("single", "cluster", "single-external", "cluster-external")
BROKER_CONTAINER = "odradek"
RACK_CONTAINER = "rack"
DEFAULT_IMAGE = "odradek:0.1.0"

Manifest = dict[str, Any]


class RenderError(RuntimeError):
    """The manifests could not be rendered; the message is one sentence."""


def overlay_dir(overlay: str) -> Path:
    """The kustomize directory of an overlay, checked against the known names."""
    if overlay not in OVERLAYS:
        raise RenderError(f"unknown overlay {overlay!r}; choose one of {', '.join(OVERLAYS)}")
    return K8S_DIR / overlay


def kustomize(overlay: str, kubectl: str | None = None) -> str:
    """`kubectl kustomize <overlay>` output, or the pre-rendered copy without kubectl."""
    path = overlay_dir(overlay)
    kubectl = kubectl or shutil.which("kubectl")
    if kubectl is None:
        rendered = RENDERED_DIR / f"{overlay}.yaml"
        if not rendered.exists():
            raise RenderError(f"kubectl is not on PATH and there is no pre-rendered {rendered.name}")
        return rendered.read_text(encoding="utf-8")
    proc = subprocess.run([kubectl, "kustomize", str(path)], check=False, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RenderError(f"kubectl kustomize {overlay} failed: {last}")
    return proc.stdout


def set_image(objects: list[Manifest], image: str) -> None:
    """Point the broker container of every odradek StatefulSet at `image` (and the cluster
    overlay's init container that finds the rack, deploy/node_zone.py, which runs the same image)."""
    for obj in objects:
        if obj.get("kind") != "StatefulSet":
            continue
        spec = obj["spec"]["template"]["spec"]
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            if container.get("name") in (BROKER_CONTAINER, RACK_CONTAINER):
                container["image"] = image


def render(overlay: str, image: str | None = None, namespace: str | None = None) -> list[Manifest]:
    """The overlay's objects in apply order (Namespace first), with the image set."""
    objects = [doc for doc in yaml.safe_load_all(kustomize(overlay)) if doc]
    if image:
        set_image(objects, image)
    if namespace:
        for obj in objects:
            if obj["kind"] == "Namespace":
                obj["metadata"]["name"] = namespace
            else:
                obj["metadata"]["namespace"] = namespace
    return objects


def namespace_of(objects: list[Manifest]) -> str:
    """The namespace the overlay deploys into."""
    for obj in objects:
        if obj["kind"] == "Namespace":
            return str(obj["metadata"]["name"])
    return str(objects[0]["metadata"].get("namespace", "default"))


def to_yaml(objects: list[Manifest]) -> str:
    """Objects as one multi-document YAML stream, as kubectl prints them."""
    return str(yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False))


def write_rendered(kubectl: str | None = None) -> list[Path]:
    """Refresh deploy/k8s/rendered/ from `kubectl kustomize` (needs kubectl)."""
    kubectl = kubectl or shutil.which("kubectl")
    if kubectl is None:
        raise RenderError("writing the pre-rendered manifests needs kubectl on PATH")
    RENDERED_DIR.mkdir(exist_ok=True)
    written = []
    for overlay in OVERLAYS:
        target = RENDERED_DIR / f"{overlay}.yaml"
        target.write_text(kustomize(overlay, kubectl), encoding="utf-8")
        written.append(target)
    return written


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        for p in write_rendered():
            print(p)
    else:
        print("usage: python -m odradek.deploy.render --write", file=sys.stderr)
        sys.exit(2)
