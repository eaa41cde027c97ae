"""The libFuzzer process of one target: ``python -m fuzz._child TARGET [libFuzzer args]``.

Run by ``fuzz.run`` (libFuzzer exits the process when done or on a finding). The product
modules are imported under atheris' instrumentation so coverage guides the mutations.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any


def main() -> None:
    atheris: Any = importlib.import_module("atheris")
    name, libfuzzer_args = sys.argv[1], sys.argv[2:]
    with atheris.instrument_imports(include=["supervisor", "fuzz"]):
        from fuzz.targets import TARGETS
    entry = TARGETS[name].entry
    atheris.Setup([sys.argv[0], *libfuzzer_args], entry)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
