"""Replay inputs through a target without atheris: ``python -m fuzz.replay --target T FILE...``.

Prints each file's outcome (ok / the exception) and exits 1 if any input fails: the way to
reproduce a finding from fuzz/findings/ under a debugger or as a test case.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from fuzz.targets import TARGETS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fuzz.replay")
    p.add_argument("--target", choices=sorted(TARGETS), required=True)
    p.add_argument("files", nargs="*", type=Path, help="inputs (default: the seed corpus)")
    args = p.parse_args(argv)
    target = TARGETS[args.target]
    files = args.files or sorted(target.corpus.iterdir())
    failed = 0
    for path in files:
        data = path.read_bytes()
        try:
            target.entry(data)
        except Exception:
            failed += 1
            print(f"FAIL {path}: input {data!r}")
            traceback.print_exc()
        else:
            print(f"ok   {path}")
    print(f"{len(files) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
