"""The Dockerfile's structure (no container engine here: the image cannot be built in CI)."""

from __future__ import annotations

import fnmatch
import re
import tomllib

import pytest

from supervisor.settings import DEFAULT_AGENT_GID, DEFAULT_AGENT_UID, PROFILES_ENV_VAR
from tests.deploy import dockerfile
from tests.deploy.conftest import ROOT, SECCOMP_PROFILE
from tests.deploy.test_manifests import SUPERVISOR_CAPS

DOCKERFILE = dockerfile.parse(ROOT / "Dockerfile")
FINAL = len(DOCKERFILE.stages) - 1


def final(keyword: str) -> list[dockerfile.Instruction]:
    return [i for i in DOCKERFILE.stage(FINAL) if i.keyword == keyword]


def test_two_stages_on_python_311_slim() -> None:
    stages = DOCKERFILE.stages
    assert len(stages) == 2
    args = {
        i.value.split("=", 1)[0]: i.value.split("=", 1)[1]
        for i in DOCKERFILE.stage(-1)
        if i.keyword == "ARG"
    }
    images = [s.value.split()[0].replace("${PYTHON_IMAGE}", args["PYTHON_IMAGE"]) for s in stages]
    assert images == ["python:3.11-slim", "python:3.11-slim"]
    assert stages[0].value.endswith("AS builder")


def test_builder_compiles_wheels_of_the_project() -> None:
    runs = " ".join(i.value for i in DOCKERFILE.stage(0) if i.keyword == "RUN")
    assert "gcc" in runs and "libcap-dev" in runs
    assert re.search(r"pip wheel .* \. -w /wheels", runs)


def test_runtime_has_no_toolchain_and_installs_from_wheels_only() -> None:
    runs = " ".join(i.value for i in final("RUN"))
    for banned in ("gcc", "libcap-dev", "build-essential", "libc6-dev", "-dev "):
        assert banned not in runs
    assert "libcap2" in runs
    assert "--no-index --find-links /wheels" in runs
    copies = final("COPY")
    assert [c.value for c in copies] == ["--from=builder /wheels /wheels"]


def test_runtime_byte_compiles_the_installed_package() -> None:
    runs = [i.value for i in final("RUN")]
    (install,) = [r for r in runs if "pip install" in r]
    assert "--no-compile" not in install
    # In the same layer, after the install, on the package in site-packages; the build
    # fails if the package is not where compileall looks (compileall alone exits 0 then).
    pip_at = install.index("pip install")
    compile_at = install.index("python -m compileall")
    assert pip_at < compile_at
    assert 'sysconfig.get_path("purelib")' in install
    assert 'test -f "$site/supervisor/__init__.py"' in install
    assert install[compile_at:].split("&&")[0].strip().endswith('"$site/supervisor"')
    # ... and nothing tells Python to ignore or skip bytecode at run time.
    for inst in DOCKERFILE.instructions:
        assert "PYTHONDONTWRITEBYTECODE" not in inst.value, inst
    assert "PYTHONDONTWRITEBYTECODE" not in dockerfile.env(DOCKERFILE, FINAL)


def test_entrypoint_is_the_supervisor_in_exec_form() -> None:
    (entrypoint,) = final("ENTRYPOINT")
    assert entrypoint.json_args() == ["openshell-supervisor", "run", "--"]
    (cmd,) = final("CMD")
    assert cmd.json_args() == ["/bin/sh"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "openshell-supervisor" in scripts


def test_entrypoint_runs_as_root_and_the_agent_user_exists() -> None:
    # The supervisor needs root; a USER line would start it unprivileged.
    users = [i.value for i in final("USER")]
    assert users in ([], ["root"], ["0"], ["0:0"])
    runs = " ".join(i.value for i in final("RUN"))
    # The build fails unless the agent's default identity exists in the image.
    assert f"getent passwd {DEFAULT_AGENT_UID}" in runs
    assert f"getent group {DEFAULT_AGENT_GID}" in runs


def test_environment_defaults() -> None:
    env = dockerfile.env(DOCKERFILE, FINAL)
    assert env[PROFILES_ENV_VAR] == "/etc/openshell/profiles/profiles.yaml"
    assert env["SPIFFE_ENDPOINT_SOCKET"] == "unix:///spiffe-workload-api/spire-agent.sock"
    runs = " ".join(i.value for i in final("RUN"))
    assert "/spiffe-workload-api" in runs and "/etc/openshell/profiles" in runs


def test_no_network_healthcheck() -> None:
    assert [i.value for i in final("HEALTHCHECK")] == ["NONE"]


def test_capabilities_and_confinement_are_documented() -> None:
    docs = DOCKERFILE.comments
    for cap in SUPERVISOR_CAPS:
        assert re.search(rf"\b{cap}\b", docs), cap
        assert f"--cap-add {cap}" in docs, cap
    assert "--cap-drop ALL" in docs
    assert "seccomp=" + str(SECCOMP_PROFILE.relative_to(ROOT)) in docs
    assert "apparmor=unconfined" in docs
    assert "docker run" in docs
    (label,) = [i.value for i in final("LABEL") if "required-capabilities" in i.value]
    listed = re.search(r'required-capabilities="([^"]+)"', label)
    assert listed and set(listed.group(1).split(",")) == SUPERVISOR_CAPS


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for the patterns used here: last match wins, '!' re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        candidates = [pat, pat.removeprefix("**/")] if pat.startswith("**/") else [pat]
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        tails = ["/".join(parts[i:]) for i in range(len(parts))]
        hit = any(fnmatch.fnmatchcase(p, c) for c in candidates for p in prefixes)
        if pat.startswith("**/"):
            hit = hit or any(fnmatch.fnmatchcase(t, pat[3:]) for t in tails)
        if hit:
            ignored = not negate
    return ignored


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        ("pyproject.toml", False),
        ("README.md", False),
        ("supervisor/cli.py", False),
        ("supervisor/profiles/model.py", False),
        ("supervisor/__pycache__/cli.cpython-311.pyc", True),
        (".venv/bin/python", True),
        (".git/HEAD", True),
        (".mypy_cache/x", True),
        (".pytest_cache/x", True),
        ("tests/conftest.py", True),
        ("openshell_supervisor.egg-info/PKG-INFO", True),
    ],
)
def test_dockerignore_keeps_only_the_sources(path: str, ignored: bool) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert _ignored(path, patterns) is ignored


def test_build_context_holds_what_the_build_copies() -> None:
    for copy in DOCKERFILE.stage(0):
        if copy.keyword == "COPY":
            for source in copy.value.split()[:-1]:
                assert (ROOT / source).exists(), source
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    copied = " ".join(i.value for i in DOCKERFILE.stage(0) if i.keyword == "COPY")
    assert readme in copied.split()
