"""Fork the sandbox init into a new PID namespace (supervisor side).

The supervisor unshares CLONE_NEWPID (which only affects its future children), forks the
child that becomes PID 1 of the new namespace (still a direct child so it can be waited
for), and then setns()es its pid_for_children back, so later forks stay in the
supervisor's namespace. Call it before any secret is in memory: until the child execs
openshell-init (supervisor/sandbox/child.py) it is a copy of the supervisor. The agent
starts only when ``InitProcess.start`` sends the go with its environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal

from supervisor.record import record
from supervisor.sandbox import linux
from supervisor.sandbox.child import InitSpec, run_child
from supervisor.sandbox.protocol import EXIT_SETUP, InitReport, parse_report
from supervisor.settings import SetupError

STEP = "pid namespace"
INIT_NAME = "openshell-init"


def find_init() -> str:
    """The openshell-init executable shipped beside this module (built by ``make install``
    and the Dockerfile's builder from openshell-init.c)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), INIT_NAME)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise SetupError(
            "init", f"{path}: {exc.strerror} (build it: make install, or "
            f"gcc -O2 -static -o {path} {path}.c && chmod 0711 {path})"
        ) from None
    if not st.st_mode & 0o001:
        raise SetupError("init", f"{path} is not executable by the agent (mode {st.st_mode:o})")
    return path


@record(frozen=False)
class InitProcess:
    pid: int
    go_fd: int | None
    status_fd: int

    def start(self, env: dict[str, str]) -> None:
        """Let the init exec the agent with ``env``."""
        fd, self.go_fd = self.go_fd, None
        if fd is None:
            raise RuntimeError("agent already started or aborted")
        data = json.dumps({"env": env}).encode()
        try:
            while data:
                data = data[os.write(fd, data) :]
        except BrokenPipeError:
            pass  # the init died; its status tells why
        finally:
            os.close(fd)

    def abort(self) -> None:
        """Tell the init not to start the agent (it exits 125)."""
        if self.go_fd is not None:
            os.close(self.go_fd)
            self.go_fd = None

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def read_report(self) -> InitReport:
        """Read what the init reported; call after it exited."""
        os.set_blocking(self.status_fd, False)
        chunks = []
        try:
            while chunk := os.read(self.status_fd, 65536):
                chunks.append(chunk)
        except BlockingIOError:
            pass
        os.close(self.status_fd)
        return parse_report(b"".join(chunks))


def spawn_init(spec: InitSpec) -> InitProcess:
    """Fork the init; the caller should have FORWARDED_SIGNALS blocked (the init unblocks)."""
    go_r, go_w = os.pipe()
    status_r, status_w = os.pipe()
    own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            linux.unshare(linux.CLONE_NEWPID)
        except OSError as exc:
            raise SetupError(STEP, f"unshare(CLONE_NEWPID) failed ({exc.strerror})") from exc
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which never returns
            code = EXIT_SETUP
            try:
                os.close(go_w)
                os.close(status_r)
                code = run_child(spec, go_r, status_w)
            finally:
                os._exit(code)
        try:
            linux.setns(own_pidns, linux.CLONE_NEWPID)
        except OSError as exc:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise SetupError(STEP, f"cannot return to the supervisor's namespace: {exc}") from exc
    except BaseException:
        for fd in (go_w, status_r):
            os.close(fd)
        raise
    finally:
        os.close(own_pidns)
        os.close(go_r)
        os.close(status_w)
    return InitProcess(pid=pid, go_fd=go_w, status_fd=status_r)
