"""``process.run_as_user/run_as_group`` -> the agent's uid, gid and groups (ARCHITECTURE.md 10).

``sandbox`` means the user (group) of that name when this system has one, else 65534
(nobody/nogroup). Numeric ids are used as they are; the schema already refused 0.
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Callable

from supervisor.settings import DEFAULT_AGENT_GID, DEFAULT_AGENT_UID, SetupError, parse_user


def _sandbox_name(value: str, lookup: Callable[[str], object], default: int) -> str:
    """``value`` as given, except a 'sandbox' name this image lacks: then the default id."""
    if value != "sandbox":
        return value
    try:
        lookup("sandbox")
    except KeyError:
        return str(default)
    return value


def policy_identity(user: str | None, group: str | None) -> tuple[int, int, tuple[int, ...]]:
    """The agent identity the policy names (missing parts: the 65534 defaults)."""
    spec = str(DEFAULT_AGENT_UID)
    if user is not None:
        spec = _sandbox_name(user, pwd.getpwnam, DEFAULT_AGENT_UID)
    if group is not None:
        spec += ":" + _sandbox_name(group, grp.getgrnam, DEFAULT_AGENT_GID)
    elif user is None:
        spec += f":{DEFAULT_AGENT_GID}"
    try:
        return parse_user(spec)
    except SetupError as exc:
        raise SetupError("process.run_as_user", exc.reason) from None
