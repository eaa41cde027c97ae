"""Binary identity of real connections (root): who holds the socket, what it runs.

Each test starts an "init" (a shell standing in for the sandbox's PID 1) whose child
connects to a listener of the test; the resolver then judges that connection the way
the proxy does. Executables are judged by /proc/<pid>/exe and ancestors, never argv.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.binaries.globs import with_resolved
from supervisor.binaries.identity import BinaryResolver, ConnectionIdentity, IdentityError

pytestmark = pytest.mark.privileged

PYTHON = os.path.realpath("/usr/bin/python3")
CONNECT = str(Path(__file__).with_name("connect.py"))


class Listener:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(20)
        self.port = self.sock.getsockname()[1]

    def judge(self, command: str, resolver_for: type[BinaryResolver] = BinaryResolver,
              resolver: BinaryResolver | None = None, user: int | None = None,
              ) -> ConnectionIdentity:
        """Run ``command`` under a fresh init shell; return the identity of its connection."""
        init = subprocess.Popen(["/bin/sh", "-c", f"{command}; sleep 30"], user=user,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            conn, peer = self.sock.accept()
            try:
                active = resolver or resolver_for(init.pid)
                active.init_pid = init.pid
                return active.lookup(peer, self.sock.getsockname())
            finally:
                conn.close()
        finally:
            init.kill()
            init.wait()


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener()
    try:
        yield lst
    finally:
        lst.sock.close()


def curl(port: int, binary: str = "/usr/bin/curl") -> str:
    return f"{binary} -s -m 20 -o /dev/null http://127.0.0.1:{port}/"


def test_curl_allowed_python_denied_for_the_same_entry(listener: Listener) -> None:
    patterns = with_resolved(["/usr/bin/curl"])
    ident = listener.judge(curl(listener.port))
    assert ident.name == "/usr/bin/curl" and ident.allowed(patterns)
    ident = listener.judge(f"/usr/bin/python3 {CONNECT} {listener.port}")
    assert ident.name == PYTHON
    assert not ident.allowed(patterns)
    assert ident.why_denied() == f"binary {PYTHON} may not use this endpoint"


def test_a_copied_binary_at_another_path_is_denied(listener: Listener, tmp_path: Path) -> None:
    copy = tmp_path / "curl"
    shutil.copy2("/usr/bin/curl", copy)
    ident = listener.judge(curl(listener.port, str(copy)))
    assert ident.name == str(copy)
    assert not ident.allowed(with_resolved(["/usr/bin/curl"]))


def test_symlinked_policy_path_matched_by_its_target(listener: Listener, tmp_path: Path) -> None:
    link = tmp_path / "my-curl"
    link.symlink_to("/usr/bin/curl")
    ident = listener.judge(curl(listener.port, str(link)))
    assert ident.name == "/usr/bin/curl"  # the kernel names the target, never the link
    assert not ident.allowed((str(link),))
    assert ident.allowed(with_resolved([str(link)]))


def test_child_of_an_allowed_binary_is_allowed_through_its_ancestor(listener: Listener) -> None:
    ident = listener.judge(
        f"git -c http.lowSpeedTime=20 ls-remote http://127.0.0.1:{listener.port}/repo.git"
    )
    holder = ident.holders[0]
    assert holder.exe == "/usr/lib/git-core/git-remote-http"
    assert holder.chain[0] == "/usr/lib/git-core/git-remote-http"
    assert holder.chain[-1] == "/usr/bin/git"  # the walk stops below the init (sh)
    assert "/usr/bin/dash" not in holder.chain and "/bin/sh" not in holder.chain
    assert ident.allowed(with_resolved(["/usr/bin/git"]))
    assert not ident.allowed(with_resolved(["/usr/bin/curl"]))


def test_forged_argv0_grants_nothing(listener: Listener) -> None:
    # argv[0] (and so /proc/<pid>/cmdline) says curl; the executable is python.
    ident = listener.judge(
        f"bash -c 'exec -a /usr/bin/curl /usr/bin/python3 {CONNECT} {listener.port}'"
    )
    assert ident.name == PYTHON
    assert not ident.allowed(with_resolved(["/usr/bin/curl"]))


def test_a_binary_replaced_after_first_use_is_denied(listener: Listener, tmp_path: Path) -> None:
    tool = tmp_path / "tool"
    shutil.copy2("/usr/bin/curl", tool)
    resolver = BinaryResolver(0)
    patterns = with_resolved([str(tool)])
    first = listener.judge(curl(listener.port, str(tool)), resolver=resolver)
    assert first.allowed(patterns)
    # Replace the file at that path with another program of the same name.
    tool.unlink()
    shutil.copy2(PYTHON, tool)
    second = listener.judge(f"{tool} {CONNECT} {listener.port}", resolver=resolver)
    assert second.name == str(tool)
    assert not second.allowed(patterns)
    assert second.why_denied() == f"binary changed since first use: {tool}"
    # Put the original back: trusted again (the digest first seen is what counts).
    tool.unlink()
    shutil.copy2("/usr/bin/curl", tool)
    assert listener.judge(curl(listener.port, str(tool)), resolver=resolver).allowed(patterns)


def test_processes_outside_the_sandbox_are_not_holders(listener: Listener) -> None:
    # The init is a sibling of the connecting process here: nothing under it holds it.
    outsider = subprocess.Popen(["/usr/bin/curl", "-s", "-m", "20", "-o", "/dev/null",
                                 f"http://127.0.0.1:{listener.port}/"])
    try:
        conn, peer = listener.sock.accept()
        init = subprocess.Popen(["sleep", "30"])
        try:
            with pytest.raises(IdentityError, match="no sandbox process"):
                BinaryResolver(init.pid).lookup(peer, listener.sock.getsockname())
        finally:
            init.kill()
            init.wait()
            conn.close()
    finally:
        outsider.kill()
        outsider.wait()


LOOKUP = """\
import json, sys
from supervisor.binaries.identity import BinaryResolver, IdentityError
init, peer_port, port = (int(a) for a in sys.argv[1:4])
try:
    ident = BinaryResolver(init).lookup(("127.0.0.1", peer_port), ("127.0.0.1", port))
    print(json.dumps({"name": ident.name}))
except IdentityError as exc:
    print(json.dumps({"error": str(exc)}))
"""


@pytest.mark.parametrize("drop", [False, True])
def test_cap_sys_ptrace_is_needed_to_judge_another_uids_process(
    listener: Listener, drop: bool
) -> None:
    """The agent runs as another uid: without CAP_SYS_PTRACE its fd and exe links cannot
    be read, so no connection could be judged (and every one with binaries is denied)."""
    import json
    import sys

    from ..sandbox.conftest import REPO

    init = subprocess.Popen(["/bin/sh", "-c", f"{curl(listener.port)}; sleep 30"],
                            user=65534, group=65534, extra_groups=[])
    try:
        conn, peer = listener.sock.accept()
        prefix = ["capsh", "--drop=cap_sys_ptrace", "--"] if drop else []
        argv = [sys.executable, "-c", LOOKUP, str(init.pid), str(peer[1]), str(listener.port)]
        if drop:
            argv = [*prefix, "-c", " ".join(f"'{a}'" for a in argv)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=str(REPO))
        conn.close()
    finally:
        init.kill()
        init.wait()
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    if drop:
        assert "needs CAP_SYS_PTRACE" in result["error"]
    else:
        assert result == {"name": "/usr/bin/curl"}
