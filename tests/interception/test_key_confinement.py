"""No private key material ever lands in a file: not in /tmp, /dev/shm, the bundle
directory, nor in a descriptor left open."""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from supervisor.proxy import interception
from supervisor.proxy.interception import SandboxCA

_MAX_SCAN = 4 << 20


def _files(roots: list[str]) -> Iterator[str]:
    for root in roots:
        for dirpath, _dirs, names in os.walk(root):
            for name in names:
                yield os.path.join(dirpath, name)


def _snapshot(roots: list[str]) -> dict[str, tuple[int, int]]:
    out = {}
    for path in _files(roots):
        try:
            st = os.lstat(path)
        except OSError:
            continue
        out[path] = (st.st_mtime_ns, st.st_ino)
    return out


def _markers(key: ec.EllipticCurvePrivateKey) -> list[bytes]:
    """Byte strings any serialization of ``key`` would contain."""
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    out = [scalar, scalar.hex().encode()]
    for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL):
        der = key.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption())
        out.extend([der, base64.b64encode(der)])
    return out


def _open_memfds() -> list[str]:
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return [link for link in links if link.startswith("/memfd:openshell-tls")]


def test_no_key_material_in_any_new_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys: list[ec.EllipticCurvePrivateKey] = []
    real_generate = ec.generate_private_key

    def recording_generate(curve: ec.EllipticCurve) -> ec.EllipticCurvePrivateKey:
        key = real_generate(curve)
        keys.append(key)
        return key

    # A spy: records every key the module makes (CA and leaves), behaviour unchanged.
    monkeypatch.setattr(interception.ec, "generate_private_key", recording_generate)
    roots = sorted({tempfile.gettempdir(), "/tmp", "/dev/shm", str(tmp_path)})
    roots = [r for r in roots if os.path.isdir(r)]
    before = _snapshot(roots)

    ca = SandboxCA.generate(["example.com", "127.0.0.1"])
    bundle_dir = tmp_path / "bundles"
    bundle_dir.mkdir()
    ca.write_bundles(str(bundle_dir))
    for host in ("example.com", "a.example.com", "127.0.0.1"):
        ca.server_context(host)

    assert len(keys) == 4  # the CA and three leaves
    assert _open_memfds() == []
    markers = [m for key in keys for m in _markers(key)]
    after = _snapshot(roots)
    changed = [p for p, meta in after.items() if before.get(p) != meta]
    assert any(p.startswith(str(bundle_dir)) for p in changed)
    for path in changed:
        try:
            with open(path, "rb") as f:
                data = f.read(_MAX_SCAN)
        except OSError:
            continue
        flat = data.replace(b"\n", b"").replace(b"\r", b"")
        assert not any(m in data or m in flat for m in markers), path
        if path.startswith(str(tmp_path)):
            assert b"PRIVATE KEY" not in data, path
