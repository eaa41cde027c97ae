"""The run's static credentials: binding table, current values, the agent's placeholders.

Built by the services after the sandbox init was forked. Values from the environment are
fixed for the run; values from ``--credentials-dir`` are read again by ``refresh`` (a
rotated Kubernetes Secret is used by the next request). The set of exposed variables, and
so every placeholder the agent holds, is fixed at start: placeholders stay stable.
Readers on the proxy thread take ``state`` once per request; updates swap one reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from supervisor import logs
from supervisor.credentials import sources
from supervisor.credentials.placeholders import placeholder
from supervisor.credentials.scope import BindingTable, StaticCredential
from supervisor.record import record

log = logs.get("supervisor.credentials")  # logging is imported on first use


class MissingRequired(Exception):
    """A required credential has none of its variables set (``run`` exits 125)."""

    def __init__(self, profile_id: str, name: str, tried: Sequence[str]) -> None:
        self.step = f"credential {profile_id}/{name}"
        self.reason = f"required, but none of {', '.join(tried)} has a value"
        super().__init__(f"{self.step}: {self.reason}")


@record
class State:
    table: BindingTable
    values: Mapping[str, str]  # exposed variables only


class CredentialStore:
    def __init__(
        self,
        credentials: Sequence[StaticCredential],
        environ: Mapping[str, str],
        directory: str | None,
        check: sources.TrustCheck = sources.check_trusted_file,
    ) -> None:
        table = BindingTable(credentials)
        self._directory = directory
        self._check = check
        # Captured once: the supervisor's environment does not change during the run.
        self._from_env = {v: environ[v] for v in table.variables if environ.get(v)}
        loaded = self._load(table)
        for problem in loaded.problems:
            log.warning("--credentials-dir: %s", problem)
        for c in credentials:
            if any(v in loaded.values for v in c.env_vars):
                continue
            if c.required:
                raise MissingRequired(c.profile_id, c.name, c.env_vars)
            log.warning(
                "credential %s/%s: none of %s has a value; its placeholders will not resolve",
                c.profile_id, c.name, ", ".join(c.env_vars) or "(no env_vars)",
            )
        self.exposed: frozenset[str] = frozenset(loaded.values)
        self.state = State(table, dict(loaded.values))

    def _load(self, table: BindingTable) -> sources.Loaded:
        return sources.load(table.variables, self._from_env, self._directory, self._check)

    def agent_variables(self) -> dict[str, str]:
        """What the agent's environment gets: each exposed variable = its placeholder."""
        return {v: placeholder(v) for v in sorted(self.exposed)}

    def secrets(self) -> frozenset[str]:
        return frozenset(self.state.values.values())

    def refresh(self, credentials: Sequence[StaticCredential] | None = None) -> bool:
        """Re-read the files (and take a new binding table); True when a value changed.

        Only variables exposed at start keep a value: a variable that first appears now
        has no placeholder in the agent's environment.
        """
        table = BindingTable(credentials) if credentials is not None else self.state.table
        loaded = self._load(table)
        for problem in loaded.problems:
            log.warning("--credentials-dir: %s", problem)
        values = {v: s for v, s in loaded.values.items() if v in self.exposed}
        old = self.state
        # An unreadable or untrusted rotation keeps the last good value (never the new
        # bytes); a deleted file withdraws the credential.
        unreadable = {p.split(":", 1)[0] for p in loaded.problems}
        for v in (self.exposed - values.keys()) & unreadable:
            if v in old.values and v in table.variables:
                values[v] = old.values[v]
        changed = values != dict(old.values)
        self.state = State(table, values)
        if changed:
            log.info("static credentials re-read: %d variable(s) changed",
                     sum(1 for v in values.keys() | old.values.keys()
                         if values.get(v) != old.values.get(v)))
        return changed
