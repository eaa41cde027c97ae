"""`run --upstream-proxy` end to end: the real supervisor, the alpha/beta grant flow, and a
recording CONNECT proxy standing in for the cluster's egress proxy."""

from __future__ import annotations

import base64
import sys
from typing import Any

import pytest

from integration.e2e import DevEnv
from tests.proxy.connect_proxy import RecordingConnectProxy

pytestmark = pytest.mark.privileged

USER, PASSWORD = "egress", "pr0xy-pa55"
AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def _issuer_port(devenv: DevEnv) -> str:
    return devenv.issuer.token_url.split(":")[2].split("/")[0]


def test_upstreams_are_tunnelled_except_exclusions_and_the_token_endpoint(
    devenv: DevEnv, run_agent: Any
) -> None:
    alpha, beta = devenv.alpha, devenv.beta
    with RecordingConnectProxy(require_auth=AUTH) as proxy:
        url = proxy.url.replace("://", f"://{USER}:{PASSWORD}@")
        run = run_agent(
            [sys.executable, devenv.agent("urllib_agent.py"), alpha.url, beta.url, alpha.url],
            extra_args=["--upstream-proxy", url, "--no-upstream-proxy", "127.0.0.3"],
            # The supervisor's own proxy variables name the recording proxy too: ignored.
            prefix=["env", f"HTTPS_PROXY={proxy.url}", f"HTTP_PROXY={proxy.url}",
                    f"ALL_PROXY={proxy.url}", "OPENSHELL_SUPERVISOR_LOG_LEVEL=debug"],
            forbidden=[PASSWORD, AUTH],
        )
        assert run.returncode == 0, run.explain()
        assert [r["status"] for r in run.report()] == [200, 200, 200]
        assert [r["body"]["aud"] for r in run.report()] == ["alpha", "beta", "alpha"]
        # alpha through the proxy (one pooled tunnel, to the checked address), beta excluded,
        # the token endpoint (127.0.0.1) direct: never listed.
        assert proxy.targets() == [f"127.0.0.2:{alpha.port}"]
        assert {(s.method, s.authorization) for s in proxy.seen} == {("CONNECT", AUTH)}
        assert _issuer_port(devenv) not in " ".join(proxy.targets())
    assert PASSWORD not in run.stdout  # the agent never learns the proxy's credentials


def test_without_the_option_the_supervisors_proxy_variables_are_ignored(
    devenv: DevEnv, run_agent: Any
) -> None:
    with RecordingConnectProxy() as proxy:
        run = run_agent(
            [sys.executable, devenv.agent("urllib_agent.py"), devenv.alpha.url],
            prefix=["env", f"HTTPS_PROXY={proxy.url}", f"HTTP_PROXY={proxy.url}",
                    f"OPENSHELL_SUPERVISOR_UPSTREAM_PROXY_IGNORED={proxy.url}"],
        )
        assert run.returncode == 0, run.explain()
        assert [r["status"] for r in run.report()] == [200]
        assert proxy.seen == []


def test_env_variable_configures_the_proxy(devenv: DevEnv, run_agent: Any) -> None:
    with RecordingConnectProxy() as proxy:
        run = run_agent(
            [sys.executable, devenv.agent("urllib_agent.py"), devenv.beta.url],
            prefix=["env", f"OPENSHELL_SUPERVISOR_UPSTREAM_PROXY={proxy.url}",
                    "OPENSHELL_SUPERVISOR_NO_UPSTREAM_PROXY=127.0.0.2"],
        )
        assert run.returncode == 0, run.explain()
        assert proxy.targets() == [f"127.0.0.3:{devenv.beta.port}"]


def test_a_refusing_proxy_is_502_with_its_status_in_the_audit(
    devenv: DevEnv, run_agent: Any
) -> None:
    before = devenv.counts()
    with RecordingConnectProxy(refuse=403) as proxy:
        run = run_agent([sys.executable, devenv.agent("urllib_agent.py"), devenv.alpha.url],
                        extra_args=["--upstream-proxy", proxy.url])
        assert proxy.targets() == [f"127.0.0.2:{devenv.alpha.port}"]
    assert run.returncode == 0, run.explain()
    (result,) = run.report()
    assert result["status"] == 502 and result["proxy_error"] == "upstream_unreachable"
    assert devenv.counts()["alpha"] == before["alpha"]  # nothing reached alpha
    (event,) = [e for e in run.http_events() if e.get("message") == "upstream_unreachable"]
    assert "refused CONNECT" in event["status_detail"] and "403" in event["status_detail"]


def test_a_bad_proxy_option_is_125_naming_it(devenv: DevEnv, run_agent: Any) -> None:
    run = run_agent(["/bin/true"], extra_args=["--upstream-proxy", "socks5://x:1",])
    assert run.returncode == 125
    assert "--upstream-proxy: scheme must be http or https" in run.stderr
    run = run_agent(["/bin/true"], extra_args=["--upstream-proxy", "http://127.0.0.1:9",
                                               "--no-upstream-proxy", "10.0.0.0/99"])
    assert run.returncode == 125 and "--no-upstream-proxy: entry '10.0.0.0/99'" in run.stderr
