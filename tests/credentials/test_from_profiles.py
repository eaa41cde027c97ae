"""Static credentials from loaded profiles: the binding table over OpenShell-shaped files,
and the load-time rules (uninspectable endpoints, SigV4 without AWS keys)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from supervisor.credentials.from_profiles import static_credentials
from supervisor.credentials.scope import BindingTable
from supervisor.profiles.diagnostics import ProfileError
from supervisor.profiles.loader import load_profiles
from supervisor.sandbox.environment import agent_environment, leaked_secret

# Shapes of OpenShell's providers (written here): several static credentials per endpoint,
# one variable declared by two profiles, wildcard hosts, SigV4 endpoints.
PROFILES = """\
- id: agent-a
  display_name: A
  description: codex-like, four static credentials on the same endpoints
  category: agent
  credentials:
    - {name: access_token, env_vars: [A_ACCESS], required: true}
    - {name: refresh_token, env_vars: [A_REFRESH], required: true}
    - {name: account_id, env_vars: [A_ACCOUNT], required: true}
    - {name: id_token, env_vars: [A_ID]}
  endpoints:
    - {host: api.a.example.com, port: 443, protocol: rest, access: read-write}
    - {host: auth.a.example.com, port: 443, protocol: rest, access: read-write}
- id: forge
  display_name: Forge
  description: github-like
  category: source_control
  credentials:
    - {name: api_token, env_vars: [FORGE_TOKEN, FG_TOKEN], required: true, auth_style: bearer,
       header_name: authorization}
  endpoints:
    - {host: api.forge.example.com, port: 443, protocol: rest, access: read-only}
- id: copilot-like
  display_name: Copilot-like
  description: declares FORGE_TOKEN too
  category: agent
  credentials:
    - {name: token, env_vars: [COPILOT_TOKEN, FORGE_TOKEN]}
  endpoints:
    - {host: api.copilot.example.com, port: 443, protocol: rest, access: read-write}
- id: vertex-like
  display_name: Vertex-like
  description: wildcard host, several optional bearer credentials
  category: inference
  credentials:
    - {name: sa, env_vars: [V_SA], auth_style: bearer, header_name: authorization}
    - {name: adc, env_vars: [V_ADC, V_ADC2], auth_style: bearer, header_name: authorization}
  endpoints:
    - {host: "*-aiplatform.cloud.example.com", port: 443, protocol: rest, access: read-write}
- id: s3-like
  display_name: S3-like
  description: SigV4 endpoints
  category: other
  credentials:
    - {name: access_key_id, env_vars: [AWS_ACCESS_KEY_ID], required: true}
    - {name: secret_access_key, env_vars: [AWS_SECRET_ACCESS_KEY], required: true}
    - {name: session_token, env_vars: [AWS_SESSION_TOKEN], required: true}
  endpoints:
    - {host: "*.s3.amazonaws.com", port: 443, protocol: rest, tls: terminate,
       access: read-write, credential_signing: sigv4, signing_service: s3,
       signing_region: us-east-1}
    - {host: "*.s3.*.amazonaws.com", port: 443, protocol: rest, access: read-write,
       credential_signing: "sigv4:no_body", signing_service: s3}
"""


def _load(tmp_path: Path, text: str) -> object:
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return load_profiles([str(p)])


def test_openshell_shapes_load_together_and_bind_as_declared(tmp_path: Path) -> None:
    ps = _load(tmp_path, PROFILES)
    assert ps.bindings == ()  # static credentials are not token-grant bindings
    table = BindingTable(static_credentials(ps.profiles))
    a = table.scope("api.a.example.com", 443, "/v1/responses")
    assert a.variables == {"A_ACCESS", "A_REFRESH", "A_ACCOUNT", "A_ID"}
    # FORGE_TOKEN: the union of both declaring profiles' endpoints; FG_TOKEN only forge's.
    assert table.scope("api.forge.example.com", 443, "/user").variables == {"FORGE_TOKEN",
                                                                            "FG_TOKEN"}
    assert table.scope("api.copilot.example.com", 443, "/").variables == {"COPILOT_TOKEN",
                                                                          "FORGE_TOKEN"}
    assert table.scope("us-aiplatform.cloud.example.com", 443, "/x").variables == {
        "V_SA", "V_ADC", "V_ADC2"}
    assert table.scope("api.a.example.com", 8443, "/").variables == frozenset()
    s3 = table.scope("bucket.s3.eu-west-1.amazonaws.com", 443, "/k")
    assert s3.signing is not None and (s3.signing.mode, s3.signing.region) == ("sigv4:no_body",
                                                                              None)
    glob = table.scope("bucket.s3.amazonaws.com", 443, "/k")
    assert glob.signing is not None and glob.signing.region == "us-east-1"
    assert table.covers("api.forge.example.com", 443)
    assert not table.covers("api.forge.example.com", 80)


@pytest.mark.parametrize(("endpoint", "message"), [
    ("{host: x.example.com, port: 443, protocol: rest, access: full, tls: skip}", "tls: skip"),
    ("{host: x.example.com, port: 443}", "raw tunnel"),
])
def test_static_credentials_on_uninspectable_endpoints_need_the_opt_in(
    tmp_path: Path, endpoint: str, message: str
) -> None:
    text = ("id: s\ndisplay_name: s\ndescription: s\ncategory: other\n"
            "credentials:\n  - {name: k, env_vars: [S_KEY]}\n"
            f"endpoints:\n  - {endpoint}\n")
    with pytest.raises(ProfileError) as info:
        _load(tmp_path, text)
    text_err = str(info.value)
    assert "endpoints[0]" in text_err and message in text_err
    assert "allow_uninspected_credentials" in text_err
    opted = text.replace(f"  - {endpoint}\n",
                         f"  - {endpoint[:-1]}, allow_uninspected_credentials: true}}\n")
    _load(tmp_path, opted)  # accepted with the explicit opt-in


def test_signing_needs_the_aws_key_variables(tmp_path: Path) -> None:
    text = ("id: s\ndisplay_name: s\ndescription: s\ncategory: other\n"
            "credentials:\n  - {name: k, env_vars: [AWS_ACCESS_KEY_ID]}\n"
            "endpoints:\n  - {host: sts.amazonaws.com, port: 443, protocol: rest, "
            "access: full, credential_signing: sigv4, signing_service: sts, "
            "signing_region: us-east-1}\n")
    with pytest.raises(ProfileError) as info:
        _load(tmp_path, text)
    assert "AWS_SECRET_ACCESS_KEY" in str(info.value)
    assert "endpoints[0].credential_signing" in str(info.value)


def test_agent_environment_withholds_declared_variables_and_catches_copies() -> None:
    inherited = {"PATH": "/bin", "ANTHROPIC_API_KEY": "sk-real-0123456789abcdef",
                 "CLAUDE_API_KEY": "", "COPY": "prefix sk-real-0123456789abcdef"}
    env = agent_environment(inherited, 3128, {"ANTHROPIC_API_KEY": "openshell:resolve:env:X"},
                            frozenset({"ANTHROPIC_API_KEY", "CLAUDE_API_KEY"}))
    assert env["ANTHROPIC_API_KEY"] == "openshell:resolve:env:X" and "CLAUDE_API_KEY" not in env
    assert leaked_secret(env, {"sk-real-0123456789abcdef"}) == "COPY"
    del env["COPY"]
    assert leaked_secret(env, {"sk-real-0123456789abcdef"}) is None
    assert leaked_secret({"A": "short"}, {"short"}) == "A"  # equality, whatever the length
    assert leaked_secret({"A": "a short one"}, {"short"}) is None  # containment: 16+ only
    # The command line too (the agent reads its argv); named by position, never by value.
    argv = ["/bin/agent", "--key", "x=sk-real-0123456789abcdef"]
    assert leaked_secret({}, {"sk-real-0123456789abcdef"}, argv) == "argument 2 of the command"
    assert leaked_secret({}, {"short"}, ["/bin/agent", "short"]) == "argument 1 of the command"
    assert leaked_secret({}, {"short"}, ["/bin/agent", "not short"]) is None
    # Wrapped as configuration wraps it: a Docker auth (base64 of user:token), a URL.
    tok = "ghp_REALtoken0123456789abcdef"
    for user in ("u", "us", "use"):
        auth = base64.b64encode(f"{user}:{tok}".encode()).decode()
        assert leaked_secret({"DOCKER_AUTH_CONFIG": f'{{"auths":{{"r":{{"auth":"{auth}"}}}}}}'},
                             {tok}) == "DOCKER_AUTH_CONFIG"
    assert leaked_secret({"U": "https://x:a%2Fb%2B0123456789abcdefg@h/"},
                         {"a/b+0123456789abcdefg"}) == "U"
    assert leaked_secret({"X": base64.b64encode(b"an ordinary value").decode()}, {tok}) is None
