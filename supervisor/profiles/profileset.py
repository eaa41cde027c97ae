"""The loaded, validated, immutable set of profiles the supervisor runs with."""

from __future__ import annotations

from supervisor.profiles.diagnostics import Diagnostic
from supervisor.profiles.matcher import PolicyTable
from supervisor.profiles.model import Binding, Profile
from supervisor.record import record


@record
class ProfileSet:
    profiles: tuple[Profile, ...]  # sorted by id
    bindings: tuple[Binding, ...]  # sorted by id
    table: PolicyTable
    warnings: tuple[str, ...]  # one printable line each
    diagnostics: tuple[Diagnostic, ...]  # the warnings as structured diagnostics
    fingerprint: str  # sha256 over the files' paths and contents (reload detection)

    def profile(self, profile_id: str) -> Profile | None:
        return next((p for p in self.profiles if p.id == profile_id), None)
