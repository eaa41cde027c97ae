"""SigV4 re-signing against AWS's published test suite, and the test verifier likewise."""

from __future__ import annotations

import datetime
import json
import pathlib
from urllib.parse import quote

import pytest

from supervisor.credentials import sigv4
from tests.credentials import sigv4_verifier as verifier

CASES = json.loads((pathlib.Path(__file__).parent / "data" / "sigv4_vectors.json").read_text())["cases"]


def _request(case: dict) -> tuple[sigv4.Request, bytes | None]:
    target = case["target"]
    path, _, query = target.partition("?")
    if not case["normalize"]:
        # The suite writes paths unencoded; S3-style signing takes them as sent on the wire.
        path = quote(path, safe="/-_.~")
    req = sigv4.Request(case["method"], "https", "example.amazonaws.com", path,
                        f"?{query}" if query else "", [tuple(h) for h in case["headers"]])
    return req, case["body"].encode()


def _keys(case: dict) -> sigv4.AwsKeys:
    # "header-after" cases add the token after signing: it is not signed.
    token = case["session_token"] if "x-amz-security-token" in case["canonical_request"] else None
    return sigv4.AwsKeys(case["access_key"], case["secret_key"], token)


def _now(case: dict) -> datetime.datetime:
    return datetime.datetime.strptime(case["timestamp"], "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_signer_matches_the_aws_test_suite(case):
    req, body = _request(case)
    kw = dict(payload=body, keys=_keys(case), service=case["service"], region=case["region"],
              now=_now(case), content_sha256_header=case["sign_body"],
              normalize_path=case["normalize"])
    creq, sts = sigv4.canonical_request(req, **kw)
    assert creq == case["canonical_request"]
    assert sts == case["string_to_sign"]
    headers = sigv4.sign(req, **kw)
    auth = dict(headers)["Authorization"]
    assert auth.endswith(f"Signature={case['signature']}")


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_verifier_matches_the_aws_test_suite(case):
    """The test upstream's verifier is itself checked against the same suite."""
    req, _body = _request(case)
    keys = _keys(case)
    headers = [*req.headers, ("X-Amz-Date", case["timestamp"])]
    if keys.session_token:
        headers.append(("X-Amz-Security-Token", keys.session_token))
    if case["sign_body"]:
        headers.append(("X-Amz-Content-SHA256", case["canonical_request"].rsplit("\n", 1)[1]))
    signed = case["canonical_request"].split("\n")[-2].split(";")
    creq = verifier.canonical_request(req.method, req.path, req.query, headers, signed,
                                      case["canonical_request"].rsplit("\n", 1)[1], case["normalize"])
    assert creq == case["canonical_request"]
    scope = f"{case['timestamp'][:8]}/{case['region']}/{case['service']}/aws4_request"
    sts = verifier.string_to_sign(case["timestamp"], scope, creq)
    assert verifier.signature(case["secret_key"], case["timestamp"][:8], case["region"],
                              case["service"], sts) == case["signature"]


def test_signed_request_passes_the_verifier_and_a_tampered_one_does_not():
    keys = sigv4.AwsKeys("AKIDREAL", "real/secret+key", "session-token")
    req = sigv4.Request("POST", "https", "bedrock-runtime.us-east-1.amazonaws.com",
                        "/model/a%3Ab/invoke", "?x=1&a=b%20c",
                        [("Host", "bedrock-runtime.us-east-1.amazonaws.com"),
                         ("Content-Type", "application/json"),
                         ("Authorization", "AWS4-HMAC-SHA256 Credential=openshell:resolve:env:AWS_ACCESS_KEY_ID/..."),
                         ("X-Amz-Security-Token", "openshell:resolve:env:AWS_SESSION_TOKEN")])
    body = b'{"prompt": "hi"}'
    headers = sigv4.sign(req, payload=body, keys=keys, service="bedrock", region="us-east-1")
    assert "openshell" not in repr(headers)
    secrets = {"AKIDREAL": "real/secret+key"}
    ok = verifier.verify("POST", req.path, req.query, headers, body, secrets, "bedrock", "us-east-1")
    assert ok is None
    assert verifier.verify("POST", req.path, req.query, headers, body + b" ", secrets, "bedrock",
                           "us-east-1") is not None
    assert verifier.verify("POST", req.path, "?x=2&a=b%20c", headers, body, secrets, "bedrock",
                           "us-east-1") == "signature mismatch"
    # S3, unsigned payload: the body is not covered, the path is not normalized.
    s3 = sigv4.Request("PUT", "https", "b.s3.us-west-2.amazonaws.com", "/k//x.txt", "",
                       [("Host", "b.s3.us-west-2.amazonaws.com")])
    h = sigv4.sign(s3, payload=None, keys=keys, service="s3", region="us-west-2")
    assert dict(h)["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
    assert verifier.verify("PUT", "/k//x.txt", "", h, b"anything", secrets, "s3", "us-west-2") is None


@pytest.mark.parametrize(
    ("host", "region"),
    [("bedrock-runtime.us-east-1.amazonaws.com", "us-east-1"),
     ("bucket.s3.dualstack.eu-west-1.amazonaws.com", "eu-west-1"),
     ("sts-fips.us-gov-west-1.amazonaws.com", "us-gov-west-1"),
     ("s3.cn-north-1.amazonaws.com.cn", "cn-north-1"),
     ("s3.amazonaws.com", None), ("example.com", None), ("us-east-1.example.com", None)],
)
def test_region_from_host(host, region):
    assert sigv4.region_from_host(host) == region


@pytest.mark.parametrize(
    ("mode", "header", "length", "want"),
    [("sigv4:body", None, False, "body"), ("sigv4:no_body", "abc", True, "unsigned"),
     ("sigv4", "UNSIGNED-PAYLOAD", True, "unsigned"), ("sigv4", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", True, "body"),
     ("sigv4", None, True, "body"), ("sigv4", None, False, "unsigned"),
     ("sigv4", "STREAMING-UNSIGNED-PAYLOAD-TRAILER", False, "trailer")],
)
def test_payload_mode(mode, header, length, want):
    assert sigv4.payload_mode(mode, header, length) == want


def test_chunk_signed_streaming_is_refused():
    with pytest.raises(sigv4.SigningError):
        sigv4.payload_mode("sigv4", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", False)
