"""Typed reading of raw YAML values with one diagnostic per problem.

Every reader reports what is wrong and returns a default, so the parser keeps going and
``validate`` lists every problem of a file in one pass (an unknown key or one bad value
never hides the others).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from supervisor.profiles.diagnostics import Sink
from supervisor.record import record

T = TypeVar("T")

_TYPE_NAMES: dict[type, str] = {
    dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
    int: "an integer", float: "a number", type(None): "null",
}


def type_name(value: object) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


@record(frozen=False)
class Ctx:
    """Where we are: file, profile id (once known), field-path prefix, error sink."""

    file: str
    profile_id: str | None
    prefix: str
    sink: Sink
    failed: bool = False

    def err(self, path: str, message: str) -> None:
        self.failed = True
        self.sink.error(self.file, self.profile_id, self.prefix + path, message)

    def warn(self, path: str, message: str) -> None:
        self.sink.warning(self.file, self.profile_id, self.prefix + path, message)

    def mapping(
        self, value: object, path: str, allowed: frozenset[str], required: tuple[str, ...] = ()
    ) -> dict[str, Any] | None:
        """The known keys of a mapping; unknown and missing keys are reported, not fatal."""
        if not isinstance(value, dict):
            self.err(path, f"expected a mapping, got {type_name(value)}")
            return None
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str) or key not in allowed:
                names = ", ".join(sorted(allowed))
                self.err(join(path, str(key)), f"unknown key {key!r} (allowed: {names})")
                continue
            out[key] = item
        for key in required:
            if out.get(key) is None:
                self.err(join(path, key), "required field is missing")
        return out

    def get(
        self, m: dict[str, Any], key: str, path: str, typ: type[T], default: T,
        check: Callable[[T], str | None] | None = None,
    ) -> T:
        """``m[key]`` typed and checked; the default when absent/null or invalid."""
        value = m.get(key)
        if value is None:
            return default
        full = join(path, key)
        # bool is an int subclass: a YAML 'true' is never a port or a size.
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            wanted = _TYPE_NAMES.get(typ, typ.__name__)
            self.err(full, f"expected {wanted}, got {type_name(value)}")
            return default
        if check is not None:
            message = check(value)
            if message is not None:
                self.err(full, message)
                return default
        return value

    def opt_str(
        self, m: dict[str, Any], key: str, path: str,
        check: Callable[[str], str | None] | None = None,
    ) -> str | None:
        """A string field where absent (or empty, as OpenShell reads it) means None."""
        value = self.get(m, key, path, str, "", check)
        return value or None

    def raw_list(self, m: dict[str, Any], key: str, path: str) -> list[Any] | None:
        """A list field's items unchecked; None when absent or (reported) not a list."""
        value = m.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            self.err(join(path, key), f"expected a list, got {type_name(value)}")
            return None
        return value

    def str_list(
        self, m: dict[str, Any], key: str, path: str,
        check: Callable[[str], str | None] | None = None,
    ) -> tuple[str, ...] | None:
        value = self.raw_list(m, key, path)
        if value is None:
            return None
        full = join(path, key)
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.err(f"{full}[{i}]", f"expected a string, got {type_name(item)}")
                continue
            message = check(item) if check is not None else None
            if message is not None:
                self.err(f"{full}[{i}]", message)
                continue
            out.append(item)
        return tuple(out)

    def one_of(self, m: dict[str, Any], key: str, path: str, allowed: tuple[str, ...],
               default: str) -> str:
        def check(value: str) -> str | None:
            return None if value in allowed else f"must be one of {', '.join(allowed)}"

        return self.get(m, key, path, str, default, check)

    def items(
        self, m: dict[str, Any], key: str, path: str,
        parse: Callable[[Ctx, object, str], T | None],
    ) -> tuple[T, ...] | None:
        """A list field parsed item by item; None when absent."""
        value = self.raw_list(m, key, path)
        if value is None:
            return None
        full = join(path, key)
        out = [parse(self, item, f"{full}[{i}]") for i, item in enumerate(value)]
        return tuple(x for x in out if x is not None)


def positive(value: int) -> str | None:
    return None if value > 0 else "must be a positive integer"


def non_negative(value: int) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def as_mapping(value: object) -> dict[str, Any]:
    return cast(dict[str, Any], value) if isinstance(value, dict) else {}
