"""openshell-init under AddressSanitizer + UBSan and valgrind, fed fuzzed launch specs
(issue 12 review; no root needed).

The launch spec is written by our own child, so a malformed one is a bug, not an attack;
still, PID 1 must never read or write out of bounds or overflow an integer whatever fd 3
holds: truncated headers, huge or negative counts, missing NULs, trailing bytes. Every run
must end as a setup failure (125) or as a clean exec of the agent, and the sanitizers must
stay silent. The init is rebuilt here from the shipped source with the sanitizers on and
with the build's own -Wall -Wextra -Werror, plus stricter warnings.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.sandbox.protocol import encode_launch_spec
from tests.sandbox.init_spec import run_with_spec

SOURCE = Path(__file__).resolve().parents[2] / "supervisor" / "sandbox" / "openshell-init.c"
STRICT = ("-Wall", "-Wextra", "-Werror", "-Wconversion", "-Wsign-conversion", "-Wshadow",
          "-Wformat=2", "-Wcast-qual", "-Wstrict-prototypes", "-Wnull-dereference")
SANITIZER_OPTIONS = {
    # Leaks do not matter for a PID 1 that exits (and LSan cannot stop a non-dumpable one).
    "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=99",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1:exitcode=98",
}


def _compile(out: Path, *flags: str) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    result = subprocess.run([gcc, *flags, "-o", str(out), str(SOURCE)],
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0 and "sanitize" in " ".join(flags) and (
        "cannot find" in result.stderr or "libasan" in result.stderr
    ):
        pytest.skip(f"no sanitizer runtime: {result.stderr[:200]}")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    directory = tmp_path_factory.mktemp("init-builds")
    yield {
        "asan": _compile(directory / "init-asan", "-g", "-O1", "-fno-omit-frame-pointer",
                         "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                         *STRICT),
        "plain": _compile(directory / "init-g", "-g", "-O0", *STRICT),
    }


def _run(binary: Path, spec: bytes, cwd: Path, wrapper: tuple[str, ...] = (),
         env: dict[str, str] | None = None) -> tuple[int, str, list[dict[str, object]]]:
    result, status = run_with_spec([*wrapper, str(binary)], spec, env=env, cwd=cwd, timeout=60)
    return result.returncode, result.stderr.decode(errors="replace"), status


def _assert_clean(code: int, stderr: str, status: list[dict[str, object]]) -> None:
    assert "Sanitizer" not in stderr and "runtime error" not in stderr, stderr
    assert code in (0, 1, 125, 126, 127), (code, stderr, status)
    if code == 125:
        assert status == [{"kind": "setup", "step": "init", "reason": "unreadable launch spec"}]


# Paths the fuzzer may name: nothing it could do harm with (cwd is an empty directory).
PATHS = st.sampled_from([b"/bin/true", b"/bin/false", b"/nonexistent/x", b"", b"rel", b"."])
STRINGS = st.binary(max_size=12).filter(lambda b: b"\0" not in b and b"/" not in b)
COUNT = st.one_of(
    st.integers(0, 6).map(str),
    st.sampled_from(["-1", "+2", " 2", "2 ", "4294967297", "18446744073709551615",
                     "18446744073709551616", "99999999999999999999999", "0x2", "2e3", ""]),
)


@st.composite
def specs(draw: st.DrawFn) -> bytes:
    """A header with fuzzed counts, then strings, each perhaps missing its NUL, then maybe
    trailing bytes, the whole perhaps cut anywhere."""
    head = draw(COUNT) + draw(st.sampled_from([" ", "  ", "\t", ""])) + draw(COUNT)
    body = [draw(PATHS), *draw(st.lists(STRINGS, max_size=6))]
    data = head.encode() + draw(st.sampled_from([b"\n", b"\n\n", b"", b"\r\n"]))
    data += b"".join(s + (b"\0" if draw(st.booleans()) or i == 0 else b"")
                     for i, s in enumerate(body))
    cut = draw(st.integers(0, len(data)))
    return data[:cut] if draw(st.booleans()) else data


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs())
def test_fuzzed_specs_under_asan_and_ubsan(builds: dict[str, Path], spec: bytes,
                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    cwd = tmp_path_factory.mktemp("cwd")
    _assert_clean(*_run(builds["asan"], spec, cwd, env=SANITIZER_OPTIONS))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=st.binary(max_size=80).filter(lambda b: b"/" not in b))
def test_random_bytes_under_asan_and_ubsan(builds: dict[str, Path], spec: bytes,
                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    cwd = tmp_path_factory.mktemp("cwd")
    _assert_clean(*_run(builds["asan"], spec, cwd, env=SANITIZER_OPTIONS))


@pytest.mark.parametrize(
    "spec",
    [
        b"2 1\n/bin/true\0true\0A=b\0",
        # A string without its NUL, right at the end of the spec.
        b"2 1\n/bin/true\0true\0NO_NUL",
    ],
)
def test_valgrind_sees_no_error(builds: dict[str, Path], spec: bytes, tmp_path: Path) -> None:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        pytest.skip("valgrind is not installed")
    wrapper = (valgrind, "-q", "--error-exitcode=99", "--leak-check=no")
    code, stderr, status = _run(builds["plain"], spec, tmp_path, wrapper)
    assert code != 99 and "Invalid" not in stderr and "uninitialised" not in stderr, stderr
    _assert_clean(code, stderr, status)


def test_the_sanitized_init_still_runs_an_agent(builds: dict[str, Path], tmp_path: Path) -> None:
    """Control: the harness does exec an agent (so 125 everywhere would be noticed)."""
    spec = encode_launch_spec("/bin/sh", ("sh", "-c", "exit 3"), {"A": "b"})
    code, stderr, status = _run(builds["asan"], spec, tmp_path, env=SANITIZER_OPTIONS)
    assert (code, status) == (3, [{"kind": "exit", "status": 3 << 8}]), stderr
