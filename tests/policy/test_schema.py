"""Sandbox policy files: schema, one-pass diagnostics, merge with profiles, validate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.cli import main
from supervisor.policy.identity import policy_identity
from supervisor.policy.loader import is_policy_file, load_config, load_policy
from supervisor.policy.schema import looks_like_policy
from supervisor.profiles.diagnostics import ProfileError

# Written for these tests: every construct of OpenShell's example policies.
FULL = """\
version: 1
filesystem_policy:
  include_workdir: true
  read_only: [/usr, /lib, /proc, /dev/urandom, /app, /etc, /var/log]
  read_write: [/sandbox, /tmp, /dev/null]
landlock:
  compatibility: best_effort
process:
  run_as_user: sandbox
  run_as_group: sandbox
network_policies:
  code_host:
    name: code-host
    endpoints:
      - host: api.example.org
        port: 443
        protocol: rest
        enforcement: enforce
        access: read-only
      - host: example.org
        port: 443
    binaries:
      - { path: /usr/bin/git }
      - { path: /usr/bin/curl }
      - { path: "/opt/tools/**/python3*" }
  native:
    endpoints:
      - { host: cache.example.internal, port: 6379, protocol: tcp }
    binaries:
      - { path: "/**" }
  unscoped:
    endpoints:
      - { host: llm.example.net, port: 443 }
network_middlewares:
  redactor:
    middleware: example/redact
    endpoints: { include: [example.org] }
"""

STATIC_PROFILE = """\
id: storage
display_name: Storage
description: static key, no endpoints of its own
category: test
credentials:
  - name: key
    description: api key
binaries: []
endpoints: []
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def diagnostics(path: str, profiles: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(ProfileError) as info:
        load_config(profiles, path)
    return [str(d) for d in info.value.diagnostics]


def test_full_policy_loads_with_the_expected_meaning(tmp_path: Path) -> None:
    path = write(tmp_path, "policy.yaml", FULL)
    profiles, policy = load_config((), path)
    assert policy is not None and policy.filesystem is not None
    assert policy.filesystem.read_write == ("/sandbox", "/tmp", "/dev/null")
    assert policy.filesystem.include_workdir and not policy.filesystem.hard_requirement
    assert (policy.run_as_user, policy.run_as_group) == ("sandbox", "sandbox")
    assert policy.middlewares == ("redactor",)
    ids = [p.id for p in profiles.profiles]
    assert ids == ["policy:code_host", "policy:native", "policy:unscoped"]
    code = profiles.profiles[0]
    assert [e.host for e in code.endpoints] == ["api.example.org", "example.org"]
    assert all("/usr/bin/git" in (e.binaries or ()) for e in code.endpoints)
    assert profiles.profiles[2].endpoints[0].binaries == ()  # no binaries: nobody
    warnings = "\n".join(profiles.warnings)
    assert "network_middlewares: not supported" in warnings
    assert "'tcp' (transparent capture) is not supported" in warnings
    assert "unscoped.binaries: no binaries" in warnings


def test_every_problem_reported_in_one_pass(tmp_path: Path) -> None:
    bad = """\
version: 2
surprise: true
filesystem_policy:
  read_only: [usr, /a/../b]
  read_write: [/]
landlock: {compatibility: sometimes}
process: {run_as_user: "0", run_as_group: root}
network_policies:
  one:
    endpoints: [{host: a.example, port: 99999}]
    binaries: [/usr/bin/curl, {path: relative}]
"""
    found = "\n".join(diagnostics(write(tmp_path, "bad.yaml", bad)))
    for expected in (
        "version: must be 1", "surprise: unknown key", "read_only[0]: must be an absolute",
        "read_only[1]: must not contain '..'", "read_write[0]: '/' is too broad",
        "landlock.compatibility: must be one of best_effort, hard_requirement",
        "process.run_as_user: 0 (root) is not allowed",
        "process.run_as_group: must be 'sandbox' or a numeric id",
        "endpoints[0].port", "binaries[0]: expected {path: ...}",
        "binaries[1].path: must be an absolute path",
    ):
        assert expected in found, expected


def test_credential_binding_binds_an_endpointless_profile(tmp_path: Path) -> None:
    profile = write(tmp_path, "storage.yaml", STATIC_PROFILE)
    policy = write(tmp_path, "p.yaml", """\
version: 1
network_policies:
  blobs:
    endpoints:
      - host: storage.example.com
        port: 443
        protocol: rest
        access: full
        credential_binding: {provider: storage}
    binaries: [{path: /usr/bin/curl}]
""")
    profiles, _ = load_config((profile,), policy)
    bound = profiles.profile("policy:blobs:storage")
    assert bound is not None
    assert [c.name for c in bound.credentials] == ["key"]
    assert bound.endpoints[0].host == "storage.example.com"
    assert bound.endpoints[0].binaries == ("/usr/bin/curl",)
    found = "\n".join(diagnostics(policy))  # without the profile loaded
    assert "credential_binding: no loaded profile 'storage'" in found


def test_policy_and_profile_files_told_apart(tmp_path: Path) -> None:
    policy = write(tmp_path, "p.yaml", FULL)
    profile = write(tmp_path, "storage.yaml", STATIC_PROFILE)
    assert is_policy_file(policy) and not is_policy_file(profile)
    result = CliRunner().invoke(main, ["validate", "--json", profile, policy])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["policy_files"] == [policy] and doc["profile_files"] == [profile]
    assert doc["policies"][0]["network_policies"] == ["code_host", "native", "unscoped"]
    assert doc["policies"][0]["landlock"] == "best_effort"
    bad = write(tmp_path, "bad.yaml", "version: 1\nprocess: {run_as_user: 0}\n")
    result = CliRunner().invoke(main, ["validate", bad])
    assert result.exit_code == 1
    assert "process.run_as_user: 0 (root) is not allowed" in result.output


def test_identity_from_the_policy() -> None:
    assert policy_identity(None, None) == (65534, 65534, ())
    assert policy_identity("1500", "1600") == (1500, 1600, ())
    assert policy_identity("sandbox", "sandbox")[:2] == (65534, 65534)  # no such user here


def test_load_policy_refuses_a_list(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="one mapping"):
        load_policy(write(tmp_path, "l.yaml", "- version: 1\n"))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=12,
)
policy_keys = st.sampled_from(["version", "filesystem_policy", "landlock", "process",
                               "network_policies", "network_middlewares", "other"])


# Half the documents carry a valid version, so the accepting branch is drawn too.
documents = st.dictionaries(policy_keys, json_values, max_size=6) | st.dictionaries(
    policy_keys, json_values, max_size=5
).map(lambda d: {**d, "version": 1})


@settings(deadline=None)  # file I/O per example: a loaded machine must not fail it
@given(documents)
def test_any_document_gives_a_policy_or_diagnostics(doc: dict[str, object]) -> None:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(yaml.safe_dump(doc))
        f.flush()
        try:
            _profiles, policy = load_config((), f.name)
        except ProfileError as exc:
            assert exc.errors  # a refusal always says why
        else:  # accepted: only what the schema allows, and all of it kept
            assert policy is not None
            assert doc.get("version") == 1 and type(doc["version"]) is int
            assert "other" not in doc
            assert len(policy.network) == len(doc.get("network_policies") or {})
    assert looks_like_policy(doc) == (bool(set(doc) - {"other"}))
