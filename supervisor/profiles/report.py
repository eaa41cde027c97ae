"""Body of the ``validate`` command: load profiles, print every diagnostic, exit status."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape

from supervisor.profiles.diagnostics import Diagnostic, ProfileError
from supervisor.profiles.loader import load_profiles


def validate_paths(paths: Sequence[str], as_json: bool) -> int:
    """0 when every profile is valid (warnings allowed), 1 otherwise."""
    profiles: list[str] = []
    bindings: list[str] = []
    try:
        result = load_profiles(paths)
    except ProfileError as exc:
        ok, diagnostics = False, list(exc.diagnostics)
    else:
        ok, diagnostics = True, list(result.diagnostics)
        profiles = [p.id for p in result.profiles]
        bindings = [b.id for b in result.bindings]
    if as_json:
        doc = {
            "ok": ok,
            "profiles": profiles,
            "bindings": bindings,
            "diagnostics": [d.as_json() for d in diagnostics],
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        _print_human(Console(highlight=False, soft_wrap=True), ok, profiles, bindings,
                     diagnostics)
    return 0 if ok else 1


def _print_human(
    console: Console, ok: bool, profiles: list[str], bindings: list[str],
    diagnostics: list[Diagnostic],
) -> None:
    # One diagnostic per line (soft-wrapped, never cut): readable and greppable.
    for d in diagnostics:
        colour = "red" if d.severity == "error" else "yellow"
        # escape(): file contents must not be able to inject rich markup.
        console.print(f"[bold {colour}]{d.severity}[/bold {colour}]: {escape(str(d))}")
    errors = sum(1 for d in diagnostics if d.severity == "error")
    warnings = len(diagnostics) - errors
    if ok:
        console.print(
            f"[green]valid[/green]: {len(profiles)} profile(s), {len(bindings)} binding(s), "
            f"{warnings} warning(s)"
        )
        for binding in bindings:
            console.print(f"  binding {escape(binding)}")
    else:
        console.print(f"[red]invalid[/red]: {errors} error(s), {warnings} warning(s)")
