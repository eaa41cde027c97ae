"""Bulk transfers: one large download (nginx, sendfile) and one large upload (the stream
server's sink, which answers after the last byte) per leg, with curl as the client.

Legs come in groups that share a ceiling and a baseline: the forward path (absolute-form
HTTP, token injected) against tinyproxy, CONNECT tunnels (TLS end to end) against
tinyproxy's, interception (TLS terminated, token injected) against mitmproxy's, with
direct HTTP or direct TLS as the ceiling. Rounds interleave the legs; medians are kept.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from integration.bench.stats import median
from integration.bench.wrk import CLIENT_TOKEN

DOWN = "download"
UP = "upload"
DIRECTIONS = (DOWN, UP)
_WRITE_OUT = "\\nBULK %{http_code} %{size_download} %{size_upload} %{time_total}\\n"


@dataclass(frozen=True)
class BulkLeg:
    name: str
    download_url: str
    upload_url: str
    proxy: str | None = None  # "http://127.0.0.1:PORT"; https URLs are CONNECTed
    cacert: Path | None = None  # trust anchor for https URLs (the CA the client sees)
    client_auth: bool = False  # the client sends the bearer token (nothing injects)
    cpu_pid: int | None = None  # the proxy process whose CPU time each transfer costs


@dataclass
class BulkResult:
    leg: str
    direction: str
    size: int  # bytes moved per transfer
    seconds: list[float] = field(default_factory=list)  # one per round
    error: str = ""
    cpu_seconds: list[float] = field(default_factory=list)  # the proxy's, one per round

    @property
    def cpu_per_gib(self) -> float | None:
        """The proxy's median CPU seconds per GiB moved: unlike GB/s, barely moved by
        other processes' load on a shared machine."""
        if self.error or not self.cpu_seconds:
            return None
        return median(self.cpu_seconds) / (self.size / 2**30)

    @property
    def gbps(self) -> float | None:
        """Median throughput in GB/s (10^9 bytes per second)."""
        if self.error or not self.seconds:
            return None
        return self.size / median(self.seconds) / 1e9


def create_payload(path: Path, size: int) -> Path:
    """A sparse file of ``size`` zero bytes (no disk writes), read once so that the first
    leg does not pay for filling the page cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.truncate(size)
    buf = bytearray(1 << 20)
    with path.open("rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return path


def curl_argv(leg: BulkLeg, direction: str, payload: Path, timeout_s: float) -> list[str]:
    argv = ["curl", "-sS", "-o", "/dev/null", "-w", _WRITE_OUT, "--max-time", f"{timeout_s:g}"]
    argv += ["-x", leg.proxy] if leg.proxy else ["--noproxy", "*"]
    if leg.cacert is not None:
        argv += ["--cacert", str(leg.cacert)]
    if leg.client_auth:
        argv += ["-H", f"Authorization: Bearer {CLIENT_TOKEN}"]
    if direction == DOWN:
        return [*argv, leg.download_url]
    # -T sends the file with its Content-Length; no 100-continue round trip.
    return [*argv, "-H", "Expect:", "-T", str(payload), leg.upload_url]


def parse_curl(output: str, direction: str, size: int) -> float:
    """Seconds of one complete transfer; ValueError when it was not one."""
    lines = [ln for ln in output.splitlines() if ln.startswith("BULK ")]
    if not lines:
        raise ValueError("no curl summary line")
    _, code, down, up, total = lines[-1].split()
    moved = int(float(down if direction == DOWN else up))
    if code != "200":
        raise ValueError(f"HTTP status {code}")
    if moved != size:
        raise ValueError(f"moved {moved} of {size} bytes")
    seconds = float(total)
    if seconds <= 0:
        raise ValueError("zero transfer time")
    return seconds


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process so far (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def transfer(leg: BulkLeg, direction: str, payload: Path, size: int) -> float:
    if not (leg.download_url if direction == DOWN else leg.upload_url):
        raise RuntimeError(f"no {direction} server for this leg (see the components)")
    timeout = max(60.0, size / 50e6)  # 50 MB/s is far below any leg: a hang, not a result
    argv = curl_argv(leg, direction, payload, timeout)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 30, check=False)
    if proc.returncode != 0:
        why = proc.stderr.strip().splitlines()
        raise RuntimeError(f"curl exited {proc.returncode}: {why[-1][:200] if why else ''}")
    return parse_curl(proc.stdout, direction, size)


def run_bulk(
    legs: list[BulkLeg], payload: Path, size: int, rounds: int, show: bool = True
) -> list[BulkResult]:
    """``rounds`` interleaved rounds over every leg and direction; a failing cell is dropped
    with its error and the others go on."""
    results = {(leg.name, d): BulkResult(leg.name, d, size) for leg in legs for d in DIRECTIONS}
    for round_no in range(1, rounds + 1):
        for leg in legs:
            for direction in DIRECTIONS:
                cell = results[(leg.name, direction)]
                if cell.error:
                    continue
                try:
                    cpu = process_cpu_seconds(leg.cpu_pid) if leg.cpu_pid else None
                    seconds = transfer(leg, direction, payload, size)
                    if cpu is not None and leg.cpu_pid:
                        cell.cpu_seconds.append(process_cpu_seconds(leg.cpu_pid) - cpu)
                except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired) as err:
                    cell.error = str(err)
                    if show:
                        print(f"round {round_no}  bulk {leg.name:<22} {direction:<8} FAILED: {err}")
                    continue
                cell.seconds.append(seconds)
                if show:
                    cpu = (f"  proxy CPU {cell.cpu_seconds[-1] / (size / 2**30):.2f} s/GiB"
                           if cell.cpu_seconds else "")
                    print(f"round {round_no}  bulk {leg.name:<22} {direction:<8} "
                          f"{size / seconds / 1e9:6.2f} GB/s{cpu}")  # fmt: skip
    return list(results.values())


def find_bulk(results: list[BulkResult], leg: str, direction: str) -> BulkResult | None:
    for r in results:
        if r.leg == leg and r.direction == direction:
            return r
    return None


def bulk_ratio(results: list[BulkResult], leg: str, base: str, direction: str) -> float | None:
    a, b = find_bulk(results, leg, direction), find_bulk(results, base, direction)
    if a is None or b is None or a.gbps is None or b.gbps is None or b.gbps <= 0:
        return None
    return a.gbps / b.gbps
