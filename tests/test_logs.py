"""supervisor.logs: logging imported and configured on first use, with `run`'s format.

Each case runs in a fresh interpreter: this test process has imported logging long ago.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def _run(code: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_logging_waits_for_the_first_record_then_has_runs_format() -> None:
    proc = _run("""
        import sys
        from supervisor import logs
        logs.configure("info")
        log = logs.get("supervisor.runner")
        assert "logging" not in sys.modules, "imported before any record"
        log.debug("hidden %s", 1)
        log.info("shown %s", 2)
        log.warning("warned %s", 3)
        import logging
        assert logging.getLogger("supervisor.runner").getEffectiveLevel() == logging.INFO
    """)
    assert proc.stderr.splitlines() == [
        "openshell-supervisor: INFO: shown 2",
        "openshell-supervisor: WARNING: warned 3",
    ]


def test_ready_configures_for_code_that_uses_logging_directly() -> None:
    # The proxy thread calls ready() before importing asyncio and the grant clients.
    proc = _run("""
        import threading
        from supervisor import logs
        logs.configure("debug")
        def proxy_thread():
            logging = logs.ready()
            logging.getLogger("asyncio").debug("from %s", "asyncio")
        t = threading.Thread(target=proxy_thread); t.start(); t.join()
        logs.get("supervisor.services").error("and the main thread")
    """)
    assert proc.stderr.splitlines() == [
        "openshell-supervisor: DEBUG: from asyncio",
        "openshell-supervisor: ERROR: and the main thread",
    ]


@pytest.mark.parametrize("now", [True, False])
def test_configure_applies_at_once_when_asked_or_when_logging_is_loaded(now: bool) -> None:
    proc = _run(f"""
        import sys
        from supervisor import logs
        if not {now}:
            import logging
        logs.configure("warning", now={now})
        import logging
        assert logging.getLogger().handlers, "root logger not configured"
        logging.getLogger("x").warning("direct")
        logging.getLogger("x").info("not shown")
        logs.shutdown()
    """)
    assert proc.stderr.splitlines() == ["openshell-supervisor: WARNING: direct"]


def test_exception_records_carry_the_traceback() -> None:
    proc = _run("""
        from supervisor import logs
        logs.configure("warning")
        try:
            raise ValueError("boom")
        except ValueError:
            logs.get("supervisor.runner").exception("reload failed")
    """)
    lines = proc.stderr.splitlines()
    assert lines[0] == "openshell-supervisor: ERROR: reload failed"
    assert lines[-1] == "ValueError: boom"


def test_shutdown_while_another_thread_is_still_importing_logging() -> None:
    # `run` can exit while the proxy thread is half-way through `import logging`: the
    # module is in sys.modules without its functions yet (a 125 once came from this).
    _run("""
        import sys, types
        from supervisor import logs
        logs.shutdown()  # never imported: nothing to do
        sys.modules["logging"] = types.ModuleType("logging")  # partially initialized
        logs.shutdown()
    """)


def test_shutdown_while_another_thread_is_still_making_a_handler() -> None:
    # The proxy thread's basicConfig can be inside StreamHandler.__init__ when `run` exits:
    # Handler.__init__ has registered the handler, its stream is not set yet, and
    # logging.shutdown's flush raised AttributeError (CI: exit 1 instead of the agent's 255).
    _run("""
        import logging
        from supervisor import logs
        half_made = logging.StreamHandler.__new__(logging.StreamHandler)
        logging.Handler.__init__(half_made)  # registered, no .stream yet
        logs.shutdown()
    """)
