"""``--audit-log -``: the agent can neither forge, silence nor stall the audit stream
(issue 12 item 5, root; the real CLI and proxy).

The attack: with audit events on the supervisor's stderr and the agent's fd 2 being that
same stderr, the agent could print OCSF lines of its own, or set O_NONBLOCK on the shared
file description and fill the pipe so that the supervisor's writes failed silently; and a
slow reader of stderr blocked the proxy's event loop on every audit write.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import PY, clean_env, needs_real_cli

pytestmark = pytest.mark.privileged

FORGED = '{"class_uid":4002,"activity_id":3,"action_id":1,"message":"forged by the agent"}'

DENIED_REQUESTS = """
import socket, sys
def denied(n):
    for i in range(n):
        with socket.create_connection(("127.0.0.1", 3128), timeout=10) as s:
            s.sendall(b"GET http://denied-%d.invalid/ HTTP/1.1\\r\\nHost: denied-%d.invalid\\r\\n\\r\\n" % (i, i))
            assert s.recv(12).startswith(b"HTTP/1.1 403"), i
"""


def _run(profile: Path, agent: str, **kwargs: object) -> subprocess.Popen[bytes]:
    needs_real_cli()
    return subprocess.Popen(
        [PY, "-m", "supervisor", "run", "--profile", str(profile), "--audit-log", "-", "--",
         PY, "-c", agent],
        env=clean_env(), cwd="/", **kwargs,  # type: ignore[call-overload]
    )


def _json_objects(stderr: bytes) -> list[dict[str, object]]:
    found = []
    for line in stderr.decode(errors="replace").splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            found.append(value)
    return found


def test_agent_cannot_forge_audit_lines(profile_file: Path) -> None:
    agent = DENIED_REQUESTS + f"sys.stderr.write({FORGED!r} + '\\n'); sys.stderr.flush(); denied(1)\n"
    proc = _run(profile_file, agent, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    events = _json_objects(stderr)
    assert [e for e in events if e.get("message") == "forged by the agent"] == []
    assert f"agent: {FORGED}".encode() in stderr.splitlines()
    denials = [e for e in events if e.get("class_uid") == 4002 and e.get("action_id") == 2]
    assert len(denials) == 1, stderr


def test_agent_cannot_forge_audit_lines_with_line_breaks_or_escapes(profile_file: Path) -> None:
    """A carriage return (or another line break of Python's text mode, or ESC sequences that
    erase the prefix on a terminal) put the forged line on a line of its own for the
    reader. FAILED before the relay escaped control characters (issue 12 review)."""
    agent = (
        "import sys\n"
        f"sys.stderr.write('progress 10%\\r' + {FORGED!r} + '\\n')\n"
        f"sys.stderr.write('\\x1b[2K\\x1b[1G' + {FORGED!r} + '\\u2028' + {FORGED!r} + '\\n')\n"
        "sys.stderr.flush(); sys.stderr.buffer.write(b'\\xff\\xfe not UTF-8\\n')\n"
    )
    proc = _run(profile_file, agent, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert [e for e in _json_objects(stderr) if e.get("message") == "forged by the agent"] == []
    assert b"\x1b" not in stderr and b"\r" not in stderr
    stderr.decode("utf-8")  # strict: the agent's bytes cannot make the stream undecodable
    assert f"agent: progress 10%\\x0d{FORGED}".encode() in stderr.splitlines()


def test_a_partial_agent_line_cannot_swallow_an_audit_line(profile_file: Path) -> None:
    """The agent writes half a line, makes the supervisor log a denial, then ends its line:
    were the half written out at once, the real event would be glued to the agent's text
    and lost to every line-based reader. The relay holds a partial line until its end
    (issue 12 review; held before: a regression test)."""
    agent = DENIED_REQUESTS + (
        "sys.stderr.write('half a line '); sys.stderr.flush()\n"
        "denied(1)\n"
        "import time; time.sleep(0.5)\n"
        "sys.stderr.write('and its end\\n'); sys.stderr.write('no newline at exit')\n"
    )
    proc = _run(profile_file, agent, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    denials = [e for e in _json_objects(stderr)
               if e.get("class_uid") == 4002 and e.get("action_id") == 2]
    assert len(denials) == 1, stderr
    lines = stderr.splitlines()
    assert b"agent: half a line and its end" in lines
    assert b"agent: no newline at exit" in lines


def test_agent_stderr_is_not_the_supervisors(profile_file: Path) -> None:
    """So O_NONBLOCK set by the agent cannot reach the file description audit writes use."""
    agent = "import os; st = os.fstat(2); print(st.st_dev, st.st_ino)"
    proc = _run(profile_file, agent, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ours = os.fstat(proc.stderr.fileno())  # type: ignore[union-attr]
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert stdout.split() != [str(ours.st_dev).encode(), str(ours.st_ino).encode()]


def test_unread_stderr_does_not_stall_the_proxy(profile_file: Path) -> None:
    """Nobody reads the supervisor's stderr while the agent makes 400 refused requests
    (~250 KiB of audit lines, four times a pipe's buffer): the proxy must keep answering;
    what could not be written is counted and reported at exit."""
    agent = DENIED_REQUESTS + "denied(400); print('done', flush=True)\n"
    proc = _run(profile_file, agent, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "the agent stalled: audit writes blocked the proxy"
        assert proc.stdout.readline() == b"done\n"
    finally:
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-2000:]
    denials = [e for e in _json_objects(stderr) if e.get("action_id") == 2]
    assert denials, stderr[-2000:]


def test_a_terminal_is_shared_with_the_agent(profile_file: Path) -> None:
    """An operator's terminal stays the agent's (no audit consumer to fool there)."""
    leader, follower = pty.openpty()
    try:
        agent = "import os; print(os.isatty(2), os.ttyname(2) if os.isatty(2) else '')"
        proc = _run(profile_file, agent, stdout=subprocess.PIPE, stderr=follower)
        os.close(follower)
        follower = -1
        stdout, _ = proc.communicate(timeout=60)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and select.select([leader], [], [], 0.1)[0]:
            try:
                os.read(leader, 65536)
            except OSError:
                break
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert proc.returncode == 0
    assert stdout.split()[0] == b"True"


def test_a_denial_loop_cannot_fill_the_disk(profile_file: Path, tmp_path: Path) -> None:
    """Item 10: 1500 refused requests as fast as the agent can: the log holds at most the
    burst plus the sustained rate, and a summary accounts for every event held back."""
    from supervisor.audit_limits import DEFAULT_BURST, DEFAULT_RATE

    needs_real_cli()
    audit = tmp_path / "audit.jsonl"
    agent = DENIED_REQUESTS + "denied(1500)\n"
    started = time.monotonic()
    result = subprocess.run(
        [PY, "-m", "supervisor", "run", "--profile", str(profile_file), "--audit-log",
         str(audit), "--", PY, "-c", agent],
        env=clean_env(), cwd="/", capture_output=True, text=True, timeout=120,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-2000:]
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    single = [e for e in events if e["class_uid"] == 4002 and e["action_id"] == 2]
    summaries = [e for e in events if "suppressed" in (e.get("unmapped") or {})]
    suppressed = sum(s["unmapped"]["suppressed"] for s in summaries)
    assert len(single) <= DEFAULT_BURST + DEFAULT_RATE * elapsed
    assert len(single) + suppressed == 1500
    if elapsed < (1500 - DEFAULT_BURST) / DEFAULT_RATE:  # else a slow machine never hit it
        assert suppressed > 0 and "rate limited" in result.stderr  # reported at exit


def test_agent_stderr_is_relayed_with_an_audit_file_too(profile_file: Path, tmp_path: Path) -> None:
    """With --audit-log FILE the supervisor's own log lines still go to its stderr: the
    agent must not share that file description either (a forged supervisor line, or
    O_NONBLOCK plus a full pipe silencing it). Failed before: the agent's fd 2 was ours."""
    needs_real_cli()
    agent = ("import os, sys; st = os.fstat(2); print(st.st_dev, st.st_ino); "
             "sys.stderr.write('openshell-supervisor: profile reload refused\\n')")
    proc = subprocess.Popen(
        [PY, "-m", "supervisor", "run", "--profile", str(profile_file), "--audit-log",
         str(tmp_path / "audit.jsonl"), "--", PY, "-c", agent],
        env=clean_env(), cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    ours = os.fstat(proc.stderr.fileno())  # type: ignore[union-attr]
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert stdout.split() != [str(ours.st_dev).encode(), str(ours.st_ino).encode()]
    assert b"agent: openshell-supervisor: profile reload refused" in stderr.splitlines()
