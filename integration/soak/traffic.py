"""Client tasks: mixed raw HTTP/1.1 traffic through the proxy, outcomes counted by kind.

Raw sockets (not an HTTP library) so malformed and smuggling requests reach the proxy
byte for byte. Good requests reuse keep-alive connections like real clients; every other
kind uses a fresh connection (the proxy closes after refusing a head).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

QUERY_MARK = "soakquerymark"  # sent in query strings; must never appear in the audit log
FORGED = "Bearer agent-forged-credential"  # the agent's own header: must be replaced
_READ_LIMIT = 256 * 1024

# Outcomes each kind may legitimately get; anything else is counted as unexpected.
EXPECTED: dict[str, frozenset[str]] = {
    "good": frozenset({"ok", "token_grant_failed", "upstream_unreachable"}),
    "undeclared": frozenset({"policy_denied"}),
    "malformed": frozenset({"bad_request"}),
}


@dataclass(frozen=True)
class Target:
    proxy: tuple[str, int]
    alpha: str  # authority "127.0.0.2:port"
    beta: str
    canary: str  # authority nothing declares


@dataclass
class Stats:
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, outcome)
    by_phase: Counter[tuple[str, str]] = field(default_factory=Counter)  # good: (phase, outcome)
    recent_good: list[tuple[float, str]] = field(default_factory=list)  # (t, outcome)
    stale_retries: int = 0

    def unexpected(self) -> Counter[tuple[str, str]]:
        return Counter({k: n for k, n in self.outcomes.items() if k[1] not in EXPECTED[k[0]]})


def _good(t: Target, rnd: random.Random) -> bytes:
    auth = t.alpha if rnd.random() < 0.5 else t.beta
    path = rnd.choice(["/", "/v1/items", f"/search?q={QUERY_MARK}&n={rnd.randrange(999)}"])
    forged = f"Authorization: {FORGED}\r\n" if rnd.random() < 0.3 else ""
    return (
        f"GET http://{auth}{path} HTTP/1.1\r\nHost: {auth}\r\nUser-Agent: soak\r\n"
        f"{forged}Accept: */*\r\n\r\n"
    ).encode()


def _undeclared(t: Target, rnd: random.Random) -> bytes:
    alpha_host = t.alpha.split(":")[0]
    canary_port = t.canary.split(":")[1]
    choice = rnd.randrange(4)
    if choice == 0:
        return f"GET http://{t.canary}/?{QUERY_MARK} HTTP/1.1\r\nHost: {t.canary}\r\n\r\n".encode()
    if choice == 1:  # declared host, undeclared port
        auth = f"{alpha_host}:{canary_port}"
        return f"GET http://{auth}/ HTTP/1.1\r\nHost: {auth}\r\n\r\n".encode()
    if choice == 2:
        return f"CONNECT {t.canary} HTTP/1.1\r\nHost: {t.canary}\r\n\r\n".encode()
    auth = "localhost:" + t.alpha.split(":")[1]  # same port, undeclared name
    return f"GET http://{auth}/ HTTP/1.1\r\nHost: {auth}\r\n\r\n".encode()


def _malformed_templates() -> list[str]:
    smuggled = "GET / HTTP/1.1\r\nHost: {a}\r\n\r\n"
    return [
        "POST http://{a}/ HTTP/1.1\r\nHost: {a}\r\nContent-Length: 40\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
        "POST http://{a}/ HTTP/1.1\r\nHost: {a}\r\nTransfer-Encoding: chunked\r\n"
        "Transfer-Encoding: identity\r\n\r\n0\r\n\r\n" + smuggled,
        "POST http://{a}/ HTTP/1.1\r\nHost: {a}\r\nContent-Length: 0\r\nContent-Length: 37\r\n\r\n"
        + smuggled,
        "POST http://{a}/ HTTP/1.1\r\nHost: {a}\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        "POST http://{a}/ HTTP/1.1\r\nHost: {a}\r\nX-A: b\r\n Transfer-Encoding: chunked\r\n\r\n",
        "GET http://{a}/ HTTP/1.1\nHost: {a}\r\n\r\n",
        "GET http://{a}/ HTTP/1.1\r\nHost: {a}\r\nHost: {c}\r\n\r\n",
        "GET http://{a}/ HTTP/1.1\r\nHost: {c}\r\n\r\n",
        "GET http://{a}/v1/../admin HTTP/1.1\r\nHost: {a}\r\n\r\n",
        "GET http://{a}/v1/%2e%2e/admin HTTP/1.1\r\nHost: {a}\r\n\r\n",
        "GET http://user@{a}/ HTTP/1.1\r\nHost: {a}\r\n\r\n",
        "GET http://{a}/ HTTP/1.1\r\nHost: {a}\r\nX-Nul: a\x00b\r\n\r\n",
        "GET http://{a}/ HTTP/2.0\r\nHost: {a}\r\n\r\n",
        "GET  http://{a}/ HTTP/1.1\r\nHost: {a}\r\n\r\n",
        "POST http://{a}/ HTTP/1.1\r\nHost: {a}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
        + smuggled,
        "POST http://{a}/ HTTP/1.0\r\nHost: {a}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET http://{a}/ HTTP/1.1\r\nHost: {a}\r\nX-Big: " + "a" * 20000 + "\r\n\r\n",
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    ]


_MALFORMED = _malformed_templates()


def _malformed(t: Target, rnd: random.Random) -> bytes:
    text = rnd.choice(_MALFORMED).replace("{a}", t.alpha).replace("{c}", t.canary)
    return text.encode("latin-1")


KINDS: tuple[tuple[str, int, Callable[[Target, random.Random], bytes]], ...] = (
    ("good", 70, _good),
    ("undeclared", 15, _undeclared),
    ("malformed", 15, _malformed),
)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    if length:
        await reader.readexactly(length)
    return status, headers


def classify(status: int, headers: dict[str, str]) -> str:
    if "x-openshell-proxy-error" in headers:
        return headers["x-openshell-proxy-error"]
    return "ok" if status == 200 else f"http_{status}"


class Client:
    """One client task. ``run`` loops until ``deadline`` or ``max_requests``."""

    def __init__(
        self, target: Target, stats: Stats, seed: int, *, pause: float, timeout: float = 20.0
    ) -> None:
        self.target = target
        self.stats = stats
        self.rnd = random.Random(seed)
        self.pause = pause
        self.timeout = timeout
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(*self.target.proxy, limit=_READ_LIMIT)

    async def close(self) -> None:
        if self._conn is not None:
            writer = self._conn[1]
            self._conn = None
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    async def one(self, kind: str, raw: bytes) -> str:
        if kind != "good":  # a fresh connection, closed after the answer
            reader, writer = await self._open()
            try:
                return await self._send(reader, writer, raw)
            finally:
                writer.close()
        for attempt in (0, 1):
            reused = self._conn is not None
            if self._conn is None:
                self._conn = await self._open()
            reader, writer = self._conn
            try:
                writer.write(raw)
                await writer.drain()
                status, headers = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                await self.close()
                got_nothing = isinstance(exc, ConnectionError) or not exc.partial
                if reused and got_nothing and attempt == 0:
                    self.stats.stale_retries += 1  # the proxy closed an idle keep-alive
                    continue
                return "no_response"
            if headers.get("connection", "").lower() == "close":
                await self.close()
            return classify(status, headers)
        return "no_response"

    @staticmethod
    async def _send(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes
    ) -> str:
        try:
            writer.write(raw)
            await writer.drain()
            status, headers = await _read_response(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return "no_response"
        return classify(status, headers)

    async def run(self, deadline: float, max_requests: int, phase: Callable[[], str]) -> None:
        names = [k[0] for k in KINDS]
        weights = [k[1] for k in KINDS]
        makers = {k[0]: k[2] for k in KINDS}
        for _ in range(max_requests):
            if time.monotonic() >= deadline:
                break
            kind = self.rnd.choices(names, weights)[0]
            current = phase()
            try:
                outcome = await asyncio.wait_for(
                    self.one(kind, makers[kind](self.target, self.rnd)), self.timeout
                )
            except TimeoutError:
                await self.close()
                outcome = "client_timeout"
            except OSError:
                await self.close()
                outcome = "connect_failed"
            self.stats.outcomes[(kind, outcome)] += 1
            if kind == "good":
                self.stats.by_phase[(current, outcome)] += 1
                self.stats.recent_good.append((time.monotonic(), outcome))
            await asyncio.sleep(self.pause * self.rnd.uniform(0.5, 1.5))
        await self.close()
