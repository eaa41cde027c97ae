"""The atheris targets on their seed corpus (no atheris needed), and one short real run."""

from __future__ import annotations

import importlib.util

import pytest

from fuzz.targets import TARGETS


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seed_corpus_passes_the_target(name: str) -> None:
    target = TARGETS[name]
    seeds = sorted(target.corpus.iterdir())
    assert len(seeds) >= 5 and target.dictionary.is_file()
    for path in seeds:
        target.entry(path.read_bytes())


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris not installed")
def test_short_fuzz_run_executes_and_reports() -> None:
    from fuzz.run import run_target

    result = run_target(TARGETS["token_response"], 2)
    assert result.exit_code == 0 and result.executions > 100 and not result.findings
    assert "executions" in result.line()
