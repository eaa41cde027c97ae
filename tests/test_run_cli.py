"""`run`'s own parser (no click on the start-up path) says what click says, or defers to it.

Its option table is checked against click's `run` command option by option, and for
generated command lines either both parsers produce the same parameters, or the fast one
declines (and click, which then runs, gives its usual answer).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor import cli, run_cli
from supervisor.run_cli import RUN_OPTIONS, parse_run


def _click_run() -> click.Command:
    command = cli.main.commands["run"]
    assert isinstance(command, click.Command)
    return command


def test_option_table_is_clicks() -> None:
    options = {p.name: p for p in _click_run().params if isinstance(p, click.Option)}
    code, defaults = _via_click(["run", "--", "x"], {})  # what click passes when not given
    assert code == 0 and defaults is not None
    assert set(options) == {o.dest for o in RUN_OPTIONS}
    for opt in RUN_OPTIONS:
        param = options[opt.dest]
        assert param.opts == [opt.flag], opt
        assert param.multiple == opt.multiple, opt
        assert param.envvar == opt.envvar, opt
        assert defaults[opt.dest] == opt.default, opt
        kind = param.type
        if opt.kind == "choice":
            assert isinstance(kind, click.Choice) and tuple(kind.choices) == opt.choices
        elif opt.kind in ("int", "float"):
            assert isinstance(kind, click.IntRange if opt.kind == "int" else click.FloatRange)
            assert (kind.min, kind.max) == (opt.low, opt.high), opt
        elif opt.kind == "path":
            assert isinstance(kind, click.Path), opt
            assert (kind.exists, kind.file_okay, kind.dir_okay) == (
                opt.exists, opt.file_okay, opt.dir_okay), opt  # fmt: skip
        else:
            assert kind == click.STRING, opt
    (argument,) = [p for p in _click_run().params if isinstance(p, click.Argument)]
    assert argument.name == "command" and argument.nargs == -1 and argument.required


def _via_click(argv: list[str], env: dict[str, str]) -> tuple[int, dict[str, Any] | None]:
    """What click hands to `run` (exit code, parameters), with run_command captured."""
    seen: dict[str, Any] = {}

    def capture(**params: Any) -> None:
        seen.update(params)

    original = cli.run_command
    cli.run_command = capture  # type: ignore[assignment]
    try:
        result = CliRunner().invoke(cli.main, argv, env=env, catch_exceptions=False)
    finally:
        cli.run_command = original  # type: ignore[assignment]
    return result.exit_code, (seen or None)


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cli")
    (root / "file.yaml").write_text("[]\n")
    (root / "dir").mkdir()
    return {"file": str(root / "file.yaml"), "dir": str(root / "dir"),
            "missing": str(root / "missing")}  # fmt: skip


def _values(paths: dict[str, str]) -> st.SearchStrategy[str]:
    return st.sampled_from([
        paths["file"], paths["dir"], paths["missing"], "isolated", "host", "Host", "3128", "0",
        "70000", " 8080", "1_000", "0.5", "0.05", "nan", "abc", "", "-", "--", "65534:65534",
        "unix:///run/spire/agent.sock", "http://proxy:3128", "127.0.0.1:9464",
    ])  # fmt: skip


def _argv(paths: dict[str, str]) -> st.SearchStrategy[list[str]]:
    flags = st.sampled_from([o.flag for o in RUN_OPTIONS] + ["--bogus", "-h", "--log-level"])
    pair = st.tuples(flags, _values(paths), st.booleans()).map(
        lambda t: [f"{t[0]}={t[1]}"] if t[2] else [t[0], t[1]]
    )
    command = st.lists(st.sampled_from(["/bin/true", "echo", "-x", "--", "a b"]), max_size=3)
    return st.tuples(
        st.lists(st.sampled_from([["--log-level", "DEBUG"], ["--log-level=info"], ["--version"]]),
                 max_size=1),
        st.lists(pair, max_size=4), st.booleans(), command,
    ).map(lambda t: [*_flat(t[0]), "run", *_flat(t[1]), *(["--"] if t[2] else []), *t[3]])  # fmt: skip


def _flat(lists: list[list[str]]) -> list[str]:
    return [item for sub in lists for item in sub]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fast_parser_agrees_with_click_or_declines(paths: dict[str, str], data: st.DataObject) -> None:
    argv = data.draw(_argv(paths))
    env = data.draw(st.sampled_from([
        {}, {"OPENSHELL_SUPERVISOR_LOG_LEVEL": "error"}, {"OPENSHELL_SUPERVISOR_LOG_LEVEL": "loud"},
        {"OPENSHELL_SUPERVISOR_UPSTREAM_PROXY": "http://p:1", "OPENSHELL_SUPERVISOR_NO_UPSTREAM_PROXY": ""},
        {"OPENSHELL_SUPERVISOR_METRICS_ADDRESS": "127.0.0.1:1"},
    ]))  # fmt: skip
    fast = parse_run(argv, env)
    if fast is None:
        return  # click answers (help, an error, or a layout only it parses)
    code, clicked = _via_click(argv, env)
    assert code == 0 and clicked is not None, argv
    log_level = fast.pop("log_level")
    assert fast == clicked, argv
    assert log_level in run_cli.LOG_LEVELS


def test_usual_invocations_take_the_fast_path(paths: dict[str, str]) -> None:
    for argv in (
        ["run", "--profile", paths["file"], "--", "/bin/true"],
        ["run", f"--profile={paths['file']}", "--network", "host", "--proxy-port", "3129",
         "--grant-timeout", "2.5", "--", "sh", "-c", "exit 3"],
        ["--log-level", "debug", "run", "--profile", paths["file"], "/bin/echo", "hi"],
        ["run", "--user", "1000:1000", "--workdir", paths["dir"], "--", "env"],
    ):  # fmt: skip
        fast = parse_run(argv, {})
        assert fast is not None, argv
        fast.pop("log_level")
        assert _via_click(argv, {}) == (0, fast)


@pytest.mark.parametrize("argv", [
    ["run", "--help"], ["run", "-h"], ["--version"], ["validate", "x"], ["run"],
    ["run", "--profile"], ["run", "--proxy-port", "0", "--", "x"], ["run", "--bogus", "--", "x"],
    ["run", "echo", "--profile", "p"], ["run", "--network", "HOST", "--", "x"],
    ["run", "--ca-bundle", "/nonexistent", "--", "x"],
])  # fmt: skip
def test_anything_else_is_clicks(argv: list[str]) -> None:
    assert parse_run(argv, {}) is None


def test_a_directory_where_a_file_is_expected_is_clicks(paths: dict[str, str]) -> None:
    assert parse_run(["run", "--profile", paths["dir"], "--", "x"], {}) is None
    assert parse_run(["run", "--workdir", paths["file"], "--", "x"], {}) is None


def test_the_console_script_is_the_fast_entry_and_it_does_not_import_click() -> None:
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="openshell-supervisor")
    assert script.value == "supervisor.run_cli:main"
    probe = "import sys, supervisor.run_cli; print('click' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
