"""openshell-init's launch spec: encoded by the child, parsed by the C init (no root needed).

The property tests run the real binary as an ordinary process (fd 3 = the spec, fd 4 = the
status pipe) and check that what the agent receives is exactly what was encoded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.sandbox.protocol import (
    INIT_ARGV,
    encode_launch_spec,
    parse_report,
)
from supervisor.sandbox.spawn import find_init
from tests.sandbox.init_spec import run_with_spec

# Strings the kernel can pass: no NUL; anything else, including newlines and non-UTF-8.
ARG = st.binary(max_size=40).filter(lambda b: b"\0" not in b).map(
    lambda b: b.decode("utf-8", "surrogateescape")
)
NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)


def _run_init(spec: bytes) -> tuple[int, bytes, list[dict[str, object]]]:
    """Run openshell-init with ``spec``; return (exit code, stdout, status messages)."""
    result, status = run_with_spec(INIT_ARGV, spec, executable=find_init(), timeout=10)
    return result.returncode, result.stdout, status


@settings(max_examples=25, deadline=None)
@given(args=st.lists(ARG, min_size=1, max_size=6), env=st.dictionaries(NAME, ARG, max_size=6))
def test_agent_gets_exactly_the_encoded_argv_and_environment(
    args: list[str], env: dict[str, str]
) -> None:
    code, out, status = _run_init(
        encode_launch_spec("/usr/bin/printf", ("printf", "%s\\0", *args), env)
    )
    assert code == 0 and status[-1] == {"kind": "exit", "status": 0}
    assert out.split(b"\0")[:-1] == [a.encode("utf-8", "surrogateescape") for a in args]
    code, out, _ = _run_init(encode_launch_spec("/usr/bin/env", ("env", "-0"), env))
    assert code == 0
    entries = [e.encode("utf-8", "surrogateescape") for e in (f"{k}={v}" for k, v in env.items())]
    assert out.split(b"\0")[:-1] == entries


@settings(max_examples=50, deadline=None)
@given(spec=st.binary(max_size=64))
def test_garbage_spec_is_a_setup_failure_never_an_exec(spec: bytes) -> None:
    if spec.startswith(b"2 0\n") or spec.count(b"\0") >= 2:
        return  # may be a valid spec
    code, _, status = _run_init(spec)
    assert code == 125
    assert status == [{"kind": "setup", "step": "init", "reason": "unreadable launch spec"}]


def test_exec_failures_are_126_and_127_with_errno(tmp_path: Path) -> None:
    code, _, status = _run_init(encode_launch_spec("/nonexistent", ("x",), {}))
    assert code == 127 and status == [{"kind": "exec", "code": 127, "errno": 2}]
    report = parse_report(json.dumps(status[0]).encode())
    assert (report.exec_code, report.exec_reason) == (127, "command not found")
    script = tmp_path / "agent.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    code, _, status = _run_init(encode_launch_spec(str(script), ("x",), {}))
    assert code == 126 and status == [{"kind": "exec", "code": 126, "errno": 13}]
    report = parse_report(json.dumps(status[0]).encode())
    assert report.exec_reason == "cannot execute: Permission denied"


def test_death_by_signal_is_128_plus_n() -> None:
    code, _, status = _run_init(encode_launch_spec("/bin/sh", ("sh", "-c", "kill -TERM $$"), {}))
    assert code == 143 and status == [{"kind": "exit", "status": 15}]


@pytest.mark.parametrize(
    ("argv", "env"), [((), {}), (("a\0b",), {}), (("x",), {"A=B": "c"}), (("x",), {"A": "\0"})]
)
def test_encoder_refuses_what_exec_cannot_carry(
    argv: tuple[str, ...], env: dict[str, str]
) -> None:
    with pytest.raises(ValueError):
        encode_launch_spec("/bin/true", argv, env)


@pytest.mark.parametrize(
    "spec",
    [
        b"+2 0\n/bin/true\0true\0",  # sign
        b" 2 0\n/bin/true\0true\0",  # leading space
        b"2\t0\n/bin/true\0true\0",  # other separators
        b"2 0 \n/bin/true\0true\0",
        b"2 0x\n/bin/true\0true\0",  # bytes after a count
        b"2 0\n/bin/true\0true\0trailing",  # bytes after the last string
        b"2 0\n/bin/true\0true\0\0",
        b"02 0000000000\n/bin/true\0true\0",  # more than 9 digits
        b"2 18446744073709551617\n/bin/true\0true\0",  # would overflow
        b"2 3\n/bin/true\0true\0",  # more strings than the spec can hold
    ],
)
def test_only_the_exact_encoding_is_a_spec(spec: bytes) -> None:
    """The init reads the spec strictly: anything but the encoder's own output is a setup
    failure (a sign, spaces, trailing bytes or a count with more digits than any spec can
    need used to be accepted, or left to sscanf's undefined overflow). FAILED before."""
    code, _, status = _run_init(spec)
    assert code == 125
    assert status == [{"kind": "setup", "step": "init", "reason": "unreadable launch spec"}]
