"""The suite's own guards can fail: the secret scan, the signing spy, the curl parser."""

from __future__ import annotations

import subprocess

import pytest

from integration.e2e import AgentRun, SecretRecorder, assert_no_secrets, parse_curl_output
from supervisor.devenv.keys import SigningKey


def make_run(stdout: str = "", stderr: str = "", audit: list[str] | None = None) -> AgentRun:
    return AgentRun(subprocess.CompletedProcess(["x"], 0, stdout, stderr), audit or [])


def test_recorder_sees_every_signature() -> None:
    recorder, key = SecretRecorder(), SigningKey()
    recorder.record(key)
    token = key.sign({"sub": "x"})
    assert recorder.snapshot() == {token}


@pytest.mark.parametrize("run", [
    make_run(audit=['{"msg": "Bearer abc"}']),
    make_run(stderr="token eyJhbGciOi..."),
    make_run(stdout="the agent saw tok.en.value"),
    make_run(audit=['{"url": "q=marker123"}']),
    make_run(audit=["not json"]),
])
def test_secret_scan_catches_leaks(run: AgentRun) -> None:
    with pytest.raises(AssertionError):
        assert_no_secrets(run, {"tok.en.value"}, ["marker123"])


def test_secret_scan_passes_clean_output() -> None:
    assert_no_secrets(make_run("ok", "started", ['{"a": 1}']), {"tok.en.value"}, ["m"])


def test_parse_curl_output() -> None:
    out = ("--- e2e-response\nHTTP/1.1 502 Bad Gateway\r\nX-OpenShell-Proxy-Error: "
           'token_grant_failed\r\n\r\n{"error": "token_grant_failed"}\n'
           "--- e2e-response\nHTTP/1.1 200 OK\r\n\r\n{\"aud\": \"alpha\"}\n")
    assert parse_curl_output(out) == [
        {"status": 502, "body": {"error": "token_grant_failed"},
         "proxy_error": "token_grant_failed"},
        {"status": 200, "body": {"aud": "alpha"}, "proxy_error": None},
    ]
