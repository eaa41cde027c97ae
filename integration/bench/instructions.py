"""Instructions per keep-alive request through our proxy, counted by callgrind.

Load-independent where wall-clock req/s is not (the machine is shared): the proxy runner
(wired as `run` wires it) runs under ``valgrind --tool=callgrind`` twice, once serving A and
once B keep-alive requests on one connection (after one cold request that fetches the
grant); (I_B - I_A) / (B - A) is the proxy's cost per request, start-up cancelled out.
The client is a plain blocking socket outside valgrind. ``--target inject`` asks nginx's
bound server (a token injected), ``open`` its server declared without credentials.

``--profile-threads FILE``: instead, the runner under cProfile (every thread), B requests,
stats written to FILE (pstats) and the top functions printed.

Usage: python -m integration.bench.instructions [--requests 200,1200] [--target inject]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
import sys
import tempfile
import time
from pathlib import Path

from integration.bench.certs import make_pki
from integration.bench.harness import ROOT
from integration.bench.nginx import Upstream, nginx_service
from integration.bench.ours import devenv_runner, write_profile
from integration.bench.procs import LOOPBACK, free_port
from integration.bench.runner_io import Runner

RUNNER = [sys.executable, "-m", "integration.bench.proxy_runner"]
_TOTALS = re.compile(r"^(?:summary|totals):\s+(\d+)", re.M)

PROFILE_WRAPPER = """\
import atexit, cProfile, os, pstats, runpy, sys, threading
sys.path[0] = os.getcwd()  # the tree being measured, as with -m
profiles = []
_run = threading.Thread.run
def run(self):
    p = cProfile.Profile()
    profiles.append(p)
    p.enable()
    try:
        _run(self)
    finally:
        p.disable()
threading.Thread.run = run
def dump():
    st = pstats.Stats(*profiles) if profiles else None
    if st is not None:
        st.dump_stats(os.environ["INSTR_PROFILE_OUT"])
atexit.register(dump)
runpy.run_module("integration.bench.proxy_runner", run_name="__main__", alter_sys=True)
"""


def keepalive_requests(proxy_port: int, target_port: int, n: int) -> None:
    """``n`` GETs on one keep-alive connection, as wrk sends them through a proxy."""
    authority = f"{LOOPBACK}:{target_port}"
    request = f"GET http://{authority}/ HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode()
    with socket.create_connection((LOOPBACK, proxy_port)) as s:
        buf = b""
        for _ in range(n):
            s.sendall(request)
            while True:
                head, sep, rest = buf.partition(b"\r\n\r\n")
                if sep:
                    length = _content_length(head)
                    if len(rest) >= length:
                        status = head.split(b" ", 2)[1]
                        if status != b"200":
                            raise RuntimeError(f"answer {status!r}: {head[:200]!r}")
                        buf = rest[length:]
                        break
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("the proxy closed the connection")
                buf += chunk


def warm_up(proxy_port: int, target_port: int, tries: int = 30) -> None:
    """The first request fetches the grant; under valgrind it may time out: retry."""
    for attempt in range(tries):
        try:
            keepalive_requests(proxy_port, target_port, 1)
            return
        except RuntimeError:
            if attempt == tries - 1:
                raise
            time.sleep(2)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise RuntimeError(f"no content-length: {head[:200]!r}")


def run_once(
    work: Path, profile: Path, spiffe: str, ca: Path, target: int, n: int, prefix: list[str],
    src: Path = ROOT,
    extra: tuple[str, ...] = (),
) -> Runner:
    port = free_port()
    argv = [
        *prefix, "--profile", str(profile),
        "--port", str(port), "--spiffe-socket", spiffe, "--ca-bundle", str(ca), *extra,
    ]  # fmt: skip
    runner = Runner(f"proxy-{n}", argv, work, src)  # -m: src's supervisor comes first
    with runner:
        warm_up(port, target)
        keepalive_requests(port, target, n)
    return runner


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m integration.bench.instructions")
    p.add_argument("--requests", default="200,1200", help="A,B request counts")
    p.add_argument("--target", choices=("inject", "open"), default="inject")
    p.add_argument("--audit-log", action="store_true", help="the proxy writes an audit log")
    p.add_argument("--src", type=Path, default=ROOT, help="the source tree to measure")
    p.add_argument("--keep", type=Path, help="copy the callgrind outputs into this folder")
    p.add_argument("--profile-threads", type=Path, help="cProfile instead of callgrind")
    args = p.parse_args(argv)
    a, b = (int(x) for x in args.requests.split(","))
    with tempfile.TemporaryDirectory(prefix="instr-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        pki = make_pki(work)
        nginx, up = nginx_service(work, work, pki)
        stack.enter_context(nginx)
        devenv = stack.enter_context(devenv_runner(work, work))
        profile = write_profile(work / "profile.yaml", up, devenv.ready["token_url"])
        target = _target(up, args.target)
        spiffe = str(devenv.ready["socket"])
        extra = ("--audit-log", str(work / "audit.jsonl")) if args.audit_log else ()
        if args.profile_threads is not None:
            wrapper = work / "wrap.py"
            wrapper.write_text(PROFILE_WRAPPER)
            out = args.profile_threads.resolve()
            os.environ["INSTR_PROFILE_OUT"] = str(out)
            run_once(work, profile, spiffe, pki.ca_cert, target, b, [sys.executable, str(wrapper)],
                     args.src, extra)  # fmt: skip
            import pstats

            pstats.Stats(str(out)).sort_stats("tottime").print_stats(40)
            return 0
        totals = []
        for n in (a, b):
            out = work / f"callgrind.{n}"
            prefix = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *RUNNER]
            run_once(work, profile, spiffe, pki.ca_cert, target, n, prefix, args.src, extra)
            if args.keep is not None:
                args.keep.mkdir(parents=True, exist_ok=True)
                (args.keep / out.name).write_bytes(out.read_bytes())
            totals.append(sum(int(m) for m in _TOTALS.findall(out.read_text())[:1]))
        per = (totals[1] - totals[0]) / (b - a)
        print(f"{args.src} {args.target}: {totals[0]} instructions for {a} requests, {totals[1]} for {b}: "
              f"{per / 1000:.1f}k per request (proxy process)")  # fmt: skip
    return 0


def _target(up: Upstream, which: str) -> int:
    return up.bound_port if which == "inject" else up.plain_port


if __name__ == "__main__":
    sys.exit(main())
