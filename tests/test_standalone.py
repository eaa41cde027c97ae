"""The repository stands alone: no code or test reads files beside the checkout, and every
pointer into docs/ARCHITECTURE.md names a section that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("supervisor", "tests", "integration", "fuzz", "deploy", "scripts")
SUFFIXES = {".py", ".yaml", ".yml", ".sh", ".cjs", ".json"}
# Assembled so that this file does not match itself.
OUTSIDE = re.compile("|".join([r"\.\./" + "shared", r"shared/" + "reference",
                               r"\bDESIGN" + r"(\.md)?\s+(section\s+)?\d",
                               "review " + r"point\s+\d"]))
POINTER = re.compile(r"ARCHITECTURE\.md\s+((?:S?\d+(?:\.\d+)?)(?:(?:,\s*|\s+and\s+)S?\d+(?:\.\d+)?)*)")


def _files() -> list[Path]:
    found: list[Path] = []
    for top in SCANNED:
        found += [p for p in (ROOT / top).rglob("*") if p.suffix in SUFFIXES and p.is_file()]
    return [*found, ROOT / "Makefile", ROOT / ".ci" / "run"]


def _sections() -> set[str]:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    numbered = re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", text, re.MULTILINE)
    points = re.findall(r"^\* \*\*(S\d+) ", text, re.MULTILINE)
    return set(numbered) | set(points)


def test_nothing_points_outside_the_repository() -> None:
    offenders = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
                 for path in _files()
                 for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
                 if OUTSIDE.search(line)]
    assert offenders == []


def test_architecture_pointers_resolve() -> None:
    sections = _sections()
    assert {"1", "3.2", "6", "S1", "S3"} <= sections  # the parser itself works
    dangling = []
    for path in _files():
        for match in POINTER.finditer(path.read_text(errors="replace")):
            for ref in re.split(r",\s*|\s+and\s+", match.group(1)):
                if ref not in sections:
                    dangling.append(f"{path.relative_to(ROOT)}: {ref}")
    assert dangling == []


def test_the_scan_finds_what_it_looks_for() -> None:
    assert OUTSIDE.search("see ../" + "shared/x") and OUTSIDE.search("(DESIGN" + " 6.2)")
    assert OUTSIDE.search("(review" + " point 2)") and not OUTSIDE.search("DESIGNED 6")
    assert POINTER.search("(ARCHITECTURE.md 3.1, 3.4)").group(1) == "3.1, 3.4"
