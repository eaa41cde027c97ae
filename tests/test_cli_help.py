"""`run --help` describes the order `run` really follows."""

from __future__ import annotations

import inspect

from click.testing import CliRunner

from supervisor import runner
from supervisor.cli import main


def test_run_help_starts_the_proxy_after_the_agent_is_spawned() -> None:
    result = CliRunner().invoke(main, ["run", "--help"], terminal_width=400)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    spawn, start = text.index("spawn the agent"), text.index("start the proxy")
    assert spawn < start
    # The code agrees: the services' thread begins only after the init got the go.
    source = inspect.getsource(runner._supervise)
    assert source.index("init.start(env)") < source.index("_watch_services(")
