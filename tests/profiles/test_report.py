from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from supervisor.cli import main
from tests.profiles.helpers import base, grant, write


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["validate", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def test_valid_human(tmp_path: Path) -> None:
    code, out = run(write(tmp_path, base(binaries=["/usr/bin/curl"])))
    assert code == 0
    assert "valid: 1 profile(s), 1 binding(s), 0 warning(s)" in out
    assert "p/c@api.example.com:443" in out and "not enforced" not in out


def test_invalid_human_lists_every_diagnostic(tmp_path: Path) -> None:
    doc = grant(token_endpoint="http://auth.example.com/token")
    doc["colour"] = "[red]markup[/red]"
    code, out = run(write(tmp_path, doc))
    assert code == 1
    assert "invalid: 2 error(s)" in out
    assert "must use https" in out and "unknown key 'colour'" in out


def test_json_shape_valid(tmp_path: Path) -> None:
    code, out = run("--json", write(tmp_path, base()))
    doc = json.loads(out)
    assert code == 0
    assert doc == {"ok": True, "profiles": ["p"], "bindings": ["p/c@api.example.com:443"],
                   "diagnostics": []}


def test_json_shape_invalid(tmp_path: Path) -> None:
    a = write(tmp_path, base(), "a.yaml")
    b = write(tmp_path, base(), "b.yaml")
    code, out = run("--json", a, b)
    doc = json.loads(out)
    assert code == 1 and doc["ok"] is False and doc["profiles"] == [] and doc["bindings"] == []
    (diag,) = doc["diagnostics"]
    assert set(diag) == {"file", "profile", "field", "severity", "message"}
    assert (diag["file"], diag["profile"], diag["field"]) == (b, "p", "id")
    assert diag["severity"] == "error"


def test_missing_file_is_invalid_not_a_crash(tmp_path: Path) -> None:
    code, out = run("--json", str(tmp_path / "nope.yaml"))
    assert code == 1 and "cannot open" in json.loads(out)["diagnostics"][0]["message"]
