"""py-spiffe imports without its DSA deprecation warning, and only that warning is hidden."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _stderr(code: str) -> str:
    # A fresh interpreter: the warning fires once, at py-spiffe's first import. -W always so
    # that nothing but our filter can hide it.
    proc = subprocess.run([sys.executable, "-W", "always", "-c", code],
                          capture_output=True, text=True, timeout=60, check=True)
    return proc.stderr


def test_plain_import_warns_control() -> None:
    # Control: without the filter the warning is there (else the tests below prove nothing).
    assert "DSA is deprecated" in _stderr("import spiffe")


@pytest.mark.parametrize("code", [
    "from supervisor.grants.spiffe_import import import_spiffe; import_spiffe('spiffe')",
    "import supervisor.devenv.workload_api",
    "from supervisor.grants.spiffe_import import import_spiffe; "
    "import_spiffe('spiffe.errors').PySpiffeError",
    # the supervisor's own Workload API client path (py-spiffe's JWT modules only)
    "from supervisor.grants.spiffe_jwt import jwt_api; jwt_api().JwtSvid",
])
def test_filtered_imports_are_silent(code: str) -> None:
    assert _stderr(code) == ""


def test_other_cryptography_deprecations_still_show() -> None:
    code = (
        "import warnings\n"
        "from cryptography.utils import CryptographyDeprecationWarning\n"
        "from supervisor.grants.spiffe_import import import_spiffe\n"
        "import_spiffe('spiffe')\n"
        "warnings.warn('DSA is deprecated, said another module', CryptographyDeprecationWarning)\n"
        "warnings.warn('something else is deprecated', CryptographyDeprecationWarning)\n"
    )
    err = _stderr(code)
    assert "said another module" in err
    assert "something else is deprecated" in err


def test_refuses_other_modules() -> None:
    from supervisor.grants.spiffe_import import import_spiffe

    with pytest.raises(ValueError):
        import_spiffe("os")
    with pytest.raises(ValueError):
        import_spiffe("spiffex")
