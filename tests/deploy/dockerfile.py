"""A small Dockerfile reader: instructions with their stage, comments kept apart."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper-case
    value: str  # the rest of the (joined) line
    stage: int  # index of the FROM it follows; -1 before the first FROM

    def json_args(self) -> list[str] | None:
        """The exec (JSON array) form's items, or None for the shell form."""
        try:
            parsed = json.loads(self.value)
        except ValueError:
            return None
        if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed):
            return parsed
        return None


@dataclass(frozen=True)
class Dockerfile:
    instructions: list[Instruction]
    comments: str

    def stage(self, index: int) -> list[Instruction]:
        return [i for i in self.instructions if i.stage == index]

    @property
    def stages(self) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == "FROM"]


def parse(path: Path) -> Dockerfile:
    instructions: list[Instruction] = []
    comments: list[str] = []
    stage = -1
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#"):
            comments.append(line.lstrip("#").strip())
            continue
        if not line and not pending:
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if not full:
            continue
        keyword, _, value = full.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, " ".join(value.split()), stage))
    if pending:
        raise ValueError(f"{path}: dangling line continuation")
    return Dockerfile(instructions, "\n".join(comments))


def env(dockerfile: Dockerfile, stage: int) -> dict[str, str]:
    """``ENV key=value ...`` settings of one stage (the ``key=value`` form only)."""
    out: dict[str, str] = {}
    for inst in dockerfile.stage(stage):
        if inst.keyword != "ENV":
            continue
        for item in shlex.split(inst.value):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"ENV without '=': {inst.value}")
            out[key] = value
    return out
