"""Agent-readable trust bundles and the CA environment variables."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.proxy.interception import SandboxCA, env_vars
from supervisor.proxy.tls_bundles import find_system_bundle, pem_certificates


@pytest.fixture(scope="module")
def ca() -> SandboxCA:
    return SandboxCA.generate(["api.example.com"])


def test_bundles_hold_system_roots_plus_ca(ca: SandboxCA, tmp_path: Path) -> None:
    system = find_system_bundle()
    assert system is not None  # the test machine has ca-certificates (or certifi)
    paths = ca.write_bundles(str(tmp_path))
    assert paths.system_roots == system
    # Compared as PEM blocks: some system roots have serials newer parsers refuse.
    roots = pem_certificates(Path(system).read_bytes())
    bundle = pem_certificates(Path(paths.roots_and_ca).read_bytes())
    assert len(roots) > 10
    assert bundle == [*roots, ca.ca_pem.rstrip(b"\n")]
    alone = x509.load_pem_x509_certificates(Path(paths.ca_only).read_bytes())
    assert alone == [ca.ca_certificate]


def test_bundles_are_world_readable_regular_files(ca: SandboxCA, tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        paths = ca.write_bundles(str(tmp_path))
    finally:
        os.umask(old)
    for path in (paths.roots_and_ca, paths.ca_only):
        st = os.lstat(path)
        assert stat.S_ISREG(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["ca-bundle.pem", "sandbox-ca.pem"]  # no temp left


def test_rewrite_replaces_bundles(tmp_path: Path) -> None:
    first = SandboxCA.generate(["a.example"])
    second = SandboxCA.generate(["a.example"])
    first.write_bundles(str(tmp_path))
    paths = second.write_bundles(str(tmp_path))
    assert Path(paths.ca_only).read_bytes() == second.ca_pem


def test_only_certificates_are_copied(ca: SandboxCA, tmp_path: Path) -> None:
    """Comments, keys or other PEM blocks in the system bundle never reach the agent."""
    donor = SandboxCA.generate(["x.example"])
    system = tmp_path / "system.pem"
    system.write_bytes(
        b"# comment\n"
        + donor.ca_pem.replace(b"\n", b"\r\n")
        + b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        + b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"
    )
    out = tmp_path / "out"
    out.mkdir()
    paths = ca.write_bundles(str(out), system_bundle=str(system))
    data = Path(paths.roots_and_ca).read_bytes()
    assert b"PRIVATE" not in data and b"CRL" not in data and b"#" not in data
    assert data.count(b"-----BEGIN") == 2
    assert x509.load_pem_x509_certificates(data) == [donor.ca_certificate, ca.ca_certificate]


def test_without_system_roots_the_bundle_is_the_ca(ca: SandboxCA, tmp_path: Path) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"")
    out = tmp_path / "out"
    out.mkdir()
    paths = ca.write_bundles(str(out), system_bundle=str(empty))
    assert Path(paths.roots_and_ca).read_bytes() == ca.ca_pem


def test_symlinked_directory_is_refused(ca: SandboxCA, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(OSError):
        ca.write_bundles(str(link))
    assert os.listdir(real) == []


def test_missing_directory_is_an_error(ca: SandboxCA, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ca.write_bundles(str(tmp_path / "nope"))


def test_env_vars(ca: SandboxCA, tmp_path: Path) -> None:
    paths = ca.write_bundles(str(tmp_path))
    assert env_vars(paths) == {
        "SSL_CERT_FILE": paths.roots_and_ca,
        "REQUESTS_CA_BUNDLE": paths.roots_and_ca,
        "CURL_CA_BUNDLE": paths.roots_and_ca,
        "GIT_SSL_CAINFO": paths.roots_and_ca,
        "NODE_EXTRA_CA_CERTS": paths.ca_only,
    }


def test_pem_certificates_ignores_junk() -> None:
    assert pem_certificates(b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n") == []
    assert pem_certificates(b"nothing here") == []


# The extraction as it was first written (lazy body): the greedy one must find the same blocks.
_LAZY = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+?-----END CERTIFICATE-----"
)
_BEGIN, _END = b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----"
# Blocks of a bundle, well-formed or damaged: junk before, the BEGIN line, a body that may hold
# characters a body must not (space, "-", "!"), an END marker that may be cut or missing.
_BLOCK = st.tuples(
    st.sampled_from([b"", b"\n", b"# comment \n", b"-----", b"\r\n", b"x"]),
    st.sampled_from([_BEGIN, b"-----BEGIN PRIVATE KEY-----", b"-----BEGIN CERT"]),
    st.sampled_from([b"\n", b"\r\n", b"", b" \n"]),
    st.text(alphabet="AZaz09+/=\n\r -!", max_size=24).map(str.encode),
    st.sampled_from([_END, _END, b"-----END", b"", b"-----END PRIVATE KEY-----"]),
).map(b"".join)


@settings(max_examples=500)
@given(st.lists(_BLOCK, max_size=6), st.binary(max_size=8))
def test_pem_certificates_finds_what_the_lazy_pattern_found(blocks: list[bytes], tail: bytes) -> None:
    data = b"".join(blocks) + tail
    want = [m.group(0).replace(b"\r\n", b"\n") for m in _LAZY.finditer(data)]
    assert pem_certificates(data) == want


def test_pem_certificates_of_the_system_bundle_match_the_lazy_pattern() -> None:
    path = find_system_bundle()
    if path is None:
        pytest.skip("no system CA bundle")
    data = Path(path).read_bytes()
    want = [m.group(0).replace(b"\r\n", b"\n") for m in _LAZY.finditer(data)]
    assert pem_certificates(data) == want and want
