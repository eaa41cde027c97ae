"""The agent and the terminal of whoever started the supervisor (root).

The supervisor runs with a pty as its controlling terminal, like `openshell-supervisor run`
typed at a shell. The agent must not share that terminal as *its* controlling terminal
(TIOCSTI would let it type into the operator's shell), and Ctrl-C on the terminal must
reach it exactly once, through the supervisor's forwarding.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import FAKE_RUN, PY, REPO, clean_env

pytestmark = pytest.mark.privileged

LEGACY_TIOCSTI = Path("/proc/sys/dev/tty/legacy_tiocsti")

# Reports, as JSON: the TIOCSTI outcome on stdin, tty_nr from /proc/self/stat (0 = no
# controlling terminal), whether /dev/tty opens, and the session id.
TTY_PROBE = """\
import errno, fcntl, json, os, termios
r = {}
try:
    fcntl.ioctl(0, termios.TIOCSTI, b"x")
    r["tiocsti"] = "ok"
except OSError as e:
    r["tiocsti"] = errno.errorcode[e.errno]
r["tty_nr"] = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[4])
try:
    os.close(os.open("/dev/tty", os.O_RDWR))
    r["devtty"] = "ok"
except OSError as e:
    r["devtty"] = errno.errorcode[e.errno]
r["isatty"] = os.isatty(0)
print(json.dumps(r), flush=True)
"""


@dataclass
class Pty:
    master: int
    slave: int


@pytest.fixture
def pty() -> Iterator[Pty]:
    master, slave = os.openpty()
    try:
        yield Pty(master, slave)
    finally:
        os.close(master)
        os.close(slave)


def _take_terminal() -> None:
    """preexec: new session whose controlling terminal is stdin (the pty slave)."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _start(pty: Pty, *argv: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        list(argv), stdin=pty.slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True, preexec_fn=_take_terminal, **kwargs,
    )


def _supervised(pty: Pty, *command: str) -> subprocess.Popen[str]:
    return _start(pty, PY, str(FAKE_RUN), "--", *command, env=clean_env(), cwd=str(REPO))


def test_agent_has_no_controlling_terminal_and_tiocsti_fails(pty: Pty) -> None:
    proc = _supervised(pty, PY, "-c", TTY_PROBE)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert report["isatty"] is True  # the agent still uses the terminal as stdin
    assert report["tty_nr"] == 0
    assert report["devtty"] == "ENXIO"
    assert report["tiocsti"] == "EPERM"


def test_control_tiocsti_works_for_the_terminals_own_session(pty: Pty) -> None:
    # Negative control: an unprivileged process whose controlling terminal the pty is
    # can inject input, so the EPERM above is the sandbox's doing.
    if not LEGACY_TIOCSTI.exists() or LEGACY_TIOCSTI.read_text().strip() != "1":
        pytest.skip("the kernel refuses TIOCSTI to unprivileged processes (legacy_tiocsti=0)")
    proc = _start(pty, PY, "-c", TTY_PROBE, user=65534, group=65534, extra_groups=[])
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert report["tty_nr"] != 0
    assert report["tiocsti"] == "ok"


SIGINT_COUNTER = """\
import os, pathlib, signal, sys, time
log, ready = sys.argv[1], sys.argv[2]
def on_int(signum, frame):
    with open(log, "a") as f:
        f.write("int\\n")
signal.signal(signal.SIGINT, on_int)
signal.signal(signal.SIGTERM, lambda s, f: os._exit(0))
pathlib.Path(ready).touch()
while True:
    time.sleep(0.05)
"""


def _wait_for(check: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_ctrl_c_reaches_the_agent_exactly_once(pty: Pty, agent_dir: Path) -> None:
    log, ready = agent_dir / "ints", agent_dir / "ready"
    proc = _supervised(pty, PY, "-c", SIGINT_COUNTER, str(log), str(ready))
    try:
        _wait_for(ready.exists)
        os.write(pty.master, termios.tcgetattr(pty.master)[6][termios.VINTR])
        _wait_for(log.exists)
        time.sleep(0.5)  # a second (direct or re-forwarded) delivery would land by now
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert log.read_text().splitlines() == ["int"]

