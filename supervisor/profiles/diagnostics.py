"""Load-time diagnostics: one finding about one field of one profile."""

from __future__ import annotations

from typing import Literal

from supervisor.record import field, record

Severity = Literal["error", "warning"]


@record
class Diagnostic:
    file: str  # "" when the finding is not about one file
    profile_id: str | None
    field: str  # path like "credentials[0].token_grant.token_endpoint"; "" = whole file
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        parts = [p for p in (self.file, self._profile_part(), self.field) if p]
        return ": ".join([*parts, self.message])

    def _profile_part(self) -> str:
        return f"profile {self.profile_id!r}" if self.profile_id is not None else ""

    def as_json(self) -> dict[str, str | None]:
        return {
            "file": self.file,
            "profile": self.profile_id,
            "field": self.field,
            "severity": self.severity,
            "message": self.message,
        }


class ProfileError(Exception):
    """Raised by the loader when any profile is invalid; carries every diagnostic."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        errors = [d for d in diagnostics if d.severity == "error"]
        first = str(errors[0]) if errors else "invalid provider profiles"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(first + more)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]


@record(frozen=False)
class Sink:
    """Collects diagnostics so every problem is reported, not just the first."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def error(self, file: str, profile_id: str | None, path: str, message: str) -> None:
        self.diagnostics.append(Diagnostic(file, profile_id, path, message, "error"))

    def warning(self, file: str, profile_id: str | None, path: str, message: str) -> None:
        self.diagnostics.append(Diagnostic(file, profile_id, path, message, "warning"))

    @property
    def error_count(self) -> int:
        return sum(1 for d in self.diagnostics if d.severity == "error")
