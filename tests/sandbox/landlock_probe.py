"""Apply a Landlock plan to this process, then try file operations; print JSON results.

argv[1]: JSON {"read_only": [...], "read_write": [...], "hard": bool, "abi": int|null,
"own_exec": [...], "tries": [[op, path], ...]}; ops: read, write, truncate, list, exec.
Exit 125 with the error on stderr when the plan cannot be applied.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

from supervisor.sandbox import confine, linux
from supervisor.sandbox.fsrules import FsPolicy, plan_rules


def attempt(op: str, path: str) -> str:
    try:
        if op == "read":
            with open(path, "rb") as f:
                f.read(1)
        elif op == "write":
            with open(path, "ab") as f:
                f.write(b"x")
        elif op == "truncate":
            os.truncate(path, 0)
        elif op == "list":
            os.listdir(path)
        elif op == "exec":
            subprocess.run([path], check=True, capture_output=True)
        elif op == "mkdir":
            os.mkdir(path)
        else:
            raise ValueError(op)
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return "ok"


def main() -> int:
    spec = json.loads(sys.argv[1])
    plan = plan_rules(
        FsPolicy(tuple(spec["read_only"]), tuple(spec["read_write"]), False, spec["hard"]),
        None, own_exec=spec.get("own_exec", ()),
    )
    try:
        prepared = confine.prepare(plan, abi=spec.get("abi"),
                                   warn=lambda m: print(f"warning: {m}", file=sys.stderr))
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
        confine.enforce(prepared)
    except confine.ConfineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 125
    results = {f"{op} {path}": attempt(op, path) for op, path in spec["tries"]}
    print(json.dumps({"abi": prepared.abi, "enforced": prepared.ruleset is not None,
                      "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
