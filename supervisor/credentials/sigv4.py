"""AWS Signature Version 4 re-signing (``credential_signing: sigv4[:body|:no_body]``).

The agent signs with placeholder keys; the proxy drops its ``Authorization`` (and its
``X-Amz-Date``, ``X-Amz-Security-Token``, ``X-Amz-Content-SHA256``) and signs the request
exactly as it will go upstream with the real keys. The signing arithmetic is botocore's
(``SigV4Auth`` / ``S3SigV4Auth``, AWS's own, maintained implementation): it is imported
here only, and this module only when an endpoint with ``credential_signing`` serves a
request. Canonicalization of the query is ours: the wire query is decoded and handed to
botocore as parameters, which it re-encodes and sorts the way AWS's verifier does.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote

UNSIGNED = "UNSIGNED-PAYLOAD"
STREAMING_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
BODY_LIMIT = 10 * 1024 * 1024  # sigv4:body buffers at most this much (as OpenShell)
# Headers the agent's SDK computed with the placeholder keys: all replaced by ours.
DROPPED = frozenset({"authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256"})

_REGION = re.compile(r"(?:[a-z]{2}-(?:gov-|iso[a-z]*-)?[a-z]+-\d+)")

PayloadMode = Literal["body", "unsigned", "trailer"]


class SigningError(Exception):
    """The request cannot be signed (the reason is safe to show and log)."""


@dataclass(frozen=True, slots=True)
class AwsKeys:
    access_key: str
    secret_key: str
    session_token: str | None = None


def region_from_host(host: str) -> str | None:
    """The region label of an AWS host (``bedrock-runtime.us-east-1.amazonaws.com``,
    ``b.s3.dualstack.eu-west-1.amazonaws.com``, ``sts-fips.us-gov-west-1.amazonaws.com``,
    ``s3.cn-north-1.amazonaws.com.cn``); ``None`` when there is none (global endpoints)."""
    labels = host.lower().rstrip(".").split(".")
    if labels[-2:] == ["amazonaws", "com"]:
        labels = labels[:-2]
    elif labels[-3:] == ["amazonaws", "com", "cn"]:
        labels = labels[:-3]
    else:
        return None
    for label in reversed(labels):
        if _REGION.fullmatch(label):
            return label
    return None


def payload_mode(mode: str, content_sha256: str | None, has_length: bool) -> PayloadMode:
    """How the body is covered: signed (buffered), or not signed (streamed).

    ``sigv4`` follows the agent's SDK (its ``x-amz-content-sha256``): a hash → sign the
    body; ``UNSIGNED-PAYLOAD`` or the unsigned trailer form → headers only; absent → the
    body when its length is known. Chunk-signed streaming cannot be reproduced here.
    """
    if mode == "sigv4:body":
        return "body"
    if mode == "sigv4:no_body":
        return "unsigned"
    value = (content_sha256 or "").strip()
    if not value:
        return "body" if has_length else "unsigned"
    if value == UNSIGNED:
        return "unsigned"
    if value == STREAMING_TRAILER:
        return "trailer"
    if re.fullmatch(r"[0-9a-fA-F]{64}", value):
        return "body"
    raise SigningError(f"x-amz-content-sha256 mode {value[:40]!r} cannot be re-signed")


def _query_params(query: str) -> list[tuple[str, str]]:
    if query.startswith("?"):
        query = query[1:]
    out = []
    for pair in query.split("&") if query else ():
        key, _, value = pair.partition("=")
        out.append((unquote(key), unquote(value)))
    return out


@dataclass(frozen=True, slots=True)
class Request:
    """The request as it will be sent upstream (wire path and query, final headers)."""

    method: str
    url_scheme: str
    host: str  # authority as sent in Host
    path: str
    query: str  # "" or "?..."
    headers: Sequence[tuple[str, str]]


def _prepare(
    r: Request,
    payload: bytes | None,
    keys: AwsKeys,
    service: str,
    region: str,
    now: datetime.datetime | None,
    content_sha256_header: bool,
    payload_value: str | None,
    normalize_path: bool | None,
) -> tuple[Any, Any, list[tuple[str, str]]]:
    from botocore.auth import S3SigV4Auth, SigV4Auth  # heavy: imported only to sign
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    if normalize_path is None:
        normalize_path = service != "s3"
    stamp = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y%m%dT%H%M%SZ")
    out = [(n, v) for n, v in r.headers if n.lower() not in DROPPED]
    out.append(("X-Amz-Date", stamp))
    if keys.session_token:
        out.append(("X-Amz-Security-Token", keys.session_token))
    if payload is None:
        out.append(("X-Amz-Content-SHA256", payload_value or UNSIGNED))
    elif content_sha256_header:
        out.append(("X-Amz-Content-SHA256", hashlib.sha256(payload).hexdigest()))
    creds = Credentials(keys.access_key, keys.secret_key, keys.session_token)
    signer: Any = (SigV4Auth if normalize_path else S3SigV4Auth)(creds, service, region)
    req: Any = AWSRequest(
        method=r.method, url=f"{r.url_scheme}://{r.host}{r.path}", data=payload or b""
    )
    req.params = _query_params(r.query)
    for name, value in out:
        req.headers[name] = value  # an email.message-style map: this appends
    req.context["timestamp"] = stamp
    return signer, req, out


def sign(
    r: Request,
    *,
    payload: bytes | None,
    keys: AwsKeys,
    service: str,
    region: str,
    now: datetime.datetime | None = None,
    content_sha256_header: bool = True,
    payload_value: str | None = None,
    normalize_path: bool | None = None,
) -> list[tuple[str, str]]:
    """The request's headers (less ``DROPPED``) plus the signing headers, in order.

    ``payload``: the body to hash, or ``None`` for an unsigned payload (``payload_value``
    names it, default ``UNSIGNED-PAYLOAD``). ``normalize_path``: collapse dot segments and
    encode the path again (every service but S3, as AWS's SDKs do); default by service.
    """
    signer, req, out = _prepare(
        r, payload, keys, service, region, now, content_sha256_header, payload_value,
        normalize_path,
    )
    canonical = signer.canonical_request(req)
    signature = signer.signature(signer.string_to_sign(req, canonical), req)
    signed = signer.signed_headers(signer.headers_to_sign(req))
    out.append((
        "Authorization",
        f"AWS4-HMAC-SHA256 Credential={signer.scope(req)}, SignedHeaders={signed}, "
        f"Signature={signature}",
    ))
    return out


def canonical_request(
    r: Request,
    *,
    payload: bytes | None,
    keys: AwsKeys,
    service: str,
    region: str,
    now: datetime.datetime | None = None,
    content_sha256_header: bool = True,
    normalize_path: bool | None = None,
) -> tuple[str, str]:
    """The canonical request and string to sign ``sign`` uses (for test vectors)."""
    signer, req, _ = _prepare(
        r, payload, keys, service, region, now, content_sha256_header, None, normalize_path
    )
    canonical = signer.canonical_request(req)
    return canonical, signer.string_to_sign(req, canonical)
