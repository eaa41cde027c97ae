"""The sandbox end to end (root): isolation probe, exit codes, signals, reaping, reload.

The probe and reload tests use tests/sandbox/fake_run.py (fake loader and services, so
they do not depend on the proxy); exit-code and signal tests run the real CLI.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import (
    FAKE_RUN,
    PY,
    REPO,
    SocketServer,
    clean_env,
    needs_real_cli,
    run_cli,
    run_fake,
    start_fake,
)

pytestmark = pytest.mark.privileged

CHECK = (PY, "-m", "supervisor", "check-isolation", "--json")


def _wait_for(path: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.fixture
def host_listener() -> socket.socket:
    """A loopback TCP server on the host: the agent must not reach it directly."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    yield server
    server.close()


def _checks(stdout: str) -> dict[str, dict[str, object]]:
    report = json.loads(stdout)
    return {c["name"]: c for c in report["checks"]}


def test_probe_inside_sandbox_passes_every_check(
    workload_socket: SocketServer, host_listener: socket.socket
) -> None:
    port = host_listener.getsockname()[1]
    mounts_before = Path("/proc/self/mountinfo").read_text()
    env = clean_env(
        SPIFFE_ENDPOINT_SOCKET=f"unix://{workload_socket.path}",
        OPENSHELL_TLS_KEY="not-for-the-agent",
        HTTPS_PROXY="http://corp-proxy.invalid:8080",
    )
    result = run_fake(
        *CHECK, "--spiffe-socket", workload_socket.path, "--expect-blocked", f"127.0.0.1:{port}",
        options=("--socket", workload_socket.path), env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    checks = _checks(result.stdout)
    expected = {"environment", "workload-api-socket", "proc-environ", "capabilities",
                "no-new-privs", "seccomp", "not-root", "interfaces", "processes", "direct-loopback",
                "socket-families",
                f"blocked 127.0.0.1:{port}", "proxy"}
    assert expected <= set(checks)
    assert all(c["ok"] for c in checks.values())
    # The socket was live on the host the whole time, and the agent never reached it.
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(workload_socket.path)
    assert Path("/proc/self/mountinfo").read_text() == mounts_before


def test_probe_outside_sandbox_reports_violations(workload_socket: SocketServer) -> None:
    """Negative control: the same probe, as root on the host, must fail."""
    env = clean_env(SPIFFE_ENDPOINT_SOCKET=f"unix://{workload_socket.path}")
    result = subprocess.run([*CHECK, "--spiffe-socket", workload_socket.path],
                            capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    checks = _checks(result.stdout)
    for name in ("environment", "workload-api-socket", "capabilities", "no-new-privs",
                 "not-root", "processes", "proxy", "interfaces", "seccomp"):
        assert not checks[name]["ok"], name
    assert workload_socket.path in str(checks["workload-api-socket"]["detail"])


def test_socket_directory_is_empty_and_unusable_inside(workload_socket: SocketServer) -> None:
    probe = (
        "import os, socket, sys\n"
        f"p = {workload_socket.path!r}\n"
        "out = {'exists': os.path.lexists(p),\n"
        "       'via_init_root': os.path.lexists('/proc/1/root' + p)}\n"
        "try:\n"
        "    out['listing'] = os.listdir(os.path.dirname(p))\n"
        "except OSError as e:\n"
        "    out['listing'] = e.strerror\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    s.connect(p); out['connect'] = 'ok'\n"
        "except OSError as e:\n"
        "    out['connect'] = e.strerror\n"
        "print(repr(out))\n"
    )
    result = run_fake(PY, "-c", probe, options=("--socket", f"unix://{workload_socket.path}"))
    assert result.returncode == 0, result.stderr
    out = eval(result.stdout)
    assert out["exists"] is False and out["via_init_root"] is False
    assert out["connect"] != "ok" and out["listing"] in ([], "Permission denied")
    assert workload_socket.connections == []


def test_host_view_of_socket_directory_unchanged(workload_socket: SocketServer) -> None:
    result = run_fake("/bin/true", options=("--socket", workload_socket.path))
    assert result.returncode == 0, result.stderr
    assert os.listdir(workload_socket.directory) == ["agent.sock"]


@pytest.mark.parametrize(
    ("script", "code"),
    [("exit 0", 0), ("exit 1", 1), ("exit 7", 7), ("exit 255", 255),
     ("kill -KILL $$", 137), ("kill -TERM $$", 143)],
)
def test_exit_codes(profile_file: Path, script: str, code: int) -> None:
    result = run_cli(profile_file, "/bin/sh", "-c", script)
    assert result.returncode == code, result.stderr


def test_missing_command_is_127(profile_file: Path) -> None:
    result = run_cli(profile_file, "/nonexistent/agent")
    assert result.returncode == 127
    assert "/nonexistent/agent" in result.stderr and "not found" in result.stderr
    result = run_cli(profile_file, "no-such-agent-command")
    assert result.returncode == 127


def test_non_executable_is_126(profile_file: Path, agent_dir: Path) -> None:
    script = agent_dir / "agent.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    result = run_cli(profile_file, str(script))
    assert result.returncode == 126
    assert "cannot execute" in result.stderr


def test_bad_workdir_is_125(profile_file: Path) -> None:
    result = run_cli(profile_file, "/bin/true", options=("--workdir", "/nonexistent-dir"))
    assert result.returncode == 125
    assert "--workdir" in result.stderr


def test_workdir_and_identity(profile_file: Path, agent_dir: Path) -> None:
    result = run_cli(profile_file, "/bin/sh", "-c", "pwd; id -u; id -g",
                     options=("--workdir", str(agent_dir)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(agent_dir), "65534", "65534"]


def test_sigterm_reaches_agent_and_code_propagates(profile_file: Path, agent_dir: Path) -> None:
    needs_real_cli()
    ready, marker = agent_dir / "ready", agent_dir / "marker"
    script = (
        f"trap 'echo term > {marker}; exit 3' TERM; touch {ready}; "
        "sleep 30 & wait"
    )
    proc = subprocess.Popen(
        [PY, "-m", "supervisor", "run", "--profile", str(profile_file), "--",
         "/bin/sh", "-c", script],
        env=clean_env(), cwd="/", stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for(ready)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 3, proc.stderr.read() if proc.stderr else ""
    assert marker.read_text().strip() == "term"


def test_sigterm_kills_agent_without_handler(profile_file: Path, agent_dir: Path) -> None:
    needs_real_cli()
    ready = agent_dir / "ready"
    proc = subprocess.Popen(
        [PY, "-m", "supervisor", "run", "--profile", str(profile_file), "--",
         PY, "-c", f"import pathlib, time; pathlib.Path({str(ready)!r}).touch(); time.sleep(30)"],
        env=clean_env(), cwd="/",
    )
    try:
        _wait_for(ready)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# Counts zombies visible in /proc after leaving time for the init to reap them.
ZOMBIE_COUNTER = (
    "import glob, time\n"
    "time.sleep(0.5)\n"
    "z = [p for p in glob.glob('/proc/[0-9]*/status')\n"
    "     if any(l.startswith('State:') and 'Z' in l.split()[1] for l in open(p))]\n"
    "print('zombies', len(z))\n"
)


def test_orphaned_grandchild_is_reaped() -> None:
    # The agent's child forks a short-lived grandchild and exits: the grandchild is
    # re-parented to the sandbox init, which must reap it.
    orphan = "import os, time\nif os.fork() == 0:\n    if os.fork() == 0:\n        time.sleep(0.1)\n    os._exit(0)\n"
    agent = orphan + "os.wait()\n" + ZOMBIE_COUNTER
    result = run_fake(PY, "-c", agent)
    assert result.returncode == 0, result.stderr
    assert "zombies 0" in result.stdout


def test_zombie_detector_catches_an_unreaped_child() -> None:
    # Negative control: a child the agent itself never waits for stays a zombie.
    agent = "import os\nif os.fork() == 0:\n    os._exit(0)\n" + ZOMBIE_COUNTER
    result = run_fake(PY, "-c", agent)
    assert result.returncode == 0, result.stderr
    assert "zombies 1" in result.stdout


def test_sighup_reloads_and_invalid_profiles_are_refused(tmp_path: Path, agent_dir: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text("one\n")
    log = tmp_path / "services.log"
    ready = agent_dir / "ready"
    proc = start_fake("/bin/sh", "-c", f"touch {ready}; sleep 30 & wait",
                      options=("--profile", str(profile), "--log", str(log)))
    try:
        _wait_for(ready)
        profile.write_text("invalid\n")
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        profile.write_text("two\n")  # picked up by polling, no signal
        deadline = time.monotonic() + 8
        while "reload" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, "profile change never reloaded"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = log.read_text().splitlines()
    assert len([x for x in lines if x.startswith("reload")]) == 1 and lines[-1] == "stop"
    stderr = proc.stderr.read() if proc.stderr else ""
    assert "refused" in stderr and "invalid profile" in stderr


def test_invalid_profile_at_start_is_125(tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text("invalid\n")
    result = run_fake("/bin/true", options=("--profile", str(profile)))
    assert result.returncode == 125
    assert "--profile" in result.stderr and "(+1 more)" in result.stderr


def test_host_network_mode_warns_and_binds_host_loopback() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    agent = (
        "import os, socket\n"
        f"s = socket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
        "s.sendall(b'GET http://x.invalid/ HTTP/1.1\\r\\nHost: x.invalid\\r\\n\\r\\n')\n"
        "print(s.recv(12).decode())\n"
    )
    result = run_fake(PY, "-c", agent, options=("--network", "host", "--port", str(port)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HTTP/1.1 403")
    assert "--network host" in result.stderr


def test_agent_sees_only_its_pid_namespace() -> None:
    result = run_fake(PY, "-c", "import os; print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))")
    assert result.returncode == 0, result.stderr
    pids = eval(result.stdout)
    assert pids[0] == 1 and len(pids) <= 3  # init, the agent (and nothing of the host)


def test_real_cli_check_isolation_inside(profile_file: Path) -> None:
    """With the real services: check-isolation inside `run` passes (the proxy answers)."""
    result = run_cli(profile_file, *CHECK)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["ok"] is True


def test_without_privileges_setup_fails_with_125() -> None:
    result = subprocess.run(
        [PY, str(FAKE_RUN), "--", "/bin/true"], capture_output=True, text=True,
        env=clean_env(), cwd=str(REPO), timeout=30, user=65534, group=65534, extra_groups=[],
    )
    assert result.returncode == 125
    assert "mount namespace" in result.stderr and "CAP_SYS_ADMIN" in result.stderr



def test_services_cannot_leak_supervisor_variables(agent_dir: Path) -> None:
    marker = agent_dir / "ran"
    result = run_fake("/bin/touch", str(marker),
                      options=("--extra", "SPIFFE_ENDPOINT_SOCKET=unix:///run/spire/a.sock"))
    assert result.returncode == 125
    assert "environment" in result.stderr and "SPIFFE_ENDPOINT_SOCKET" in result.stderr
    assert not marker.exists()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
