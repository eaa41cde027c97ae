"""Valid inputs the property tests mutate (also the atheris seed corpus: fuzz/corpus/)."""

from __future__ import annotations

REQUEST_HEADS: list[bytes] = [
    b"GET http://api.example.com/v1/items?x=1 HTTP/1.1\r\nHost: api.example.com\r\n"
    b"User-Agent: t\r\nAccept: */*\r\n\r\n",
    b"POST http://127.0.0.2:8080/upload HTTP/1.1\r\nHost: 127.0.0.2:8080\r\n"
    b"Content-Length: 5\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n\r\nhello",
    b"PUT http://svc.ns.svc/x HTTP/1.1\r\nHost: svc.ns.svc\r\nTransfer-Encoding: chunked\r\n"
    b"Authorization: Bearer agent\r\n\r\n5;ext=1\r\nhello\r\n0\r\nTrailer-A: b\r\n\r\n",
    b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: api.example.com\r\nProxy-Authorization: Basic eA==\r\n\r\n",
    b"GET http://[::1]:8443/a/b HTTP/1.0\r\nHost: [::1]:8443\r\nConnection: keep-alive\r\n\r\n",
    b"HEAD https://api.example.com:443/ HTTP/1.1\r\nHost: api.example.com\r\n"
    b"Expect: 100-continue\r\nContent-Length: 0\r\n\r\n",
    # request smuggling shapes the parser must refuse (the fuzzer starts next to them)
    b"POST http://a.example/ HTTP/1.1\r\nHost: a.example\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST http://a.example/ HTTP/1.1\r\nHost: a.example\r\nContent-Length: 4\r\n"
    b"Content-Length: 5\r\n\r\n",
    b"POST http://a.example/ HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
    b"POST http://a.example/ HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding : chunked\r\n\r\n",
    b"POST http://a.example/ HTTP/1.1\r\nHost: a.example\r\n Transfer-Encoding: chunked\r\n\r\n",
    b"GET http://a.example/ HTTP/1.1\nHost: a.example\r\n\r\n",
    b"GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
    b"GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n",
    b"GET http://a.example/api/../admin HTTP/1.1\r\nHost: a.example\r\n\r\n",
    b"GET http://a.example/api/%2e%2e/admin HTTP/1.1\r\nHost: a.example\r\n\r\n",
    b"GET http://user@a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
    b"POST http://a.example/ HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\nhello\r\n0\r\n\r\n",
    b"POST http://a.example/ HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"ffffffffffffffffff\r\n",
]

TOKEN_RESPONSES: list[bytes] = [
    b'{"access_token":"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln","token_type":"Bearer",'
    b'"expires_in":300}',
    b'{"access_token":"abc.def-ghi_jkl~mno+pqr/stu==","token_type":"bearer"}',
    b'{"access_token":"abc\\r\\nX-Injected: 1","token_type":"Bearer"}',
    b'{"access_token":"abc=def","expires_in":-1}',
    b'{"access_token":"abc","token_type":"MAC","expires_in":true}',
    b'{"error":"invalid_client","error_description":"bad\\u0000assertion\\u2028\\u202e"}',
    b'["access_token"]',
    b'{"access_token":"abc\\n"}',
]
