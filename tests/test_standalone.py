"""The repository stands alone: no code or test reads files beside the checkout, and every
pointer into docs/ARCHITECTURE.md names a section that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("supervisor", "tests", "integration", "fuzz", "deploy", "scripts")
SUFFIXES = {".py", ".yaml", ".yml", ".sh", ".cjs", ".json"}
# Citations of the external contract instead of docs/ARCHITECTURE.md (assembled so that
# this file does not match itself).
CITATION = re.compile("|".join([r"\bDESIGN" + r"(\.md)?\s+(section\s+)?\d",
                                "review " + r"point\s+\d"]))
# A relative path that starts by climbing: judged by where it leads from its file.
CLIMB = re.compile(r"(?<![\w./-])((?:\.\./)+)[\w-]+")
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


def _leaves_the_checkout(path: Path, line: str, root: Path = ROOT) -> bool:
    """A relative path that climbs above the checkout: from the directory of the file that
    names it (a kustomization's ``../base`` stays inside; one more level would not), or, in
    code run from the root (tests, make), onto something that exists beside the checkout."""
    depth = len(path.parent.relative_to(root).parts)
    for match in CLIMB.finditer(line):
        ups = match.group(1).count("../")
        if ups > depth:
            return True
        beside = root.joinpath(match.group(0)).resolve()
        if path.suffix not in {".yaml", ".yml"} and beside.exists() and root not in (
                beside, *beside.parents):
            return True
    return False


def _offends(path: Path, line: str) -> bool:
    return bool(CITATION.search(line)) or _leaves_the_checkout(path, line)


def test_nothing_points_outside_the_repository() -> None:
    offenders = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
                 for path in _files()
                 for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
                 if _offends(path, line)]
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


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    # Assembled so that this file does not match itself.
    test, deploy = ROOT / "tests" / "x.py", ROOT / "deploy" / "kubernetes" / "demo" / "k.yaml"
    assert _leaves_the_checkout(test, 'open("' + "../" * 2 + 'beside/x")')
    assert _leaves_the_checkout(ROOT / "Makefile", "cp " + "../" + "beside/x .")
    assert not _leaves_the_checkout(test, 'open("../supervisor/x")')
    assert _leaves_the_checkout(deploy, "- " + "../" * 4 + "x") and not _leaves_the_checkout(
        deploy, "- ../base")
    assert not _leaves_the_checkout(ROOT / "Makefile", '"/public/../admin" a/../b /p/..;/a')
    (tmp_path / "beside").mkdir()
    (tmp_path / "checkout" / "tests").mkdir(parents=True)
    checkout = tmp_path / "checkout"
    line = 'open("' + "../" + 'beside/x")'
    assert _leaves_the_checkout(checkout / "tests" / "t.py", line, checkout)
    assert not _leaves_the_checkout(checkout / "tests" / "t.py", line.replace("beside", "gone"), checkout)
    assert CITATION.search("(DESIGN" + " 6.2)") and CITATION.search("(review" + " point 2)")
    assert not CITATION.search("DESIGNED 6")
    assert POINTER.search("(ARCHITECTURE.md 3.1, 3.4)").group(1) == "3.1, 3.4"
