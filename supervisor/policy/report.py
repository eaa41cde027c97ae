"""``validate`` with sandbox policy files among the paths: each file is told apart (policy
or profiles), every diagnostic of every file is printed in one pass, and each policy is
checked together with the profiles given beside it (its ``credential_binding`` names them).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape

from supervisor.policy.loader import is_policy_file, load_config
from supervisor.policy.model import SandboxPolicy
from supervisor.profiles.diagnostics import Diagnostic, ProfileError


def split_paths(paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """(profile files, policy files), in the order given."""
    policies = [p for p in paths if is_policy_file(p)]
    return [p for p in paths if p not in policies], policies


def _summary(policy: SandboxPolicy) -> dict[str, object]:
    fs = policy.filesystem
    return {
        "file": policy.source,
        "network_policies": [e.key for e in policy.network],
        "filesystem_policy": None if fs is None else {
            "read_only": list(fs.read_only), "read_write": list(fs.read_write),
            "include_workdir": fs.include_workdir,
        },
        "landlock": None if fs is None else
        ("hard_requirement" if fs.hard_requirement else "best_effort"),
        "run_as_user": policy.run_as_user,
        "run_as_group": policy.run_as_group,
    }


def validate_with_policies(paths: Sequence[str], as_json: bool) -> int:
    profile_paths, policy_paths = split_paths(paths)
    diagnostics: list[Diagnostic] = []
    summaries: list[dict[str, object]] = []
    profiles: set[str] = set()
    bindings: set[str] = set()
    ok = True
    for policy_path in policy_paths:
        try:
            result, policy = load_config(profile_paths, policy_path)
        except ProfileError as exc:
            ok = False
            new = exc.diagnostics
        else:
            new = list(result.diagnostics)
            profiles.update(p.id for p in result.profiles)
            bindings.update(b.id for b in result.bindings)
            if policy is not None:
                summaries.append(_summary(policy))
        diagnostics.extend(d for d in new if d not in diagnostics)  # profiles: once
    if as_json:
        doc = {"ok": ok, "profile_files": profile_paths, "policy_files": policy_paths,
               "profiles": sorted(profiles), "bindings": sorted(bindings),
               "policies": summaries, "diagnostics": [d.as_json() for d in diagnostics]}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0 if ok else 1
    console = Console(highlight=False, soft_wrap=True)
    for d in diagnostics:
        colour = "red" if d.severity == "error" else "yellow"
        console.print(f"[bold {colour}]{d.severity}[/bold {colour}]: {escape(str(d))}")
    for path in profile_paths:
        console.print(f"profile file: {escape(path)}")
    for summary in summaries:
        entries = ", ".join(str(k) for k in summary["network_policies"]) or "none"  # type: ignore[attr-defined]
        console.print(f"sandbox policy: {escape(str(summary['file']))}: network_policies: "
                      f"{escape(entries)}; landlock: {summary['landlock'] or 'off'}")
    errors = sum(1 for d in diagnostics if d.severity == "error")
    if ok:
        console.print(f"[green]valid[/green]: {len(policy_paths)} policy file(s), "
                      f"{len(profiles)} profile(s) and entries, {len(diagnostics)} warning(s)")
    else:
        console.print(f"[red]invalid[/red]: {errors} error(s), "
                      f"{len(diagnostics) - errors} warning(s)")
    return 0 if ok else 1
