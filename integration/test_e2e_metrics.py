"""`run --metrics-address` end to end: scraped while the agent runs, the endpoint shows the
run's requests and grants and nothing of a token, a path or a query; the agent itself
cannot connect to it."""

from __future__ import annotations

import json
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from integration.e2e import DevEnv, agent_file

pytestmark = pytest.mark.privileged

MARKER = "q7marker"  # in every request's query: in no log line and not in the metrics
PATH_MARKER = "pathmark"  # in every path: the audit log may name it, the metrics never

AGENT = f"""\
import json, os, socket, sys, time, urllib.request, urllib.error

alpha, beta, port, flags = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
results = []
for url in (alpha, beta, alpha, "http://undeclared.example/"):
    try:
        with urllib.request.urlopen(url + "p/{PATH_MARKER}?k={MARKER}", timeout=20) as r:
            results.append(r.status)
    except urllib.error.HTTPError as err:
        results.append(err.code)
# The metrics address, from inside the sandbox: only the agent's own loopback is here.
try:
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    metrics = "connected"
except OSError as err:
    metrics = type(err).__name__
open(os.path.join(flags, "ready"), "w").close()
deadline = time.monotonic() + 30
while not os.path.exists(os.path.join(flags, "done")) and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps({{"statuses": results, "metrics": metrics}}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_scraped_during_a_run(devenv: DevEnv, run_agent: Any) -> None:
    port = _free_port()
    flags = Path(tempfile.mkdtemp(prefix="flags-", dir=devenv.base))
    flags.chmod(0o1777)
    agent = agent_file(devenv, "metrics_agent.py", AGENT)
    result: dict[str, Any] = {}

    def run() -> None:
        result["run"] = run_agent(
            [sys.executable, str(agent), devenv.alpha.url, devenv.beta.url, str(port),
             str(flags)],
            extra_args=["--metrics-address", f"127.0.0.1:{port}"],
            forbidden=[MARKER],
        )

    runner = threading.Thread(target=run)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while not (flags / "ready").exists():
            assert runner.is_alive() and time.monotonic() < deadline, result.get("run")
            time.sleep(0.05)
        # A request is counted when the proxy has finished with it, which may be a moment
        # after the agent has its answer: scrape until the fourth shows (bounded).
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                text = r.read().decode()
            done = ("openshell_supervisor_request_duration_seconds_count", ())
            if _samples(text).get(done) == 4 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        (flags / "done").touch()
        runner.join(60)
    run = result["run"]
    assert run.returncode == 0, run.explain()
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["statuses"] == [200, 200, 200, 403]
    assert report["metrics"] == "ConnectionRefusedError"  # the agent's loopback, not ours

    samples = _samples(text)
    req = "openshell_supervisor_requests_total"
    assert samples[(req, (("code", "2xx"), ("decision", "allowed")))] == 3
    assert samples[(req, (("code", "policy_denied"), ("decision", "denied")))] == 1
    assert samples[("openshell_supervisor_grants_total", (("outcome", "success"),))] == 2
    cache = "openshell_supervisor_token_cache_total"
    assert samples[(cache, (("result", "hit"),))] == 1
    assert samples[(cache, (("result", "miss"),))] == 2
    assert samples[("openshell_supervisor_workload_api_calls_total",
                    (("outcome", "success"),))] == 2
    assert samples[("openshell_supervisor_request_duration_seconds_count", ())] == 4
    assert samples[("openshell_supervisor_relayed_bytes_total",
                    (("direction", "from_upstream"),))] > 0
    # Nothing of a request or a secret: no path, query, host or token anywhere.
    for needle in (MARKER, PATH_MARKER, "alpha", "beta", "127.0.0.2", "Bearer", "eyJ"):
        assert needle not in text
    for secret in devenv.secrets.snapshot():
        assert secret not in text


def test_refused_where_the_agent_could_reach_it(devenv: DevEnv, run_agent: Any) -> None:
    run = run_agent(["/bin/true"], extra_args=["--network", "host", "--metrics-address",
                                               f"127.0.0.1:{_free_port()}"])
    assert run.returncode == 125
    assert "--metrics-address: needs --network isolated" in run.stderr
    run = run_agent(["/bin/true"], extra_args=["--metrics-address", "metrics.local:9"])
    assert run.returncode == 125 and "--metrics-address" in run.stderr
