"""PyYAML imported with its patterns compiled on first use (supervisor.profiles.yaml_import).

The deferral must not change what PyYAML accepts or refuses: a lazy pattern answers as the
compiled one, the C and the pure loaders still resolve and refuse as before, and
``re.compile`` is itself again once PyYAML is imported. A fresh interpreter is needed to
see the import happen (this test process may have imported yaml already).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.profiles.yaml_import import LazyPattern

# PyYAML's own patterns (reader, resolver, constructor) and one with flags.
PATTERNS = [
    ("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]", 0),
    (r"^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$", 0),
    (r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$", 0),
    (r"^(?P<year>[0-9][0-9][0-9][0-9])-(?P<month>[0-9][0-9]?)-(?P<day>[0-9][0-9]?)$", 0),
    (r"a.b", re.DOTALL | re.IGNORECASE),
]


@settings(max_examples=300)
@given(st.sampled_from(PATTERNS), st.text(alphabet=st.characters(), max_size=30))
def test_a_lazy_pattern_answers_as_the_compiled_one(spec: tuple[str, int], text: str) -> None:
    source, flags = spec
    lazy, real = LazyPattern(source, flags), re.compile(source, flags)
    for method in ("match", "search", "fullmatch"):
        got, want = getattr(lazy, method)(text), getattr(real, method)(text)
        assert (got and (got.span(), got.groups())) == (want and (want.span(), want.groups()))
    assert lazy.findall(text) == real.findall(text)
    assert lazy.sub("?", text) == real.sub("?", text)
    assert (lazy.pattern, lazy.flags) == (real.pattern, real.flags)


FRESH = textwrap.dedent(r"""
    import re, sys
    real_compile = re.compile
    assert "yaml" not in sys.modules
    from supervisor.profiles.yaml_import import LazyPattern, yaml
    assert re.compile is real_compile, "re.compile left patched"
    assert type(yaml.reader.Reader.NON_PRINTABLE) is LazyPattern, "reader pattern compiled"
    assert type(re.compile("[a-z]")) is re.Pattern  # other callers: compiled at once
    doc = "a: 1\nb: true\nc: 2001-12-14\nd: 0x1f\ne: ~\nf: 1.5\ng: text\n"
    want = {"a": 1, "b": True, "d": 31, "e": None, "f": 1.5, "g": "text"}
    for loader in (yaml.CSafeLoader, yaml.SafeLoader):
        got = yaml.load(doc, Loader=loader)
        assert str(got.pop("c")) == "2001-12-14", got
        assert got == want, (loader, got)
        for bad in ("a: \x07\n", "a: \ufffe\n"):  # non-printable: both readers refuse
            try:
                yaml.load(bad, Loader=loader)
            except yaml.YAMLError:
                pass
            else:
                raise AssertionError((loader, bad))
    print("ok")
""")


def test_yaml_imported_lazily_still_parses_and_refuses_as_before() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", FRESH], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
