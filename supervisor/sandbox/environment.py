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
    occur by chance in an ordinary value, as they are or in the encodings configuration
    commonly wraps them in: percent-encoded (a URL's userinfo), base64 at any alignment
    (a Docker ``auth`` or an ``.npmrc`` ``_auth``, which encode ``user:token``).
    """
    long_forms = [f for s in secrets if len(s) >= 16 for f in _encoded_forms(s)]

    def holds(value: str) -> bool:
        return value in secrets or any(f in value for f in long_forms)

    for name, value in env.items():
        if holds(value):
            return name
    for i, arg in enumerate(argv):
        if holds(arg):
            return f"argument {i} of the command"
    return None


def _encoded_forms(secret: str) -> set[str]:
    """``secret`` as it is, percent-encoded, and the base64 characters that depend on its
    bytes alone whatever precedes it (three alignments; standard and URL-safe alphabets)."""
    import base64  # only with static secrets: not on every run's start-up path
    from urllib.parse import quote
    data = secret.encode("utf-8", "surrogateescape")
    forms = {secret, quote(secret, safe=""), quote(secret, safe="/:@")}
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + data).decode("ascii")
        start = -(-8 * pad // 6)  # the first character made of the secret's bits only
        core = encoded[start : (8 * (pad + len(data))) // 6]
        forms.add(core)
        forms.add(core.replace("+", "-").replace("/", "_"))
    return forms
