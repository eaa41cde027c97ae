"""The agent's environment: the supervisor's, scrubbed, plus proxy variables
(ARCHITECTURE.md 3.3)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

SANDBOX_MARKER = ("OPENSHELL_SANDBOX", "1")
NO_PROXY_VALUE = "localhost,127.0.0.1,::1"
_FORBIDDEN_PREFIXES = ("SPIFFE_", "OPENSHELL_")


def is_forbidden(name: str) -> bool:
    """True for SPIFFE / supervisor variables and proxy variables of any case."""
    upper = name.upper()
    return upper.startswith(_FORBIDDEN_PREFIXES) or upper.endswith("_PROXY")


def agent_environment(
    inherited: Mapping[str, str],
    proxy_port: int,
    extra: Mapping[str, str],
    withheld: Collection[str] = (),
) -> dict[str, str]:
    """Scrub ``inherited`` and add the proxy, sandbox-marker and ``extra`` (CA, credential
    placeholder) variables. ``withheld`` (static-credential variables) is never inherited."""
    env = {k: v for k, v in inherited.items() if not is_forbidden(k) and k not in withheld}
    proxy = f"http://127.0.0.1:{proxy_port}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env[name] = proxy
    env["NO_PROXY"] = env["no_proxy"] = NO_PROXY_VALUE
    for name, value in extra.items():
        if is_forbidden(name):
            raise ValueError(f"refusing to pass {name} to the agent")
        env[name] = value
    env[SANDBOX_MARKER[0]] = SANDBOX_MARKER[1]
    return env


def leaked_secret(
    env: Mapping[str, str], secrets: Collection[str], argv: Sequence[str] = ()
) -> str | None:
    """What would hand the agent a configured secret (fail closed): the name of a variable
    whose value is, or holds, one, else ``argument N of the command`` (the agent reads its
    own argv; an operator's shell may have expanded ``$ANTHROPIC_API_KEY`` into it).

    Equality for every secret; containment too for secrets long enough (16+) not to
    occur by chance in an ordinary value.
    """
    def holds(value: str) -> bool:
        return any(value == s or (len(s) >= 16 and s in value) for s in secrets)

    for name, value in env.items():
        if holds(value):
            return name
    for i, arg in enumerate(argv):
        if holds(arg):
            return f"argument {i} of the command"
    return None
