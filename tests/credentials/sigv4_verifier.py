"""An independent SigV4 verifier, written from AWS's documented algorithm (tests only).

It shares no code with the signer (which is botocore's): it parses what an AWS service
receives and recomputes the signature from the documented steps — canonical request,
string to sign, derived key, HMAC — so a test upstream can accept or refuse a request.
"""

from __future__ import annotations

import hashlib
import hmac
import posixpath
import re
from urllib.parse import quote, unquote

_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;-]+), ?"
    r"Signature=(?P<sig>[0-9a-f]{64})$"
)


def _enc(text: str, safe: str = "-_.~") -> str:
    return quote(text, safe=safe)


def canonical_uri(path: str, normalize: bool) -> str:
    if not normalize:  # S3: the path as received
        return path or "/"
    norm = posixpath.normpath(path) if path else "/"
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    if path.endswith("/") and norm != "/":
        norm += "/"
    # Each segment URI-encoded (what arrived encoded is encoded again).
    return "/".join(_enc(seg) for seg in norm.split("/"))


def canonical_query(query: str) -> str:
    if query.startswith("?"):
        query = query[1:]
    pairs = []
    for part in query.split("&") if query else []:
        k, _, v = part.partition("=")
        pairs.append((_enc(unquote(k)), _enc(unquote(v))))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def canonical_request(method: str, path: str, query: str, headers: list[tuple[str, str]],
                      signed: list[str], payload_hash: str, normalize: bool) -> str:
    values: dict[str, list[str]] = {}
    for name, value in headers:
        values.setdefault(name.lower(), []).append(" ".join(value.split()))
    lines = [f"{h}:{','.join(values.get(h, []))}" for h in signed]
    return "\n".join([method, canonical_uri(path, normalize), canonical_query(query),
                      "\n".join(lines) + "\n", ";".join(signed), payload_hash])


def signature(secret: str, date: str, region: str, service: str, string_to_sign: str) -> str:
    k = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return hmac.new(k, string_to_sign.encode(), hashlib.sha256).hexdigest()


def string_to_sign(stamp: str, scope: str, creq: str) -> str:
    return "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(creq.encode()).hexdigest()])


def verify(method: str, path: str, query: str, headers: list[tuple[str, str]], body: bytes,
           secrets: dict[str, str], service: str, region: str) -> str | None:
    """``None`` when the request is validly signed; else why not."""
    auth = [v for n, v in headers if n.lower() == "authorization"]
    if len(auth) != 1:
        return "no single Authorization header"
    m = _AUTH.match(auth[0])
    if m is None:
        return "malformed Authorization"
    if m["key"] not in secrets:
        return "unknown access key"
    if (m["region"], m["service"]) != (region, service):
        return "wrong scope"
    stamp = next((v for n, v in headers if n.lower() == "x-amz-date"), "")
    if stamp[:8] != m["date"]:
        return "x-amz-date disagrees with the scope"
    signed = m["signed"].split(";")
    if "host" not in signed or signed != sorted(signed):
        return "host not signed or signed headers unsorted"
    sent_hash = next((v for n, v in headers if n.lower() == "x-amz-content-sha256"), None)
    payload_hash = sent_hash or hashlib.sha256(body).hexdigest()
    if sent_hash not in (None, "UNSIGNED-PAYLOAD") and sent_hash != hashlib.sha256(body).hexdigest():
        return "body does not match x-amz-content-sha256"
    creq = canonical_request(method, path, query, headers, signed, payload_hash, service != "s3")
    scope = f"{m['date']}/{region}/{service}/aws4_request"
    want = signature(secrets[m["key"]], m["date"], region, service, string_to_sign(stamp, scope, creq))
    return None if hmac.compare_digest(want, m["sig"]) else "signature mismatch"
