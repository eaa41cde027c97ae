"""py-spiffe's JWT path without its X.509 half: against the real dev Workload API server, in
fresh interpreters (this test process imported the whole package already)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from supervisor.devenv.workload_api import WorkloadAPIServer
from supervisor.grants import spiffe_jwt
from tests.grants.conftest import fetch_refusal

pytestmark = pytest.mark.anyio

AUD = "https://issuer.test/realms/sandbox"

# What the JWT path must not load: py-spiffe's X.509 half and what only it needs.
X509_HALF = ("pyasn1", "pyasn1_modules", "pem", "spiffe.workloadapi.x509_source",
             "spiffe.workloadapi.jwt_source", "spiffe.workloadapi.workload_api_client",
             "spiffe.bundle.x509_bundle", "spiffe.svid.x509_svid", "spiffe.utils.certificate_utils")

FETCH = """
import asyncio, json, sys
from supervisor.grants.workload import WorkloadSvidSource
async def main():
    src = WorkloadSvidSource(sys.argv[1], deadline=5)
    try:
        return await src.fetch(sys.argv[2])
    finally:
        await src.aclose()
token = asyncio.run(main())
print(json.dumps({"token": token, "modules": sorted(sys.modules)}))
"""


def _run(code: str, *args: str) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-W", "always", "-c", code, *args],
                          capture_output=True, text=True, timeout=60, check=True)
    assert proc.stderr == ""  # no DSA deprecation line, no other warning
    out: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def _x509_half(modules: object) -> list[str]:
    assert isinstance(modules, list)
    return [m for m in modules if m.startswith(X509_HALF)]


def test_fetch_loads_only_the_jwt_path(workload: WorkloadAPIServer) -> None:
    out = _run(FETCH, workload.address, AUD)
    token = out["token"]
    assert isinstance(token, str)
    claims = jwt.decode(token, workload.key.public_key, algorithms=["ES256"], audience=AUD)
    assert claims["sub"] == workload.spiffe_id
    assert workload.counters.last_audiences == (AUD,)
    assert _x509_half(out["modules"]) == []
    assert "spiffe._proto.workload_pb2_grpc" in out["modules"]


def test_whole_package_loads_the_x509_half_control() -> None:
    # Control: py-spiffe's own import does load them (else the test above proves nothing).
    out = _run("import json, sys\nfrom supervisor.grants.spiffe_import import import_spiffe\n"
               "import_spiffe('spiffe')\nprint(json.dumps({'modules': sorted(sys.modules)}))")
    assert "pyasn1" in out["modules"]  # type: ignore[operator]
    assert "spiffe.workloadapi.workload_api_client" in out["modules"]  # type: ignore[operator]


def test_rest_of_the_package_completes_on_first_use() -> None:
    code = """
import json, sys
from supervisor.grants.spiffe_jwt import jwt_api
api = jwt_api()
before = "spiffe.workloadapi.x509_source" in sys.modules
import spiffe
from spiffe import X509Source, WorkloadApiClient
import spiffe.errors
print(json.dumps({
    "before": before,
    "after": "spiffe.workloadapi.x509_source" in sys.modules,
    "same_errors": spiffe.errors.PySpiffeError is api.PySpiffeError,
    "all": sorted(spiffe.__all__),
    "client": WorkloadApiClient.__name__, "source": X509Source.__name__,
    "hook_gone": "__getattr__" not in vars(spiffe),
}))
"""
    out = _run(code)
    assert out["before"] is False and out["after"] is True
    assert out["same_errors"] is True and out["hook_gone"] is True
    assert out["client"] == "WorkloadApiClient" and out["source"] == "X509Source"
    assert "JwtSource" in out["all"]  # type: ignore[operator]


def test_unknown_attribute_still_raises() -> None:
    code = """
import json
from supervisor.grants.spiffe_jwt import jwt_api
jwt_api()
import spiffe
try:
    spiffe.no_such_name
    print(json.dumps({"raised": False}))
except AttributeError as err:
    print(json.dumps({"raised": True, "text": str(err)}))
"""
    out = _run(code)
    assert out["raised"] is True and "no_such_name" in str(out["text"])


@pytest.fixture
def fresh_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spiffe_jwt, "_api", None)


@pytest.mark.usefixtures("fresh_api")
@pytest.mark.parametrize("key,module,expected", [
    ("headers", "spiffe.workloadapi.grpc.no_such_module", "has no module spiffe.workloadapi"),
    ("pb2", "spiffe.errors", "spiffe.errors.JWTSVIDRequest is missing"),
])
async def test_another_layout_fails_every_grant_loudly(
    workload: WorkloadAPIServer, monkeypatch: pytest.MonkeyPatch, key: str, module: str,
    expected: str,
) -> None:
    monkeypatch.setitem(spiffe_jwt._MODULES, key, module)
    with pytest.raises(spiffe_jwt.LayoutError, match=expected):
        spiffe_jwt.jwt_api()
    err = await fetch_refusal(workload.address, AUD, deadline=2)
    assert err.step == "workload_api" and not err.retryable
    assert expected in str(err) and "py-spiffe 0.3" in str(err)
    assert workload.counters.fetch_jwt_svid == 0


@pytest.mark.usefixtures("fresh_api")
def test_a_missing_dependency_is_not_called_a_layout_change(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    # A module of the path that is there but needs an absent package: that package is named.
    (tmp_path / "ops_needs_absent.py").write_text("import ops_absent_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(spiffe_jwt._MODULES, "pb2", "ops_needs_absent")
    with pytest.raises(ModuleNotFoundError) as info:
        spiffe_jwt.jwt_api()
    assert not isinstance(info.value, spiffe_jwt.LayoutError)
    assert info.value.name == "ops_absent_dependency"
