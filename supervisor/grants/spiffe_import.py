"""Import py-spiffe without its one known import-time warning.

py-spiffe (0.3) names ``dsa.DSAPublicKey`` in a type alias of its JWT bundle module, and
cryptography (>= 46) warns ``CryptographyDeprecationWarning: DSA is deprecated`` on that
attribute access. The supervisor never accepts DSA keys from anyone, the line tells an
operator nothing, and it landed on the stderr of every ``run`` and ``demo``. Exactly that
warning, from exactly that module, is ignored; every other warning still shows.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType

# The module the warning is attributed to (cryptography warns with stacklevel=2).
_WARNING_MODULE = r"spiffe\.bundle\.jwt_bundle\.jwt_bundle\Z"
_WARNING_MESSAGE = r"DSA is deprecated"


_installed = False


def ignore_dsa_deprecation() -> None:
    """Install the one filter, once (a new filter would reset the warning caches)."""
    global _installed
    if _installed:
        return
    from cryptography.utils import CryptographyDeprecationWarning

    warnings.filterwarnings(
        "ignore",
        message=_WARNING_MESSAGE,
        category=CryptographyDeprecationWarning,
        module=_WARNING_MODULE,
    )
    _installed = True


def import_spiffe(name: str = "spiffe") -> ModuleType:
    """``importlib.import_module(name)`` for a py-spiffe module, with the filter in place."""
    if name != "spiffe" and not name.startswith("spiffe."):
        raise ValueError(f"not a py-spiffe module: {name!r}")
    ignore_dsa_deprecation()
    return importlib.import_module(name)
