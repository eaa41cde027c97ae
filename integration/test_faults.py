"""Fault injection end to end: the real supervisor, a scripted agent, broken dependencies.

Every scenario runs the real ``supervisor run`` (``run_supervisor`` of integration/e2e.py,
with its secret scan; for DNS the same in a private mount namespace whose resolv.conf names
a loopback resolver) with ``agents/fault_agent.py``, which takes turns with the test
through marker files: the agent marks where it is, the test breaks or repairs a dependency
and lets it go on. For each failure the agent must get the documented answer (502
``token_grant_failed`` when no token could be had, 502 ``upstream_unreachable`` when the
upstream failed), no failed call may reach a protected service (its accepted/refused logs
are unchanged), and the next good request after the failure backoff (1 s, +-20 %) must
work in the same run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from integration.e2e import (
    SPIFFE_ID,
    AgentRun,
    DevEnv,
    agent_file,
    run_supervisor,
)
from supervisor.devenv.token_issuer import IssuerFaults
from supervisor.devenv.workload_api import WorkloadAPIServer

pytestmark = pytest.mark.privileged

# Longer than the first failure's backoff (1 s + 20 % jitter), far shorter than the second's.
BACKOFF_WAIT = 1.3
GRANT_FAILED = (502, "token_grant_failed")
UNREACHABLE = (502, "upstream_unreachable")
RAW_HOST = "127.0.0.4"
DNS_HOST = "127.0.0.9"  # the fake resolver the DNS scenario's supervisor is pointed at
UNRESOLVABLE = "nonexistent.invalid"  # RFC 6761: .invalid never resolves
PARTIAL_BODY = b"0123456789"
DECLARED_LENGTH = 1000

Plan = list[dict[str, Any]]
Result = dict[str, Any]


# -- taking turns with the agent --------------------------------------------------------


Runner = Callable[..., AgentRun]


def runner_for(env: DevEnv) -> Runner:
    """``run_agent`` for a modified DevEnv (the fixture's runner is bound to the session's).

    Scenarios still request ``run_agent``: it resets the issuer's faults around them."""

    def run(argv: Sequence[str], **opts: Any) -> AgentRun:
        return run_supervisor(env, argv, **opts)

    return run


class Conductor:
    """Runs one supervisor + fault agent in a thread; the test steps in at the marks.

    On exit the ``abort`` marker releases an agent still waiting, and the run is awaited,
    so no supervisor outlives its test.
    """

    def __init__(self, env: DevEnv, runner: Runner, plan: Plan,
                 **opts: Any) -> None:
        self.markers = Path(tempfile.mkdtemp(prefix="markers-", dir=env.base))
        self.markers.chmod(0o777)  # the agent (uid 65534) writes its marks here
        plan_file = agent_file(env, "fault-plan.json", json.dumps(plan))
        argv = [sys.executable, env.agent("fault_agent.py"), str(plan_file), str(self.markers)]
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fault-run")
        self._future: Future[AgentRun] = self._pool.submit(runner, argv, timeout=60, **opts)

    def __enter__(self) -> Conductor:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.go("abort")
        with contextlib.suppress(Exception):  # the test's own failure is the one to report
            self._future.result(timeout=90)
        self._pool.shutdown(wait=True)

    def reached(self, mark: str, timeout: float = 30.0) -> None:
        """Wait until the agent has written ``mark``."""
        deadline = time.monotonic() + timeout
        while not (self.markers / mark).exists():
            if self._future.done():
                run = self._future.result()
                pytest.fail(f"the run ended before the agent reached {mark!r}:\n{run.explain()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the agent did not reach {mark!r} within {timeout:g} s")
            time.sleep(0.02)

    def go(self, mark: str) -> None:
        (self.markers / mark).touch()

    def finish(self) -> AgentRun:
        return self._future.result(timeout=90)


def run_plan(env: DevEnv, runner: Runner, plan: Plan) -> tuple[AgentRun, list[Result]]:
    """A plan without marks: run it; the run and the agent's results."""
    with Conductor(env, runner, plan) as conductor:
        run = conductor.finish()
    assert run.returncode == 0, run.explain()
    results: list[Result] = run.report()
    return run, results


# -- what the services and the audit log saw --------------------------------------------


def seen(env: DevEnv) -> dict[str, int]:
    """Accepted and refused requests per protected service (a refusal = a bad token got in)."""
    return {
        "alpha_accepted": len(env.alpha.log.accepted),
        "alpha_refused": len(env.alpha.log.refused),
        "beta_accepted": len(env.beta.log.accepted),
        "beta_refused": len(env.beta.log.refused),
    }


def grew(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in before if after[k] != before[k]}


def assert_answer(result: Result, expected: tuple[int, str]) -> None:
    status, code = expected
    assert (result["status"], result["proxy_error"], result["error"]) == (status, code, code), \
        result


def denied_codes(run: AgentRun) -> list[str]:
    """The error code of every denied HTTP Activity event, in order."""
    codes = []
    for event in run.http_events():
        if event.get("action_id") == 2:
            text = json.dumps(event)
            codes += [c for c in (GRANT_FAILED[1], UNREACHABLE[1]) if c in text][:1]
    return codes


# -- fixtures ---------------------------------------------------------------------------


@dataclasses.dataclass
class OwnWorkload:
    """A Workload API of this test alone (stop/start/faults affect nobody else)."""

    server: WorkloadAPIServer
    env: DevEnv


@pytest.fixture
def own_workload(devenv: DevEnv) -> Iterator[OwnWorkload]:
    """A Workload API socket in its own directory, NOT started: the test decides when.

    It signs with the session's key, so the issuer accepts its SVIDs and the secret scan
    knows them.
    """
    directory = Path(tempfile.mkdtemp(prefix="spire-", dir=devenv.base))
    directory.chmod(0o755)
    path = directory / "agent.sock"
    server = WorkloadAPIServer(str(path), spiffe_id=SPIFFE_ID, key=devenv.workload.key)
    try:
        yield OwnWorkload(server, dataclasses.replace(devenv, socket_path=path))
    finally:
        server.stop()


def fail_each_then_recover(
    env: DevEnv,
    runner: Runner,
    faults: Sequence[tuple[str, Callable[[], object]]],
    repair: Callable[[], object],
) -> AgentRun:
    """For each (url, inject): inject the fault, the agent GETs url and must get 502
    token_grant_failed. Then ``repair``; after the backoff every url must answer 200."""
    plan: Plan = []
    for i, (url, _) in enumerate(faults):
        plan += [{"mark": f"ready-{i}"}, {"wait": f"go-{i}"}, {"get": url}]
    plan += [{"mark": "failed"}, {"wait": "repaired"}, {"sleep": BACKOFF_WAIT}]
    plan += [{"get": url} for url, _ in faults]
    before = seen(env)
    with Conductor(env, runner, plan) as conductor:
        for i, (_, inject) in enumerate(faults):
            conductor.reached(f"ready-{i}")
            inject()
            conductor.go(f"go-{i}")
        conductor.reached("failed")
        assert seen(env) == before, "a call without a token reached a protected service"
        repair()
        conductor.go("repaired")
        run = conductor.finish()
    assert run.returncode == 0, run.explain()
    results = run.report()
    failed, recovered = results[: len(faults)], results[len(faults):]
    for result in failed:
        assert_answer(result, GRANT_FAILED)
    assert [r["status"] for r in recovered] == [200] * len(faults), recovered
    expected = {f"{name}_accepted": sum(url == getattr(env, name).url for url, _ in faults)
                for name in ("alpha", "beta")}
    assert grew(before, seen(env)) == {k: v for k, v in expected.items() if v}
    assert denied_codes(run) == [GRANT_FAILED[1]] * len(faults), run.audit_lines
    return run


# -- 1, 2: the Workload API -------------------------------------------------------------


def test_workload_api_absent_at_start(own_workload: OwnWorkload, run_agent: Any) -> None:
    """No socket when `run` starts: it starts anyway, answers 502, and picks the Workload
    API up once it appears (after the backoff), without a restart."""
    env, server = own_workload.env, own_workload.server
    alpha = env.alpha.url
    issuer_before = env.issuer.requests
    fail_each_then_recover(env, runner_for(env), [(alpha, lambda: None)],
                           repair=server.start)
    assert server.counters.fetch_jwt_svid == 1  # only the recovery asked for an SVID
    assert env.issuer.requests - issuer_before == 1


@pytest.mark.parametrize("how", ["socket_removed", "stale_socket"])
def test_workload_api_disappears_mid_run(own_workload: OwnWorkload, run_agent: Any,
                                         how: str) -> None:
    """The Workload API goes away after a first grant (its socket removed, or left behind
    with nobody listening, as after a crash): a fresh binding gets 502, the cached token of
    the first keeps working, and the fresh binding recovers once it is back."""
    env, server = own_workload.env, own_workload.server
    alpha, beta = env.alpha.url, env.beta.url
    server.start()
    plan: Plan = [
        {"get": alpha}, {"mark": "granted"}, {"wait": "gone"},
        {"get": beta}, {"get": alpha}, {"mark": "failed"}, {"wait": "back"},
        {"sleep": BACKOFF_WAIT}, {"get": beta},
    ]
    before = seen(env)
    with Conductor(env, runner_for(env), plan) as conductor:
        conductor.reached("granted")
        server.stop()
        assert not env.socket_path.exists()
        with contextlib.ExitStack() as stale:
            if how == "stale_socket":
                # Bound, never listening: connecting to it is refused.
                dead = stale.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
                dead.bind(str(env.socket_path))
            conductor.go("gone")
            conductor.reached("failed")
        during = seen(env)
        server.start()  # replaces a stale socket file
        conductor.go("back")
        run = conductor.finish()
    assert run.returncode == 0, run.explain()
    first, fresh, cached, recovered = run.report()
    assert first["status"] == 200, first
    assert_answer(fresh, GRANT_FAILED)
    assert cached["status"] == 200, cached  # a live cached token needs no Workload API
    assert recovered["status"] == 200, recovered
    assert grew(before, during) == {"alpha_accepted": 2}  # beta saw nothing while it failed
    assert grew(before, seen(env)) == {"alpha_accepted": 2, "beta_accepted": 1}
    assert denied_codes(run) == [GRANT_FAILED[1]]


def test_workload_api_hangs_past_deadline(own_workload: OwnWorkload, run_agent: Any) -> None:
    """A Workload API that answers after 6 s (past the 5 s deadline): 502, not a hang."""
    env, server = own_workload.env, own_workload.server
    server.start()

    def hang() -> None:
        with server.lock:
            server.faults.delay = 6.0

    def repair() -> None:
        with server.lock:
            server.faults.delay = 0.0

    issuer_before = env.issuer.requests
    run = fail_each_then_recover(env, runner_for(env), [(env.alpha.url, hang)], repair)
    hung = run.report()[0]
    # Liveness, not a benchmark: well below the agent's own 30 s socket timeout.
    assert hung["elapsed"] < 15, hung
    assert env.issuer.requests - issuer_before == 1  # the issuer never saw the hung attempt
    assert server.counters.fetch_jwt_svid == 2  # the hung call and the recovery, no retries


def test_workload_api_svid_with_wrong_audience(own_workload: OwnWorkload,
                                               run_agent: Any) -> None:
    """An SVID for another audience, or for one more audience than asked: 502 each, and
    the issuer is never sent either."""
    env, server = own_workload.env, own_workload.server
    server.start()

    def set_faults(wrong: str | None, extra: str | None) -> Callable[[], None]:
        def apply() -> None:
            with server.lock:
                server.faults.wrong_audience, server.faults.extra_audience = wrong, extra
        return apply

    issuer_before = env.issuer.requests
    fail_each_then_recover(
        env, runner_for(env),
        [(env.alpha.url, set_faults("https://elsewhere.example/", None)),
         (env.beta.url, set_faults(None, "https://also-elsewhere.example/"))],
        repair=set_faults(None, None),
    )
    assert server.counters.fetch_jwt_svid == 4
    assert env.issuer.requests - issuer_before == 2  # only the two recoveries


# -- 3: the token issuer ----------------------------------------------------------------


def _garbage(f: IssuerFaults) -> None:
    f.status, f.content_type, f.body = 200, "text/html", b"<html>no token here</html>"


def _oversized(f: IssuerFaults) -> None:
    # A well-formed token response, except that it is over the 64 KiB cap: only the cap
    # stands between it and an injected (bogus) token, which alpha would log as refused.
    f.status = 200
    f.body = json.dumps({"access_token": "oversized", "token_type": "Bearer",
                         "expires_in": 300, "padding": "x" * (70 * 1024)}).encode()


def _expires_negative(f: IssuerFaults) -> None:
    f.expires_in = -5


def _expires_string(f: IssuerFaults) -> None:
    f.expires_in = "300"


ISSUER_FAULTS: dict[str, tuple[Callable[[IssuerFaults], None], Callable[[IssuerFaults], None]]] = {
    "garbage_then_oversized": (_garbage, _oversized),
    "expires_in_negative_then_string": (_expires_negative, _expires_string),
}


@pytest.mark.parametrize("pair", list(ISSUER_FAULTS))
def test_issuer_faults_then_good_again(devenv: DevEnv, run_agent: Any, pair: str) -> None:
    """Alpha meets the first fault, beta the second; 502 each, then both work again."""

    def inject(fault: Callable[[IssuerFaults], None]) -> Callable[[], None]:
        def apply() -> None:
            devenv.issuer.reset_faults()
            with devenv.issuer.lock:
                fault(devenv.issuer.faults)
        return apply

    first, second = ISSUER_FAULTS[pair]
    before = devenv.issuer.requests
    fail_each_then_recover(
        devenv, run_agent,
        [(devenv.alpha.url, inject(first)), (devenv.beta.url, inject(second))],
        repair=devenv.issuer.reset_faults,
    )
    assert devenv.issuer.requests - before == 4  # one per failure (no retry storm), two good


# -- 4: an upstream that breaks its response ----------------------------------------------


class RawUpstream:
    """A raw TCP server on 127.0.0.4 that breaks each response as its path says:
    /truncate-close, /truncate-reset: a head with Content-Length 1000, 10 bytes, then
    FIN or RST; /close-before-head, /reset-before-head: no response at all."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((RAW_HOST, 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self.paths: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="raw-upstream", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def url(self, path: str) -> str:
        return f"http://{RAW_HOST}:{self.port}{path}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            with contextlib.suppress(OSError):
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                break
            head += chunk
        path = head.split(b" ", 2)[1].decode("latin-1") if head.count(b" ") >= 2 else ""
        self.paths.append(path)
        if path.startswith("/truncate"):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         b"Content-Length: %d\r\n\r\n" % DECLARED_LENGTH + PARTIAL_BODY)
            time.sleep(0.05)  # the partial body is on its way before the connection dies
        if path.endswith("-reset"):
            # Linger 0: close() sends RST instead of FIN.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()


def endpoint_profile(env: DevEnv, name: str, endpoint: str) -> Path:
    """An uncredentialed profile with one endpoint (YAML lines under ``endpoints:``)."""
    return agent_file(env, f"{name}.yaml", (
        f"id: e2e-faults-{name}\n"
        f"display_name: fault injection {name}\n"
        f"description: a deliberately broken destination ({name})\n"
        "category: other\n"
        "credentials: []\n"
        "endpoints:\n" + endpoint
    ))


@pytest.fixture
def raw_upstream(devenv: DevEnv) -> Iterator[tuple[RawUpstream, DevEnv]]:
    server = RawUpstream()
    try:
        profile = endpoint_profile(devenv, "raw", (
            f"  - host: {RAW_HOST}\n"
            f"    port: {server.port}\n"
            "    protocol: rest\n"
            "    tls: none\n"
            "    access: read-only\n"
            "    enforcement: enforce\n"
            "    allowed_ips: [127.0.0.0/8]\n"
        ))
        yield server, dataclasses.replace(devenv, profiles=[*devenv.profiles, profile])
    finally:
        server.stop()


TRUNCATING = ("/truncate-close", "/truncate-reset")
NO_RESPONSE = ("/close-before-head", "/reset-before-head")


def test_upstream_breaks_mid_response(raw_upstream: tuple[RawUpstream, DevEnv],
                                      run_agent: Any) -> None:
    """A body cut short reaches the agent as cut short (never padded, never a hang); no
    response at all is 502 upstream_unreachable; alpha still works in the same run."""
    server, env = raw_upstream
    before = seen(env)
    paths = [*TRUNCATING, *NO_RESPONSE]
    run, results = run_plan(env, runner_for(env),
                       [*({"get": server.url(p)} for p in paths), {"get": env.alpha.url}])
    *broken, alpha = results
    for path, result in zip(paths, broken, strict=True):
        assert result["received"] < DECLARED_LENGTH, (path, result)
        if path in NO_RESPONSE:
            assert_answer(result, UNREACHABLE)
        elif result["status"] == 200:
            # The head got through: the body must be the real prefix, and the break visible.
            assert result["declared"] == DECLARED_LENGTH, (path, result)
            assert PARTIAL_BODY.decode().startswith(result["prefix"]), (path, result)
            assert result["exc"] is not None, (path, result)
        elif result["status"] is not None:
            # The break came before the head could be relayed: the proxy's own 502.
            assert_answer(result, UNREACHABLE)
        else:
            assert result["exc"] is not None, (path, result)
    assert alpha["status"] == 200, alpha
    assert grew(before, seen(env)) == {"alpha_accepted": 1}
    assert sorted(server.paths) == sorted(paths)  # once each: a broken response is not retried
    # Every 502 of the proxy's own is in the audit log (the cut bodies may add more).
    assert denied_codes(run).count(UNREACHABLE[1]) >= len(NO_RESPONSE), run.audit_lines


# -- 5: a name that does not resolve -----------------------------------------------------


class FakeResolver:
    """A DNS server on 127.0.0.9:53 that answers every query NXDOMAIN and records it."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((DNS_HOST, 53))
        self._sock.settimeout(0.1)
        self.queries: list[tuple[str, int]] = []  # (name, qtype)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fake-dns", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            answer = self._nxdomain(data)
            if answer is not None:
                self._sock.sendto(answer, peer)

    def _nxdomain(self, query: bytes) -> bytes | None:
        if len(query) < 12:
            return None
        ident, flags, qdcount = struct.unpack("!HHH", query[:6])
        labels, pos = [], 12
        while pos < len(query) and query[pos] != 0:
            labels.append(query[pos + 1: pos + 1 + query[pos]].decode("ascii", "replace"))
            pos += 1 + query[pos]
        question = query[12: pos + 5]  # the name, its root label, QTYPE and QCLASS
        if qdcount != 1 or len(question) != pos + 5 - 12:
            return None
        self.queries.append((".".join(labels), struct.unpack("!H", query[pos + 1: pos + 3])[0]))
        # QR, the query's opcode and RD, RA; RCODE 3 (NXDOMAIN); the question echoed back.
        reply_flags = 0x8000 | (flags & 0x7900) | 0x0080 | 3
        return struct.pack("!HHHHHH", ident, reply_flags, 1, 0, 0, 0) + question

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()


def run_with_resolver(env: DevEnv, resolv_conf: Path, argv: Sequence[str],
                      timeout: float = 60) -> AgentRun:
    """``run_supervisor`` (integration/e2e.py), but in a private mount namespace whose
    /etc/resolv.conf names only the fake resolver: no DNS query may leave loopback.
    If the bind mount fails, the supervisor never starts."""
    prefix = ["unshare", "--mount", "--propagation", "private", "--",
              "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(resolv_conf)]
    return run_supervisor(env, argv, timeout=timeout, prefix=prefix)


@pytest.fixture
def fake_resolver(devenv: DevEnv) -> Iterator[tuple[FakeResolver, Path]]:
    missing = [tool for tool in ("unshare", "mount") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (util-linux)")
    try:
        resolver = FakeResolver()
    except OSError as err:
        pytest.skip(f"cannot listen on {DNS_HOST}:53 for the fake resolver: {err}")
    conf = agent_file(devenv, "resolv.conf",
                      f"nameserver {DNS_HOST}\noptions timeout:1 attempts:1\n")
    try:
        yield resolver, conf
    finally:
        resolver.stop()


def test_unresolvable_name(devenv: DevEnv, run_agent: Any,
                           fake_resolver: tuple[FakeResolver, Path]) -> None:
    """A declared name that does not resolve: 502 upstream_unreachable; the only thing that
    left the supervisor was the DNS question, to the (loopback) resolver it was given."""
    resolver, conf = fake_resolver
    profile = endpoint_profile(devenv, "dns", (
        f"  - host: {UNRESOLVABLE}\n"
        "    port: 80\n"
        "    protocol: rest\n"
        "    tls: none\n"
        "    access: read-only\n"
        "    enforcement: enforce\n"
    ))
    env = dataclasses.replace(devenv, profiles=[*devenv.profiles, profile])
    before = env.counts()

    def runner(argv: Sequence[str], **opts: Any) -> AgentRun:
        return run_with_resolver(env, conf, argv, **opts)

    run, results = run_plan(env, runner, [{"get": f"http://{UNRESOLVABLE}/"},
                                     {"get": f"http://{UNRESOLVABLE}/again"}])
    for result in results:
        assert_answer(result, UNREACHABLE)
    assert env.counts() == before  # no service, sink or issuer was contacted
    assert denied_codes(run) == [UNREACHABLE[1]] * 2, run.audit_lines
    names = [name for name, _ in resolver.queries]
    assert UNRESOLVABLE in names, resolver.queries
    # Only that name (a search domain may be appended): the supervisor looked nothing else up.
    assert all(n.startswith(UNRESOLVABLE) for n in names), resolver.queries
