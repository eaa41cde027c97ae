"""The Kubernetes manifests: they parse, render, validate against the Kubernetes 1.30
schemas offline, and keep the sandbox's security properties."""

from __future__ import annotations

import copy
import posixpath
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from supervisor.settings import DEFAULT_AGENT_UID
from tests.conftest import EXAMPLE_PROFILE
from tests.deploy import dockerfile
from tests.deploy.conftest import KUBE, NAMESPACE, ROOT, find
from tests.deploy.kustomize import KustomizeError, Resource, render

K8S_VERSION = "1.30"
SUPERVISOR_CAPS = {"SYS_ADMIN", "SYS_CHROOT", "NET_ADMIN", "SETUID", "SETGID", "SETPCAP", "KILL",
                   "SYS_PTRACE"}
# ARCHITECTURE.md 3.2: directories that can never be the socket's parent.
SHARED_ROOTS = {
    "/",
    "/run",
    "/var",
    "/var/run",
    "/tmp",
    "/etc",
    "/home",
    "/usr",
    "/opt",
    "/srv",
    "/dev",
    "/proc",
    "/sys",
    "/root",
    "/mnt",
    "/media",
    "/boot",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
}
CRDS = {("spire.spiffe.io/v1alpha1", "ClusterSPIFFEID")}
ALL_MANIFESTS = sorted(KUBE.rglob("*.yaml"))


def image_env() -> dict[str, str]:
    parsed = dockerfile.parse(ROOT / "Dockerfile")
    return dockerfile.env(parsed, len(parsed.stages) - 1)


@pytest.mark.parametrize("path", ALL_MANIFESTS, ids=lambda p: str(p.relative_to(KUBE)))
def test_every_manifest_parses(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} is empty"
    for doc in docs:
        assert {"apiVersion", "kind"} <= set(doc)


def test_every_manifest_is_reachable_from_a_kustomization(demo: list[Resource]) -> None:
    monitoring = render(KUBE / "monitoring")
    used = {r.source for r in [*demo, *monitoring]}
    used |= {p for p in ALL_MANIFESTS if p.name == "kustomization.yaml"}
    assert set(ALL_MANIFESTS) == used


@pytest.mark.parametrize("overlay", ["base", "demo"])
def test_kubernetes_objects_validate_offline(overlay: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    resources = render(KUBE / overlay)
    checked = 0
    for res in resources:
        if (res.doc["apiVersion"], res.doc["kind"]) in CRDS:
            continue
        try:
            kubernetes_validate.validate(res.doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(p) for p in err.path)
            pytest.fail(f"{res.source.name} {res.key}: {path}: {err.message}")
        checked += 1
    assert checked >= 4


def test_validation_catches_a_misspelt_field(sandbox_container: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    # Control for the test above: strict schemas refuse an unknown field.
    bad: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "x"},
        "spec": {"containers": [copy.deepcopy(sandbox_container)]},
    }
    bad["spec"]["containers"][0]["securityContext"]["capabilites"] = {"add": ["SYS_ADMIN"]}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_renderer_refuses_missing_files_and_unknown_features(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [gone.yaml]\n"
    )
    with pytest.raises(KustomizeError, match="does not exist"):
        render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\npatches: []\n"
    )
    with pytest.raises(KustomizeError, match="unsupported"):
        render(tmp_path)


def test_one_namespace_everywhere(demo: list[Resource]) -> None:
    ns = [r.doc for r in demo if r.doc["kind"] == "Namespace"]
    assert [d["metadata"]["name"] for d in ns] == [NAMESPACE]
    # Privileged pods are admitted only where Pod Security allows them.
    assert ns[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    for res in demo:
        if res.doc["kind"] not in ("Namespace", "ClusterSPIFFEID"):
            assert res.doc["metadata"]["namespace"] == NAMESPACE, res.key
    for path in ALL_MANIFESTS:  # in the YAML itself too, not only after rendering
        text = path.read_text()
        assert ".default.svc" not in text, path


def test_sandbox_security_context(sandbox_container: dict[str, Any]) -> None:
    sc = sandbox_container["securityContext"]
    assert sc["runAsUser"] == 0
    assert sc["privileged"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == SUPERVISOR_CAPS
    assert len(sc["capabilities"]["add"]) == len(SUPERVISOR_CAPS)
    # Stated explicitly (see the comment in the manifest), never left to a default.
    assert sc["allowPrivilegeEscalation"] is True
    assert sc["seccompProfile"] == {
        "type": "Localhost",
        "localhostProfile": "openshell/openshell-supervisor.json",
    }
    assert sc["appArmorProfile"] == {"type": "Unconfined"}
    assert "limits" in sandbox_container["resources"]


def test_sandbox_pod_exposes_nothing_extra(sandbox_pod: dict[str, Any]) -> None:
    assert sandbox_pod["automountServiceAccountToken"] is False
    assert sandbox_pod["enableServiceLinks"] is False
    for key in ("hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace", "hostUsers"):
        assert key not in sandbox_pod, key
    for volume in sandbox_pod["volumes"]:
        assert "hostPath" not in volume, volume["name"]


def test_workload_api_socket_comes_from_the_csi_driver_into_a_dedicated_dir(
    sandbox_pod: dict[str, Any], sandbox_container: dict[str, Any]
) -> None:
    csi = [v for v in sandbox_pod["volumes"] if "csi" in v]
    assert len(csi) == 1
    assert csi[0]["csi"] == {"driver": "csi.spiffe.io", "readOnly": True}
    (mount,) = [m for m in sandbox_container["volumeMounts"] if m["name"] == csi[0]["name"]]
    assert mount["readOnly"] is True
    assert "subPath" not in mount
    mount_dir = posixpath.normpath(mount["mountPath"])
    assert mount_dir not in SHARED_ROOTS
    # The image's default socket lies directly in that directory, so hiding the directory
    # hides the socket and nothing else.
    socket = image_env()["SPIFFE_ENDPOINT_SOCKET"]
    assert socket.startswith("unix://")
    assert posixpath.dirname(socket.removeprefix("unix://")) == mount_dir
    others = [m for m in sandbox_container["volumeMounts"] if m is not mount]
    for other in others:
        path = posixpath.normpath(other["mountPath"])
        assert not path.startswith(mount_dir + "/") and not mount_dir.startswith(path + "/")


def test_profiles_configmap_is_mounted_where_the_image_looks(
    base: list[Resource], sandbox_pod: dict[str, Any], sandbox_container: dict[str, Any]
) -> None:
    (volume,) = [v for v in sandbox_pod["volumes"] if "configMap" in v]
    cm = find(base, "ConfigMap", volume["configMap"]["name"])
    (mount,) = [m for m in sandbox_container["volumeMounts"] if m["name"] == volume["name"]]
    assert "subPath" not in mount  # a subPath mount never sees ConfigMap updates
    assert mount["readOnly"] is True
    for path in image_env()["OPENSHELL_SUPERVISOR_PROFILES"].split(":"):
        assert posixpath.dirname(path) == mount["mountPath"]
        assert posixpath.basename(path) in cm["data"]


def demo_profile(base: list[Resource]) -> dict[str, Any]:
    loaded = yaml.safe_load(find(base, "ConfigMap", "openshell-profiles")["data"]["profiles.yaml"])
    assert isinstance(loaded, dict)
    return loaded


def test_profile_is_the_reference_example_in_this_namespace(base: list[Resource]) -> None:
    reference = EXAMPLE_PROFILE.read_text()
    expected = yaml.safe_load(reference.replace(".default.svc", f".{NAMESPACE}.svc"))
    assert demo_profile(base) == expected


def _validate(path: Path) -> int:
    pytest.importorskip("supervisor.profiles.report", reason="profile validation not on main yet")
    return subprocess.run(
        [sys.executable, "-m", "supervisor", "validate", str(path)],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    ).returncode


def test_profile_passes_the_supervisors_validation(base: list[Resource], tmp_path: Path) -> None:
    good = tmp_path / "profiles.yaml"
    good.write_text(yaml.safe_dump(demo_profile(base)))
    assert _validate(good) == 0
    # Control: the same profile with a cleartext token endpoint off the cluster is refused.
    broken = demo_profile(base)
    broken["credentials"][0]["token_grant"]["token_endpoint"] = "http://issuer.example.com/token"
    bad = tmp_path / "broken.yaml"
    bad.write_text(yaml.safe_dump(broken))
    assert _validate(bad) == 1


def test_profile_loads_with_the_loader(base: list[Resource], tmp_path: Path) -> None:
    loader = pytest.importorskip(
        "supervisor.profiles.loader", reason="supervisor.profiles.loader not on main yet"
    )
    path = tmp_path / "profiles.yaml"
    path.write_text(find(base, "ConfigMap", "openshell-profiles")["data"]["profiles.yaml"])
    loaded = loader.load_profiles([str(path)])
    assert [p.id for p in loaded.profiles] == ["spiffe-token-demo"]
    grants = {b.host: (b.port, b.grant.audience, b.grant.scopes) for b in loaded.bindings}
    assert grants == {
        f"alpha.{NAMESPACE}.svc.cluster.local": (80, "alpha", ("alpha",)),
        f"beta.{NAMESPACE}.svc.cluster.local": (80, "beta", ("beta",)),
    }
    for binding in loaded.bindings:
        assert binding.grant.token_endpoint == (
            f"http://token-issuer.{NAMESPACE}.svc.cluster.local/token"
        )


def test_demo_hosts_match_the_services(demo: list[Resource], base: list[Resource]) -> None:
    profile = demo_profile(base)
    services = {r.doc["metadata"]["name"]: r.doc for r in demo if r.doc["kind"] == "Service"}
    for endpoint in profile["endpoints"]:
        name, ns, *_ = endpoint["host"].split(".")
        assert ns == NAMESPACE
        assert endpoint["port"] in [p["port"] for p in services[name]["spec"]["ports"]]
    grant = profile["credentials"][0]["token_grant"]
    issuer_host = grant["token_endpoint"].split("/")[2]
    assert issuer_host.split(".")[0] in services
    for name, svc in services.items():
        # Every Service selects exactly one Deployment's pods (alpha, beta and the issuer
        # by their own names; the sandbox's metrics Service the sandbox).
        selected = [
            r.doc["metadata"]["name"]
            for r in demo
            if r.doc["kind"] == "Deployment"
            and svc["spec"]["selector"].items()
            <= r.doc["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert selected == [name.removesuffix("-metrics")], name
        # The issuer expects exactly the SVID audience the profile asks for.
    issuer = find(demo, "Deployment", "token-issuer")["spec"]["template"]["spec"]["containers"][0]
    assert f"--expected-svid-audience={grant['jwt_svid_audience']}" in issuer["args"]


def _flags(args: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in args if a.startswith("--")}


@pytest.mark.parametrize("module", ["supervisor.devenv.token_issuer", "supervisor.devenv.services"])
def test_demo_commands_use_flags_the_modules_accept(demo: list[Resource], module: str) -> None:
    pytest.importorskip(module, reason=f"{module} not on main yet")
    help_text = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    containers = [
        c
        for r in demo
        if r.doc["kind"] == "Deployment"
        for c in r.doc["spec"]["template"]["spec"]["containers"]
        if c.get("command", [])[-1:] == [module]
    ]
    assert containers
    for container in containers:
        for flag in _flags(container["args"]):
            assert flag in help_text, f"{module} has no {flag}"


def test_clusterspiffeid_selects_the_sandbox_pods(base: list[Resource]) -> None:
    ids = [r.doc for r in base if r.doc["kind"] == "ClusterSPIFFEID"]
    assert len(ids) == 1
    doc = ids[0]
    assert doc["apiVersion"] == "spire.spiffe.io/v1alpha1"
    assert "namespace" not in doc["metadata"]  # cluster-scoped
    spec = doc["spec"]
    assert set(spec) <= {
        "spiffeIDTemplate",
        "podSelector",
        "namespaceSelector",
        "ttl",
        "jwtTtl",
        "dnsNameTemplates",
        "federatesWith",
        "admin",
        "downstream",
        "workloadSelectorTemplates",
        "className",
        "fallback",
        "hint",
        "autoPopulateDNSNames",
    }
    assert spec["spiffeIDTemplate"].startswith("spiffe://{{ .TrustDomain }}/")
    pod_labels = find(base, "Deployment", "openshell-sandbox")["spec"]["template"]["metadata"][
        "labels"
    ]
    selector = spec["podSelector"]["matchLabels"]
    assert selector and selector.items() <= pod_labels.items()
    assert spec["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": NAMESPACE}


def test_demo_peers_run_unprivileged(demo: list[Resource]) -> None:
    for name in ("token-issuer", "alpha", "beta"):
        pod = find(demo, "Deployment", name)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == DEFAULT_AGENT_UID
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
