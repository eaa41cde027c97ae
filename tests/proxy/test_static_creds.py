"""Static credentials through the proxy over loopback sockets (ARCHITECTURE.md 9).

Two declared upstreams: the credential's endpoint (A) and another declared host (B).
The placeholder reaches A as the real value; sent to B it is refused and B sees nothing.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from supervisor.credentials.placeholders import placeholder
from supervisor.credentials.scope import BoundEndpoint, StaticCredential
from supervisor.credentials.store import CredentialStore
from tests.credentials import sigv4_verifier
from tests.proxy.harness import Env, FakePolicy, FakeTokens, endpoint, recv_response
from tests.proxy.test_websocket import EchoServer, PlainOnly

KEY = "sk-ant-REAL-key/with+odd=chars"
P = placeholder("ANTHROPIC_API_KEY")


class Echo:
    """An origin that records each request (head and body) and echoes it as JSON."""

    def __init__(self, verify: Any = None) -> None:
        self.requests: list[tuple[str, list[tuple[str, str]], bytes]] = []
        self.port = 0
        self.verify = verify
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await r.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                headers = [(k.strip(), v.strip()) for k, _, v in
                           (ln.partition(":") for ln in lines[1:] if ln)]
                n = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
                body = await r.readexactly(n) if n else b""
                self.requests.append((lines[0], headers, body))
                status = 200
                if self.verify is not None:
                    method, target, _ = lines[0].split(" ")
                    path, _, query = target.partition("?")
                    why = self.verify(method, path, f"?{query}" if query else "", headers, body)
                    status = 200 if why is None else 403
                out = json.dumps({"line": lines[0], "headers": headers,
                                  "body": body.decode("latin-1")}).encode()
                w.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(out), out))
                await w.drain()
        finally:
            w.close()


def _store(a_port: int, b_port: int, values: dict[str, str], directory: str | None = None,
           **opts: Any) -> CredentialStore:
    creds = [
        StaticCredential("claude-code", "api_key", ("ANTHROPIC_API_KEY", "CLAUDE_API_KEY"), True,
                         (BoundEndpoint("127.0.0.1", (a_port,), None, **opts),)),
        StaticCredential("github", "api_token", ("GITHUB_TOKEN",), False,
                         (BoundEndpoint("127.0.0.1", (b_port,), "/gh/**"),)),
    ]
    return CredentialStore(creds, values, directory)


@pytest.fixture
def rig(tmp_path: Any) -> Any:
    made: list[Env] = []

    def make(values: dict[str, str] | None = None, directory: str | None = None,
             verify: Any = None, aws: dict[str, str] | None = None,
             **opts: Any) -> tuple[Env, Echo, Echo, CredentialStore]:
        a, b = Echo(verify), Echo()
        holder: list[CredentialStore] = []
        env = Env(FakePolicy(), FakeTokens(), str(tmp_path / f"audit{len(made)}.jsonl"),
                  static_credentials=lambda: holder[0].state)
        made.append(env)
        env.call(a.start())
        env.call(b.start())
        env.policy.endpoints += [endpoint("127.0.0.1", a.port), endpoint("127.0.0.1", b.port)]
        if aws is not None:  # an aws-s3-shaped profile whose endpoint is A
            creds = [StaticCredential("aws", "keys", tuple(aws), True,
                                      (BoundEndpoint("127.0.0.1", (a.port,), None, **opts),))]
            store = CredentialStore(creds, aws, None)
        else:
            store = _store(a.port, b.port, values if values is not None else
                           {"ANTHROPIC_API_KEY": KEY, "GITHUB_TOKEN": "ghp_REALTOKEN"},
                           directory, **opts)
        holder.append(store)
        return env, a, b, store

    yield make
    for env in made:
        env.close()
    for log in tmp_path.glob("audit*.jsonl"):
        text = log.read_text()
        for secret in (KEY, "ghp_REALTOKEN", "resolve:env", "ANTHROPIC_API_KEY", "GITHUB_TOKEN",
                       "q=secretquery", "real/secret+KEY", "session-tok"):
            assert secret not in text


def send(env: Env, port: int, target: str, headers: str = "", body: bytes = b"",
         method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    if body:
        headers += f"Content-Length: {len(body)}\r\n"
    raw = (f"{method} http://127.0.0.1:{port}{target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
           f"{headers}\r\n").encode() + body
    with env.connect() as s:
        s.sendall(raw)
        return recv_response(s)


def seen(echo: Echo, i: int = -1) -> dict[str, str]:
    return {k.lower(): v for k, v in echo.requests[i][1]}


def test_placeholder_reaches_its_endpoint_as_the_value(rig: Any) -> None:
    env, a, _b, _ = rig()
    status, _, _ = send(env, a.port, "/v1/messages", f"x-api-key: {P}\r\n")
    assert status == 200
    assert seen(a)["x-api-key"] == KEY


def test_placeholder_to_another_declared_host_is_403_and_it_receives_nothing(rig: Any) -> None:
    env, a, b, _ = rig()
    status, hdrs, body = send(env, b.port, "/gh/repos?q=secretquery", f"x-api-key: {P}\r\n")
    assert status == 403
    assert json.loads(body)["error"] == "credential_endpoint_mismatch"
    assert hdrs["x-openshell-proxy-error"] == "credential_endpoint_mismatch"
    assert b.requests == [] and a.requests == []
    env.audit.close()
    events = [json.loads(x) for x in open(env.audit_path)]
    assert any(e["class_uid"] == 4002 and e["action_id"] == 2 for e in events)
    assert any(e["class_uid"] == 2004 and e["message"] == "credential_endpoint_mismatch"
               for e in events)


def test_unknown_variable_is_500_unavailable(rig: Any) -> None:
    env, a, _b, _ = rig()
    status, _, body = send(env, a.port, "/v1", f"x-api-key: {placeholder('NOPE')}\r\n")
    assert status == 500 and json.loads(body)["error"] == "credential_unavailable"
    # Declared but without a value (CLAUDE_API_KEY): not exposed, so unavailable too.
    status, _, _ = send(env, a.port, "/v1", f"x-api-key: {placeholder('CLAUDE_API_KEY')}\r\n")
    assert status == 500 and a.requests == []


def test_union_binding_and_path_scope(rig: Any) -> None:
    env, _a, b, _ = rig()
    gh = placeholder("GITHUB_TOKEN")
    assert send(env, b.port, "/gh/x", f"Authorization: Bearer {gh}\r\n")[0] == 200
    assert seen(b)["authorization"] == "Bearer ghp_REALTOKEN"
    # Outside the endpoint's path: the same host, but not the binding.
    assert send(env, b.port, "/other", f"Authorization: Bearer {gh}\r\n")[0] == 403


def test_basic_query_and_path(rig: Any) -> None:
    env, a, _b, _ = rig()
    basic = base64.b64encode(f"x-access-token:{P}".encode()).decode()
    enc = P.replace(":", "%3A")
    status, _, _ = send(env, a.port, f"/v1/{enc}/items?key={P}&x=1",
                        f"Authorization: Basic {basic}\r\n")
    assert status == 200
    line, _, _ = a.requests[-1]
    from urllib.parse import quote
    in_path = quote(KEY, safe="-._~!$&'()*+,;=:@")
    in_query = quote(KEY, safe="-._~")
    assert line == f"GET /v1/{in_path}/items?key={in_query}&x=1 HTTP/1.1"
    user, _, value = base64.b64decode(seen(a)["authorization"][6:]).decode().partition(":")
    assert (user, value) == ("x-access-token", KEY)


def test_body_rewrite_only_where_the_endpoint_allows_it(rig: Any) -> None:
    env, a, _b, _ = rig(body_rewrite=True)
    doc = json.dumps({"api_key": P}).encode()
    status, _, _ = send(env, a.port, "/v1", "Content-Type: application/json\r\n", doc, "POST")
    assert status == 200
    assert json.loads(a.requests[-1][2]) == {"api_key": KEY}
    assert seen(a)["content-length"] == str(len(a.requests[-1][2]))
    # Chunked: re-framed with a Content-Length.
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(doc), doc)
    with env.connect() as s:
        s.sendall((f"POST http://127.0.0.1:{a.port}/v1 HTTP/1.1\r\nHost: 127.0.0.1:{a.port}\r\n"
                   "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
                  + chunked)
        assert recv_response(s)[0] == 200
    assert json.loads(a.requests[-1][2]) == {"api_key": KEY}


def test_body_left_alone_without_the_flag(rig: Any) -> None:
    env, a, _b, _ = rig()
    doc = json.dumps({"api_key": P}).encode()
    assert send(env, a.port, "/v1", "Content-Type: application/json\r\n", doc, "POST")[0] == 200
    assert a.requests[-1][2] == doc


def test_no_placeholder_nothing_added(rig: Any) -> None:
    env, a, _b, _ = rig()
    assert send(env, a.port, "/v1?x=1", "Accept: */*\r\nX-Api-Key: mine\r\n")[0] == 200
    line, headers, _ = a.requests[-1]
    assert line == "GET /v1?x=1 HTTP/1.1"
    assert sorted(k.lower() for k, _ in headers) == ["accept", "host", "x-api-key"]
    assert seen(a)["x-api-key"] == "mine"


def test_rotated_secret_file_is_used_by_the_next_request(rig: Any, tmp_path: Any) -> None:
    d = tmp_path / "secret"
    d.mkdir()
    (d / "ANTHROPIC_API_KEY").write_text("first-value\n")
    env, a, _b, store = rig(values={}, directory=str(d))
    assert send(env, a.port, "/v1", f"x-api-key: {P}\r\n")[0] == 200
    assert seen(a)["x-api-key"] == "first-value"
    (d / "ANTHROPIC_API_KEY").write_text("second-value\n")
    assert store.refresh() is True
    assert send(env, a.port, "/v1", f"x-api-key: {P}\r\n")[0] == 200
    assert seen(a)["x-api-key"] == "second-value"
    assert store.agent_variables() == {"ANTHROPIC_API_KEY": P}


def test_sigv4_resigned_and_accepted_by_an_independent_verifier(rig: Any) -> None:
    secrets = {"AKIDREALKEY": "real/secret+KEY"}

    def verify(method: str, path: str, query: str, headers: Any, body: bytes) -> str | None:
        return sigv4_verifier.verify(method, path, query, headers, body, secrets, "bedrock",
                                     "us-east-1")

    values = {"AWS_ACCESS_KEY_ID": "AKIDREALKEY", "AWS_SECRET_ACCESS_KEY": "real/secret+KEY",
              "AWS_SESSION_TOKEN": "session-tok"}
    env, a, _b, _ = rig(aws=values, verify=verify, signing="sigv4",
                        signing_service="bedrock", signing_region="us-east-1")
    body = b'{"prompt":"hi"}'
    status, _, _ = send(
        env, a.port, "/model/m/invoke?x=1",
        "Content-Type: application/json\r\nX-Amz-Date: 20200101T000000Z\r\n"
        "Authorization: AWS4-HMAC-SHA256 Credential=openshell:resolve:env:AWS_ACCESS_KEY_ID/x\r\n"
        "X-Amz-Security-Token: openshell:resolve:env:AWS_SESSION_TOKEN\r\n", body, "POST")
    assert status == 200
    got = seen(a)
    assert got["x-amz-security-token"] == "session-tok"
    assert "AKIDREALKEY/" in got["authorization"] and "openshell" not in repr(a.requests[-1])


def test_sigv4_key_id_that_cannot_go_in_a_header_is_refused(rig: Any) -> None:
    """The key id and session token are header text: a character past ASCII (or a control)
    is refused cleanly instead of breaking the head mid-request."""
    values = {"AWS_ACCESS_KEY_ID": "AKID\u20ac", "AWS_SECRET_ACCESS_KEY": "real/secret+KEY"}
    env, a, _b, _ = rig(aws=values, signing="sigv4:no_body", signing_service="s3",
                        signing_region="us-east-1")
    status, _, body = send(env, a.port, "/bucket/key")
    assert status == 500 and json.loads(body)["error"] == "credential_unavailable"
    assert a.requests == []


def test_required_credential_without_value_names_the_variables() -> None:
    from supervisor.credentials.store import MissingRequired

    with pytest.raises(MissingRequired) as info:
        _store(1, 2, {})
    assert "ANTHROPIC_API_KEY, CLAUDE_API_KEY" in str(info.value)
    assert "claude-code/api_key" in info.value.step


# -- WebSocket client messages ---------------------------------------------------------

class RecordingEcho(EchoServer):
    """The websockets echo server, also recording what arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str | bytes] = []

    async def start(self, ssl_ctx: Any = None) -> None:
        from websockets.asyncio.server import serve

        async def echo(ws: Any) -> None:
            self.handshakes.append(ws.request)
            try:
                async for message in ws:
                    self.messages.append(message)
                    await ws.send(message)
            finally:
                self.close_codes.append(ws.close_code)

        self.server = await serve(echo, "127.0.0.1", 0, ssl=ssl_ctx, ping_interval=None)
        self.port = next(iter(self.server.sockets)).getsockname()[1]


@pytest.fixture
def ws_rig(tmp_path: Any) -> Any:
    made: list[tuple[Env, RecordingEcho]] = []

    def make(rewrite: bool) -> tuple[Env, RecordingEcho]:
        ws = RecordingEcho()
        holder: list[CredentialStore] = []
        env = Env(FakePolicy(), FakeTokens(), str(tmp_path / f"ws{len(made)}.jsonl"),
                  interceptor=PlainOnly(), static_credentials=lambda: holder[0].state)
        env.call(ws.start())
        env.policy.endpoints.append(endpoint("127.0.0.1", ws.port))
        holder.append(_store(ws.port, 1, {"ANTHROPIC_API_KEY": KEY, "GITHUB_TOKEN": "ghp_REALTOKEN"},
                             websocket_rewrite=rewrite))
        made.append((env, ws))
        return env, ws

    yield make
    for env, ws in made:
        env.call(ws.stop())
        env.close()
    for log in tmp_path.glob("ws*.jsonl"):
        text = log.read_text()
        assert KEY not in text and "resolve:env" not in text and "ANTHROPIC_API_KEY" not in text


def _ws(env: Env, ws: RecordingEcho, headers: dict[str, str] | None = None) -> Any:
    from websockets.sync.client import connect

    return connect(f"ws://127.0.0.1:{ws.port}/chat", proxy=f"http://127.0.0.1:{env.proxy_port}",
                   additional_headers=headers or {}, open_timeout=5, close_timeout=5)


def test_ws_text_message_rewritten_where_the_endpoint_allows_it(ws_rig: Any) -> None:
    env, ws = ws_rig(rewrite=True)
    with _ws(env, ws, {"Sec-WebSocket-Extensions": "permessage-deflate"}) as client:
        client.send(json.dumps({"type": "auth", "key": P}))
        assert json.loads(client.recv(timeout=5))["key"] == KEY
        client.send("plain text")
        assert client.recv(timeout=5) == "plain text"
        client.send(b"binary " + P.encode())  # binary frames are not messages we read
        assert client.recv(timeout=5) == b"binary " + P.encode()
    assert json.loads(ws.messages[0])["key"] == KEY
    # No extension was negotiated: every message stayed readable.
    assert "Sec-WebSocket-Extensions" not in ws.handshakes[0].headers


@pytest.mark.parametrize("rewrite_on", [False, True])
def test_ws_placeholder_that_may_not_go_closes_with_1008(ws_rig: Any, rewrite_on: bool) -> None:
    from websockets.exceptions import ConnectionClosed

    env, ws = ws_rig(rewrite=rewrite_on)
    # Rewriting off: any placeholder; on: one bound to another endpoint.
    text = P if not rewrite_on else placeholder("GITHUB_TOKEN")
    with _ws(env, ws) as client:
        client.send("hello")
        assert client.recv(timeout=5) == "hello"
        client.send(f"token={text}")
        with pytest.raises(ConnectionClosed):
            client.recv(timeout=5)
    assert client.close_code == 1008
    assert ws.messages == ["hello"]  # the placeholder never reached the upstream
    env.audit.close()
    events = [json.loads(x) for x in open(env.audit_path)]
    assert any(e["class_uid"] == 2004 for e in events)


def test_ws_messages_are_not_rewritten_in_cleartext_to_a_remote_host(tmp_path: Any) -> None:
    """ws:// to a host that is neither loopback nor an in-cluster service: an HTTP request
    there is refused rather than carry a value in cleartext, and so is a WebSocket message
    (the upgrade itself held no placeholder, so only the message can be judged)."""
    import ipaddress

    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    async def to_loopback(host: str, port: int) -> list[Any]:
        return [ipaddress.ip_address("127.0.0.1")]

    ws = RecordingEcho()
    holder: list[CredentialStore] = []
    env = Env(FakePolicy(), FakeTokens(), str(tmp_path / "ws-clear.jsonl"),
              interceptor=PlainOnly(), resolver=to_loopback,
              static_credentials=lambda: holder[0].state)
    try:
        env.call(ws.start())
        env.policy.endpoints.append(endpoint("chat.example.com", ws.port))
        holder.append(CredentialStore(
            [StaticCredential("chat", "key", ("ANTHROPIC_API_KEY",), True,
                              (BoundEndpoint("chat.example.com", (ws.port,), None,
                                             websocket_rewrite=True),))],
            {"ANTHROPIC_API_KEY": KEY}, None))
        with connect(f"ws://chat.example.com:{ws.port}/chat",
                     proxy=f"http://127.0.0.1:{env.proxy_port}",
                     open_timeout=5, close_timeout=5) as client:
            client.send("hello")
            assert client.recv(timeout=5) == "hello"
            client.send(f"key={P}")
            with pytest.raises(ConnectionClosed):
                client.recv(timeout=5)
        assert client.close_code == 1008
        assert ws.messages == ["hello"]
    finally:
        env.call(ws.stop())
        env.close()
    audit = (tmp_path / "ws-clear.jsonl").read_text()
    assert "credential would travel in cleartext" in audit
    assert KEY not in audit and "resolve:env" not in audit



def test_a_tunnel_to_one_host_never_carries_a_value_for_another(tmp_path: Any) -> None:
    """Inside a CONNECT tunnel the tunnel's target, not Host, is the destination: a request
    naming another host is refused before any substitution, and the tunnel's own host
    gets no value bound elsewhere, however many requests the connection carries."""
    a, b = Echo(), Echo()
    holder: list[CredentialStore] = []
    env = Env(FakePolicy(), FakeTokens(), str(tmp_path / "tunnel.jsonl"),
              interceptor=PlainOnly(), static_credentials=lambda: holder[0].state)
    try:
        env.call(a.start())
        env.call(b.start())
        env.policy.endpoints += [endpoint("127.0.0.1", a.port), endpoint("127.0.0.1", b.port)]
        holder.append(_store(a.port, b.port, {"ANTHROPIC_API_KEY": KEY,
                                              "GITHUB_TOKEN": "ghp_REALTOKEN"}))
        gh = placeholder("GITHUB_TOKEN")
        with env.connect() as s:
            s.sendall(f"CONNECT 127.0.0.1:{b.port} HTTP/1.1\r\nHost: 127.0.0.1:{b.port}\r\n\r\n"
                      .encode())
            assert recv_response(s, head_only=True)[0] == 200
            answers = []
            for host_port, headers in ((b.port, f"Authorization: Bearer {gh}"),
                                       (a.port, f"x-api-key: {P}"),
                                       (b.port, f"x-api-key: {P}")):
                s.sendall(f"GET /gh/x HTTP/1.1\r\nHost: 127.0.0.1:{host_port}\r\n{headers}\r\n\r\n"
                          .encode())
                status, hdrs, _ = recv_response(s)
                answers.append((status, hdrs.get("x-openshell-proxy-error")))
    finally:
        env.close()
    assert answers == [(200, None), (403, "request_authority_mismatch"),
                       (403, "credential_endpoint_mismatch")]
    assert a.requests == [] and len(b.requests) == 1
    assert seen(b)["authorization"] == "Bearer ghp_REALTOKEN"
